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

# span-pays modes: the fashion bench's cells of that mode with each teacher ('sitting': --sitting, one
# epoch-equivalent; 'full': --ten-epochs, its 10-epoch protocol at lr 0.1), cells that bench already ran reused
SPAN_MODES = ("sitting", "full")

METHOD_ROWS = ("squeeze", "sns")  # rows of the fashion bench that use a teacher
# --sitting only: rho = 0 (real images alone, no teacher), run once, the line the teacher rows are read against
REFERENCE_ROWS = ("vicreg-real",)
LR = 0.1
TRACK = "full"  # all 60k real images (what sns sees; squeeze sees none)
# 30k passes: ~3-4 min of a width-0.5 ResNet-18 at one thread, i.e. the whole figure fits in one sitting.
BUDGET_PASSES = 30_000
# The preset's 100 warmup steps would be 85% of a 117-step squeeze run; cap warmup at a fifth of the run.
WARMUP_SHARE = 0.2


def fashion_mode(quick: bool, span: str | None = None) -> str:
    """The fashion bench mode whose config and evaluation the cells take: quick (smoke), sitting, or the span-pays
    mode ``span`` (sitting | full)."""
    return "quick" if quick else (span or "sitting")


def results_name(span: str | None, quick: bool = False) -> str:
    """The name of this bench's results folder (bench/results/NAME/runs) and of its table (NAME.json, NAME.md)."""
    return {"sitting": "span_pays", "full": "span_pays-full"}.get(span or "", "teacher_quality" + "-quick" * quick)


def span_results(span: str) -> Path:
    """The fashion bench's results folder of a span-pays mode (its cells are reused)."""
    return common.RESULTS / f"fashion{plan.suffix(span)}"


def run_config(
    row_name: str, spec: str | None, seed: int, quick: bool, budget: int, span: str | None = None
) -> dict[str, Any]:
    """The fashion bench's config of ``row_name`` with this teacher and seed, re-budgeted to ``budget`` passes;
    ``span`` (sitting | full): the fashion bench's cell of that mode exactly (its budget and warmup)."""
    cfg = plan.resolve_run_config(plan.ROW_BY_NAME[row_name], TRACK, LR, seed, fashion_mode(quick, span), spec)
    if span:
        return cfg
    per = plan.passes_per_step(cfg["method"], method_settings(cfg)["syn_ratio"], cfg["batch_size"])
    cfg["steps"] = steps = max(1, int(round(budget / per)))
    cfg["warmup_steps"] = min(int(cfg["warmup_steps"]), int(round(WARMUP_SHARE * steps)))
    if cfg["ckpt_every"]:
        cfg["ckpt_every"] = min(int(cfg["ckpt_every"]), max(10, steps // 4))  # a few resume points per run
    return cfg


def cell_fingerprint(
    row_name: str, cfg: dict[str, Any], sha: str | None, quick: bool, budget: int, span: str | None = None
) -> str:
    """A cell's fingerprint; a span-pays cell's is the fashion bench's own, so each bench can reuse the other's."""
    cell = fashion_cells.cell_fingerprint(plan.ROW_BY_NAME[row_name], TRACK, fashion_mode(quick, span), cfg, sha)
    if span:
        return cell
    return fashion_cells.fingerprint({"bench": "teacher_quality", "budget_passes": int(budget), "cell": cell})


def result_path(results_dir: Path, row_name: str, t: TeacherEntry | None, seed: int) -> Path:
    if t is None:  # a reference row: no teacher
        return Path(results_dir) / "runs" / f"{row_name}__s{seed}.json"
    return Path(results_dir) / "runs" / f"{row_name}__kimg{t.kimg:g}__{t.sha}__s{seed}.json"


def run_dir_root(work: Path, t: TeacherEntry | None) -> Path:
    return Path(work) / ("no-teacher" if t is None else f"kimg{t.kimg:g}-{t.sha[:8]}")


class Cell:
    """One (teacher or none, row, seed) cell: its config, fingerprint and where its result is cached."""

    def __init__(self, t, row_name, seed, quick, budget, span, results_dir):
        self.t, self.row_name, self.seed, self.span = t, row_name, seed, span
        self.cfg = run_config(row_name, t.spec if t else None, seed, quick, budget, span)
        self.fp = cell_fingerprint(row_name, self.cfg, t.sha if t else None, quick, budget, span)
        self.path = result_path(results_dir, row_name, t, seed)

    def cached(self, force: bool = False) -> dict[str, Any] | None:
        """Its valid cached result; a span-pays cell that `sns bench fashion --mode sitting|full` already ran counts
        (same config, teacher and fingerprint: the same run), unless ``force``."""
        if force:
            return None
        res = fashion_cells.load_cached(self.path, self.fp)
        if res is None and self.span:
            theirs = fashion_cells.result_path(span_results(self.span), TRACK, self.row_name, LR, self.seed)
            res = fashion_cells.load_cached(theirs, None)
            row = plan.ROW_BY_NAME[self.row_name]
            if res is not None and not fashion_cells.answers(res, row, TRACK, self.span, self.fp):
                res = None
        return res


def select_rows(patterns: str | None, sitting: bool = False) -> list[str]:
    allowed = METHOD_ROWS + (REFERENCE_ROWS if sitting else ())
    names = [p.strip() for p in (patterns or "squeeze").split(",") if p.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        given = ",".join(bad) or repr(patterns)
        more = "" if sitting else f" ({', '.join(REFERENCE_ROWS)} with --sitting)"
        raise SnsError(f"--rows {given}: expected a comma list of {', '.join(allowed)}{more}")
    return [r for r in allowed if r in names]


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
    sitting: bool = False,
    render_only: bool = False,
    log: Callable = print,
    ten_epochs: bool = False,
) -> dict[str, Any]:
    """Run every (teacher, row, seed) cell without a valid cached result; then rewrite table, Markdown and PNG.
    ``sitting``: the fashion bench's sitting cells with each teacher (its budget, warmup and fingerprints; cells
    it already ran are reused), and the rho = 0 reference row vicreg-real allowed in ``rows``; ``ten_epochs``: the
    same with the fashion bench's 10-epoch (--mode full) cells at lr 0.1 (results span_pays-full)."""
    if int(seeds) < 1:
        raise SnsError(f"--seeds {seeds}: expected a number of seeds >= 1")
    if sitting and ten_epochs:
        raise SnsError("--sitting and --ten-epochs are two budgets: give one")
    span = "full" if ten_epochs else ("sitting" if sitting else None)
    flag = {"full": "--ten-epochs", "sitting": "--sitting"}.get(span or "")
    if span and (quick or budget_passes is not None):
        raise SnsError(f"{flag} takes the fashion bench's {span} budget: drop --quick and --budget-passes")
    if budget_passes is None:
        budget_passes = (
            plan.mode_settings(fashion_mode(quick, span))["budget_passes"] if quick or span else BUDGET_PASSES
        )
    budget = int(budget_passes)
    if budget < 1:
        raise SnsError(f"--budget-passes {budget}: expected a positive number of student image passes")
    row_names = select_rows(rows, bool(span))
    name = results_name(span, quick)
    results_dir = Path(results_dir) if results_dir else common.RESULTS / name
    work = Path(work) if work else Path("runs") / f"bench-{name.replace('_', '-')}"
    figure = Path(figure) if figure else common.RESULTS / "figures" / f"{name}.png"
    entries = resolve_teachers(list(teachers or DEFAULT_TEACHERS), work, log)
    cells = plan_cells(entries, row_names, int(seeds), quick, budget, span, results_dir)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # one thread: see bench.fashion.cli.run_bench
    try:
        stopped = True if render_only else run_cells(cells, quick, budget, force, work, progress, log)
    finally:
        torch.set_num_threads(threads_before)
    all_rows = METHOD_ROWS + (REFERENCE_ROWS if span else ())
    table = collect(plan_cells(entries, all_rows, int(seeds), quick, budget, span, results_dir), quick, budget)
    table.update(complete=not stopped, seeds=int(seeds), sitting=bool(span))
    if span == "full":  # the sitting table predates the key: it stays as it was
        table.update(span_mode=span, evaluation="full train/test sets (10-epoch protocol)")
    common.write_json(results_dir.with_suffix(".json"), table)
    results_dir.with_suffix(".md").write_text(render.render_markdown(table))
    render.plot(table, figure, METHOD_ROWS)
    log(f"wrote {results_dir.with_suffix('.json')}, {results_dir.with_suffix('.md')} and {figure}")
    return table


def plan_cells(entries, row_names, seeds, quick, budget, span, results_dir) -> list[Cell]:
    """Every cell, seed by seed (all teachers' first seed before any second one), then teacher, then row; a
    reference row (no teacher) once per seed."""
    cells = []
    for seed in range(seeds):
        for t in entries:
            cells += [Cell(t, r, seed, quick, budget, span, results_dir) for r in row_names if r in METHOD_ROWS]
        cells += [Cell(None, r, seed, quick, budget, span, results_dir) for r in row_names if r in REFERENCE_ROWS]
    return cells


def run_cells(cells: list[Cell], quick, budget, force, work, progress, log) -> bool:
    """Each cell without a valid cached result, in order; True if a run was interrupted."""
    ev = None
    for c in cells:
        label = c.t.label if c.t else "no teacher"
        if c.cached(force) is not None:
            log(f"[{label}] {c.row_name} seed={c.seed}: cached")
            continue
        ev = ev or train.eval_data(fashion_mode(quick, c.span))
        fd = f", FD-ref {render.fmt(c.t.fd_ref)}" if c.t else ""
        log(f"[{label}{fd}] {c.row_name} seed={c.seed} ({c.cfg['steps']} steps)")
        row = plan.ROW_BY_NAME[c.row_name]
        res = train.run_one(row, TRACK, LR, c.seed, c.cfg, ev, run_dir_root(work, c.t), force, progress, log)
        if res is None:
            log("interrupted: the run kept its checkpoint; re-run the same command to resume")
            return True
        common.write_json(
            c.path,
            {
                "row": c.row_name,
                "seed": c.seed,
                "lr": LR,
                "kimg": c.t.kimg if c.t else None,
                "fd_ref": c.t.fd_ref if c.t else None,
                "teacher": c.t.identity if c.t else None,
                "fingerprint": c.fp,
                "budget_passes": budget,
                "smoke": bool(quick),
                "config": c.cfg,
                "eval": ev.settings,
                "machine": common.machine(),
                "commit": common.git_commit(),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                **res,
            },
        )
        log(f"  kNN {res['knn_top1']:.2f}  linear {res['linear_top1']:.2f}  ({res['wall_s']:.0f} s)")
    return False


def row_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: common.stats([float(r[k]) for r in runs]) for k in ("linear_top1", "knn_top1", "wall_s")}
    out["seeds"] = [r["seed"] for r in runs]
    out["steps"] = runs[0].get("steps")
    out["cpus"] = sorted({fashion_cells.cell_cpu(r) for r in runs})
    return out


def collect(cells: list[Cell], quick: bool, budget: int) -> dict[str, Any]:
    """Per teacher (in the given order), per method row, and per reference row: the valid cached cells of the
    current config, mean/std."""
    by_teacher: dict[Any, dict[str, list]] = {}
    refs: dict[str, list] = {}
    entries = []
    for c in cells:  # rows run by an earlier invocation stay in the table while valid
        if c.t is not None and c.t not in entries:
            entries.append(c.t)
        res = c.cached()
        if res is None:
            continue
        if c.t is None:
            refs.setdefault(c.row_name, []).append(res)
        else:
            by_teacher.setdefault(c.t.sha, {}).setdefault(c.row_name, []).append(res)
    teachers = [
        {
            "label": t.label,
            "kimg": t.kimg,
            "fd_ref": t.fd_ref,
            "spec": t.spec,
            "G_ema_sha256": t.sha,
            "rows": {name: row_stats(runs) for name, runs in by_teacher.get(t.sha, {}).items()},
        }
        for t in entries
    ]
    return {
        "benchmark": "teacher-quality (fashion-mnist)",
        "smoke": bool(quick),
        "budget_passes": budget,
        "lr": LR,
        "track": TRACK,
        "warmup_share": WARMUP_SHARE,
        "evaluation": "quick subsets" if quick else "sitting (full train/test sets)",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine(),
        "commit": common.git_commit(),
        "teachers": teachers,
        "references": {name: row_stats(runs) for name, runs in refs.items()},
    }
