"""The committed bench results stay reproducible: every Markdown table in bench/results is what its bench's
renderer makes of the JSON beside it, byte for byte (a refactor of a bench must not change a committed table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezespan import bench as sns_bench

sns_bench.load("fashion")  # puts the source checkout on sys.path: bench imports as a package
from bench import bank_accuracy, common, teacher_precision  # noqa: E402
from bench.fashion import render as fashion_render  # noqa: E402
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
