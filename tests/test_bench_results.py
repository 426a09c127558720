"""The committed bench results stay reproducible: every Markdown table in bench/results is what its bench's
renderer makes of the JSON beside it, byte for byte (a refactor of a bench must not change a committed table)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from squeezespan import bench as sns_bench

sns_bench.load("fashion")  # puts the source checkout on sys.path: bench imports as a package
from bench import bank_accuracy, common, teacher_precision  # noqa: E402
from bench.fashion import plan as fashion_plan  # noqa: E402
from bench.fashion import render as fashion_render  # noqa: E402
from bench.teacher_quality import cells as teacher_quality_cells  # noqa: E402
from bench.teacher_quality import render as teacher_quality_render  # noqa: E402
from bench.throughput import cli as throughput_cli  # noqa: E402

RENDERERS = {  # a table's name up to its first '-' -> the function that wrote it
    "fashion": fashion_render.render_markdown,
    "teacher_quality": teacher_quality_render.render_markdown,
    "span_pays": teacher_quality_render.render_markdown,
    "throughput": throughput_cli.render_markdown,
    "bank": bank_accuracy.render,
    "teacher_precision": teacher_precision.render,
}
TABLES = sorted(common.RESULTS.glob("*.md"))


def test_every_committed_table_has_a_renderer():
    assert TABLES, f"no tables in {common.RESULTS}"
    assert {t.stem.split("-")[0] for t in TABLES} <= set(RENDERERS)


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_a_committed_table_re_renders_byte_identical_from_its_json(table: Path):
    data = json.loads(table.with_suffix(".json").read_text())
    rendered = RENDERERS[table.stem.split("-")[0]](data)
    assert rendered == table.read_text(), f"{table} is not what its renderer makes of {table.with_suffix('.json')}"


def test_git_keeps_the_cell_files_of_every_results_folder_a_bench_writes():
    # a cell's result file is what a later sitting, on another machine, resumes and re-renders from: an ignored
    # folder (span_pays-full/runs once was) loses its cells with the machine that ran them
    root = common.RESULTS.parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = {f"fashion{fashion_plan.suffix(mode)}" for mode in fashion_plan.MODES}
    names |= {teacher_quality_cells.results_name(span, quick) for span in (None, "sitting", "full") for quick in (0, 1)}
    assert {"fashion", "fashion-sitting-fp32", "span_pays", "span_pays-full", "teacher_quality-quick"} <= names
    cells = [f"bench/results/{name}/runs/x__s0.json" for name in sorted(names)]
    check = subprocess.run(["git", "check-ignore", "--no-index", *cells], cwd=root, capture_output=True, text=True)
    assert check.returncode in (0, 1), check.stderr  # 0: some path is ignored, 1: none is
    assert check.stdout.split() == [], f"git ignores these bench cell files: {check.stdout.split()}"
