"""The teacher-quality bench's cells: each (teacher, method row, seed) is the fashion bench's run config of that row
with this teacher, re-budgeted; run and evaluated by the fashion bench's code, cached as one JSON result, and
collected per teacher into the table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import common
from bench.fashion import cells as fashion_cells
from bench.fashion import plan, train
from squeezespan import SnsError
from squeezespan.methods import method_settings

from . import render
from .teachers import DEFAULT_TEACHERS, TeacherEntry, resolve_teachers

METHOD_ROWS = ("squeeze", "sns")  # rows of the fashion bench that use a teacher
LR = 0.1
TRACK = "full"  # all 60k real images (what sns sees; squeeze sees none)
# 30k passes: ~3-4 min of a width-0.5 ResNet-18 at one thread, i.e. the whole figure fits in one sitting.
BUDGET_PASSES = 30_000
# The preset's 100 warmup steps would be 85% of a 117-step squeeze run; cap warmup at a fifth of the run.
WARMUP_SHARE = 0.2


def fashion_mode(quick: bool) -> str:
    """The fashion bench mode whose config and evaluation the cells take: quick (smoke) or sitting."""
    return "quick" if quick else "sitting"


def run_config(row_name: str, spec: str, seed: int, quick: bool, budget: int) -> dict[str, Any]:
    """The fashion bench's config of ``row_name`` with this teacher and seed, re-budgeted to ``budget`` passes."""
    cfg = plan.resolve_run_config(plan.ROW_BY_NAME[row_name], TRACK, LR, seed, fashion_mode(quick), spec)
    per = plan.passes_per_step(cfg["method"], method_settings(cfg)["syn_ratio"], cfg["batch_size"])
    cfg["steps"] = steps = max(1, int(round(budget / per)))
    cfg["warmup_steps"] = min(int(cfg["warmup_steps"]), int(round(WARMUP_SHARE * steps)))
    if cfg["ckpt_every"]:
        cfg["ckpt_every"] = min(int(cfg["ckpt_every"]), max(10, steps // 4))  # a few resume points per run
    return cfg


def cell_fingerprint(row_name: str, cfg: dict[str, Any], sha: str, quick: bool, budget: int) -> str:
    cell = fashion_cells.cell_fingerprint(plan.ROW_BY_NAME[row_name], TRACK, fashion_mode(quick), cfg, sha)
    return fashion_cells.fingerprint({"bench": "teacher_quality", "budget_passes": int(budget), "cell": cell})


def result_path(results_dir: Path, row_name: str, t: TeacherEntry, seed: int) -> Path:
    return Path(results_dir) / "runs" / f"{row_name}__kimg{t.kimg:g}__{t.sha}__s{seed}.json"


def run_dir_root(work: Path, t: TeacherEntry) -> Path:
    return Path(work) / f"kimg{t.kimg:g}-{t.sha[:8]}"


def select_rows(patterns: str | None) -> list[str]:
    names = [p.strip() for p in (patterns or "squeeze").split(",") if p.strip()]
    bad = [n for n in names if n not in METHOD_ROWS]
    if bad or not names:
        given = ",".join(bad) or repr(patterns)
        raise SnsError(f"--rows {given}: expected a comma list of {', '.join(METHOD_ROWS)}")
    return [r for r in METHOD_ROWS if r in names]


def run_teacher_quality(
    quick: bool = False,
    teachers: list[str] | None = None,
    rows: str | None = None,
    seeds: int = 1,
    budget_passes: int | None = None,
    force: bool = False,
    work: str | Path | None = None,
    results_dir: str | Path | None = None,
    figure: str | Path | None = None,
    progress: bool = False,
    threads: int | None = 1,
    log: Callable = print,
) -> dict[str, Any]:
    """Run every (teacher, row, seed) cell without a valid cached result; then rewrite table, Markdown and PNG."""
    if int(seeds) < 1:
        raise SnsError(f"--seeds {seeds}: expected a number of seeds >= 1")
    if budget_passes is None:
        budget_passes = plan.mode_settings("quick")["budget_passes"] if quick else BUDGET_PASSES
    budget = int(budget_passes)
    if budget < 1:
        raise SnsError(f"--budget-passes {budget}: expected a positive number of student image passes")
    row_names = select_rows(rows)
    suffix = "-quick" if quick else ""
    results_dir = Path(results_dir) if results_dir else common.RESULTS / f"teacher_quality{suffix}"
    work = Path(work) if work else Path("runs") / f"bench-teacher-quality{suffix}"
    figure = Path(figure) if figure else common.RESULTS / "figures" / f"teacher_quality{suffix}.png"
    entries = resolve_teachers(list(teachers or DEFAULT_TEACHERS), work, log)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # one thread: see bench.fashion.cli.run_bench
    try:
        stopped = run_cells(entries, row_names, int(seeds), quick, budget, force, work, results_dir, progress, log)
    finally:
        torch.set_num_threads(threads_before)
    table = collect(entries, results_dir, quick, int(seeds), budget)
    table["complete"] = not stopped
    common.write_json(results_dir.with_suffix(".json"), table)
    results_dir.with_suffix(".md").write_text(render.render_markdown(table))
    render.plot(table, figure, METHOD_ROWS)
    log(f"wrote {results_dir.with_suffix('.json')}, {results_dir.with_suffix('.md')} and {figure}")
    return table


def run_cells(entries, row_names, seeds, quick, budget, force, work, results_dir, progress, log) -> bool:
    """Each cell without a valid cached result, in teacher order; True if a run was interrupted."""
    ev = None
    for t in entries:
        for row_name in row_names:
            for seed in range(seeds):
                cfg = run_config(row_name, t.spec, seed, quick, budget)
                fp = cell_fingerprint(row_name, cfg, t.sha, quick, budget)
                path = result_path(results_dir, row_name, t, seed)
                if not force and fashion_cells.load_cached(path, fp) is not None:
                    log(f"[{t.label}] {row_name} seed={seed}: cached")
                    continue
                ev = ev or train.eval_data(fashion_mode(quick))
                log(f"[{t.label}, FD-ref {render.fmt(t.fd_ref)}] {row_name} seed={seed} ({cfg['steps']} steps)")
                row = plan.ROW_BY_NAME[row_name]
                res = train.run_one(row, TRACK, LR, seed, cfg, ev, run_dir_root(work, t), force, progress, log)
                if res is None:
                    log("interrupted: the run kept its checkpoint; re-run the same command to resume")
                    return True
                common.write_json(
                    path,
                    {
                        "row": row_name,
                        "seed": seed,
                        "lr": LR,
                        "kimg": t.kimg,
                        "fd_ref": t.fd_ref,
                        "teacher": t.identity,
                        "fingerprint": fp,
                        "budget_passes": budget,
                        "smoke": bool(quick),
                        "config": cfg,
                        "eval": ev.settings,
                        "machine": common.machine(),
                        "commit": common.git_commit(),
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        **res,
                    },
                )
                log(f"  kNN {res['knn_top1']:.2f}  linear {res['linear_top1']:.2f}  ({res['wall_s']:.0f} s)")
    return False


def collect(entries: list[TeacherEntry], results_dir: Path, quick: bool, seeds: int, budget: int) -> dict[str, Any]:
    """Per teacher (in the given order), per method row: valid cached cells of the current config, mean/std."""
    teachers = []
    for t in entries:
        rows = {}
        for row_name in METHOD_ROWS:  # rows run by an earlier invocation stay in the table while valid
            runs = []
            for seed in range(seeds):
                cfg = run_config(row_name, t.spec, seed, quick, budget)
                fp = cell_fingerprint(row_name, cfg, t.sha, quick, budget)
                res = fashion_cells.load_cached(result_path(results_dir, row_name, t, seed), fp)
                if res is not None:
                    runs.append(res)
            if runs:
                rows[row_name] = {
                    k: common.stats([float(r[k]) for r in runs]) for k in ("linear_top1", "knn_top1", "wall_s")
                }
                rows[row_name]["seeds"] = [r["seed"] for r in runs]
                rows[row_name]["steps"] = runs[0].get("steps")
        teachers.append(
            {"label": t.label, "kimg": t.kimg, "fd_ref": t.fd_ref, "spec": t.spec, "G_ema_sha256": t.sha, "rows": rows}
        )
    return {
        "benchmark": "teacher-quality (fashion-mnist)",
        "smoke": bool(quick),
        "budget_passes": budget,
        "lr": LR,
        "seeds": seeds,
        "track": TRACK,
        "warmup_share": WARMUP_SHARE,
        "evaluation": "quick subsets" if quick else "sitting (full train/test sets)",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine(),
        "commit": common.git_commit(),
        "teachers": teachers,
    }
