"""Fashion-MNIST benchmark: every method, same student and budget, one cached resumable run per table cell.

Usage: python -m bench.fashion [--quick | --mode quick|sitting|long|full] [--precision bf16|fp32|auto]
                               [--teacher-precision fp32|bf16]
                               [--rows PATTERNS] [--tracks full,scarce] [--force] [--work DIR]
                               [--teacher TRACK=SPEC] [--budget-minutes M] [--render-only] [--list] [--todo]
(= `sns bench fashion ...`)

A row is a set of config overrides of the `fashion-cpu` preset. Each (track, row, lr, seed) is one run in
<work>/<track>/<row>/lr<lr>-s<seed> (resumable) whose result is cached as a JSON file in
bench/results/fashion[-quick|-sitting|-long][-fp32]/runs/; a cached result is reused unless --force or its config
changed. --precision fp32 (or auto on a CPU without bf16 hardware) keeps fp32 cells apart in the -fp32 folders.
Learning rate: seed 0 at every lr of the sweep, the best by kNN on a held-out part of the train set
(never the test set), then the remaining seeds at that lr. Tables:
bench/results/fashion[-quick|-sitting|-long][-fp32].{json,md}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import common
from squeezespan import SnsError, checkpointed_step
from squeezespan.cliutil import ArgumentParser

from . import cells, plan, render, train


def run_bench(
    mode: str = "full",
    rows: str | None = None,
    tracks: tuple[str, ...] = plan.TRACKS,
    force: bool = False,
    work: str | Path | None = None,
    teachers: dict[str, str] | None = None,
    budget_minutes: float | None = None,
    results_dir: str | Path | None = None,
    progress: bool = False,
    threads: int | None = 1,
    log: Callable = print,
    lrs: tuple[float, ...] | None = None,
    precision: str | None = None,
    teacher_precision: str | None = None,
    render_only: bool = False,
    todo: bool = False,
) -> dict[str, Any]:
    """Run every selected cell that has no valid cached result; then rewrite the JSON + Markdown tables.

    ``threads=1`` by default: on a CPU shared with other jobs, two OpenMP threads spin-waiting on each other
    measured 8-12x slower per step than one (bench/results/throughput.md). ``render_only``: run nothing, rewrite the
    tables from the cells cached so far (the previous table's completeness kept). ``todo``: run nothing, log the
    cells still to run (``remaining``) and return them as ``{"todo": lines}``.
    """
    mode = plan.with_teacher_precision(plan.with_precision(mode, precision), teacher_precision)
    selected = plan.select_rows(rows)
    for t in tracks:
        if t not in plan.TRACKS:
            raise SnsError(f"--tracks {t!r}: expected a comma list of {', '.join(plan.TRACKS)}")
    results_dir = Path(results_dir) if results_dir else common.RESULTS / f"fashion{plan.suffix(mode)}"
    work = Path(work) if work else Path("runs") / f"bench-fashion{plan.suffix(mode)}"
    if todo:
        lines = remaining(mode, selected, tracks, work, dict(teachers or {}), results_dir, lrs)
        for line in lines:
            log(line)
        return {"todo": lines}
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        if render_only:
            previous = results_dir.with_suffix(".json")
            stopped = not (json.loads(previous.read_text()).get("complete") if previous.is_file() else False)
            teachers = {}
        else:
            warning = plan.emulated_bf16_warning(mode)
            if warning:
                log(warning)
            teachers, stopped = run_cells(
                mode,
                selected,
                tracks,
                force,
                work,
                dict(teachers or {}),
                budget_minutes,
                results_dir,
                progress,
                log,
                lrs,
            )
    finally:
        torch.set_num_threads(threads_before)
    table = cells.collect(results_dir, mode, tracks=plan.TRACKS)
    table["settings"] = plan.mode_settings(mode)
    table["teachers"], table["teacher_rows"] = cells.teachers_of(
        table["runs"], {t: cells.teacher_identity(s) for t, s in teachers.items()}
    )
    table["complete"] = not stopped
    common.write_json(results_dir.with_suffix(".json"), table)
    results_dir.with_suffix(".md").write_text(render.render_markdown(table))
    log(f"wrote {results_dir.with_suffix('.json')} and {results_dir.with_suffix('.md')}")
    return table


def remaining(mode, selected, tracks, work, teachers, results_dir, lrs) -> list[str]:
    """The cells a run of this command would still train, row by row in its order (a dry run of ``run_cells``):
    those due now, and the seeds that wait for a row's lr sweep; hours estimated from the walls of the cells cached
    in this table (training + evaluation at the threads they ran with), and a last line warning where this CPU only
    emulates the mode's bf16, so those hours do not hold."""
    lines, due_total, wall_total, unknown, waiting, untrained_teachers = [], 0, 0.0, 0, False, set()
    resuming = False
    settings = plan.mode_settings(mode)
    n_lrs = len(lrs or settings["lrs"])
    for track in tracks:
        for row in selected:
            teacher = None
            if plan.uses_teacher(row, track, mode):
                teacher = train.find_teacher(track, mode, work, teachers.get(track))
                if teacher is None:
                    lines.append(f"[{track}] {row.name}: every cell, once the {track} track's teacher is trained")
                    untrained_teachers.add(track)
                    continue
            cached, _ = cells.cached_cells(row, track, mode, teacher, results_dir, lrs)
            due = plan.plan_runs(row, mode, cached, lrs)
            if not due:
                continue
            # a cell checkpointed part-way (an earlier sitting stopped it) resumes there: it owes only what is left
            named, trained_share = [], 0.0
            for lr, seed in due:
                named.append(f"lr {lr:g} seed {seed}")
                step = checkpointed_step(train.cell_dir(work, track, row, lr, seed))  # untrained rows: no run dir
                if step:
                    total = plan.resolve_run_config(row, track, lr, seed, mode, teacher)["steps"]
                    named[-1] += f" (resumes at step {step} of {total})"
                    trained_share += min(step / total, 1.0)
            line = f"[{track}] {row.name}: {', '.join(named)}"
            n_seeds = min(row.seeds, settings["seeds"])
            if row.kind not in plan.UNTRAINED and all(seed == 0 for _, seed in due) and n_seeds > 1:
                seeds = "seed 1" if n_seeds == 2 else f"seeds 1-{n_seeds - 1}"
                if n_lrs == 1:
                    line += f"; then {seeds} at that lr"
                else:
                    waiting = True
                    done = sorted((lr, s) for (lr, s), r in cached.items() if r)
                    have = "; ".join(
                        f"lr {lr:g}: seeds {', '.join(str(s) for l2, s in done if l2 == lr)}"
                        for lr in sorted({lr for lr, _ in done})
                    )
                    line += f" (the lr sweep); then {seeds} at the lr it picks, where not cached"
                    line += f" (cached: {have})" if have else ""
            mine = [r["wall_s"] for r in cached.values() if r and r.get("wall_s")]
            if mine:
                est = sum(mine) / len(mine)
                line += (
                    f"; ~{est / 3600:.1f} h per cell (mean wall of its {len(mine)} cached cell{'s' * (len(mine) > 1)})"
                )
                wall_total += est * (len(due) - trained_share)
            else:
                line += "; no cached cell of this row to estimate its time"
                unknown += len(due)
            due_total += len(due)
            resuming = resuming or trained_share > 0
            lines.append(line)
    if not lines:
        return [f"nothing to run: every selected cell of {results_dir.name} is cached"]
    head = f"Cells still to run for {results_dir.name} (--mode {mode}), in the order this command runs them:"
    tail = f"Due now: {due_total} cell{'s' * (due_total != 1)}"
    if wall_total:
        tail += f", about {wall_total / 3600:.1f} h at the cached cells' pace"
        tail += " (part-way cells: the steps they have left)" if resuming else ""
    if unknown:
        tail += f" ({unknown} without an estimate)" if wall_total else " (no estimate)"
    if untrained_teachers:
        tail += f"; first the teacher of the {' and '.join(sorted(untrained_teachers))} track"
    tail += "; seeds that wait for a sweep are not counted." if waiting else "."
    warning = plan.emulated_bf16_warning(mode)  # the hours above do not hold where bf16 is emulated
    return [head, *lines, tail, *([warning] if warning else [])]


def run_cells(mode, selected, tracks, force, work, teachers, budget_minutes, results_dir, progress, log, lrs):
    """Each selected row of each track: its planned cells one at a time (the sweep first, then the seeds at the
    chosen lr), each result written as soon as it is measured. Returns the teachers used and whether it stopped
    early (budget used up, or a run interrupted)."""
    started = time.time()
    ev = None
    redone: set[Path] = set()  # --force redoes each cell once per invocation, not again after the sweep
    for track in tracks:
        for row in selected:
            while True:
                teacher = None
                if plan.uses_teacher(row, track, mode):
                    teachers[track] = teacher = train.ensure_teacher(track, mode, work, teachers.get(track), log)
                cached, fps = cells.cached_cells(row, track, mode, teacher, results_dir, lrs, force, redone)
                todo = plan.plan_runs(row, mode, cached, lrs)
                if not todo:
                    break
                lr, seed = todo[0]
                if budget_minutes is not None and time.time() - started > budget_minutes * 60:
                    log(f"--budget-minutes {budget_minutes:g} used up; re-run to continue from {track}/{row.name}")
                    return teachers, True
                ev = ev or train.eval_data(mode)
                trained = row.kind not in plan.UNTRAINED
                cfg = plan.resolve_run_config(row, track, lr, seed, mode, teacher) if trained else None
                log(f"[{track}] {row.name} lr={lr:g} seed={seed}" + (f" ({cfg['steps']} steps)" if cfg else ""))
                path = cells.result_path(results_dir, track, row.name, lr, seed)
                res = train.run_one(row, track, lr, seed, cfg, ev, work, force and path not in redone, progress, log)
                if res is None:
                    log("interrupted: the run kept its checkpoint; re-run the same command to resume")
                    return teachers, True
                redone.add(path)
                common.write_json(
                    path,
                    {
                        "row": row.name,
                        "track": track,
                        "lr": lr,
                        "seed": seed,
                        "smoke": mode == "quick",
                        "mode": mode,
                        "fingerprint": fps[(lr, seed)],
                        "teacher": cells.teacher_identity(teacher) if teacher else None,
                        "config": cfg,
                        "eval": ev.settings,
                        "machine": common.machine(),
                        "commit": common.git_commit(),
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        **res,
                    },
                )
                log(
                    f"  kNN {res['knn_top1']:.2f}  linear {res['linear_top1']:.2f}  val-kNN {res['val_knn_top1']:.2f}"
                    f"  ({res['wall_s']:.0f} s)"
                )
    return teachers, False


def build_parser(prog: str = "python -m bench.fashion") -> ArgumentParser:
    ap = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke version: tiny budgets, eval subsets (~10 min with "
        "bf16 hardware, ~1 h on an AVX2-only CPU); = --mode quick",
    )
    ap.add_argument(
        "--mode",
        choices=plan.BASE_MODES,
        help="quick (smoke), sitting (1 epoch-equivalent per run, one "
        "lr, 2 seeds: ~2 h on 2 cores for the core rows), long (3 epoch-equivalents, one lr, one seed, kNN "
        "curves) or full (the default: 10 epochs, lr sweep, 3 seeds)",
    )
    ap.add_argument(
        "--precision",
        choices=plan.PRECISIONS,
        help="bf16 (the tables' definition, the default), fp32 "
        "(a separate table, results and work folders *-fp32: for CPUs without bf16 hardware, where bf16 is "
        "emulated ~20x slower) or auto (bf16 where the CPU has it, else fp32); --mode quick is always auto",
    )
    ap.add_argument(
        "--teacher-precision",
        choices=plan.TEACHER_PRECISIONS,
        help="fp32 (the tables' definition, the default) or bf16: the teacher's forward under bf16 autocast, "
        "only with --mode sitting; its own table and folders (*-sitting-teacher-bf16)",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite the JSON and Markdown tables from the cells cached so far",
    )
    ap.add_argument("--rows", help="comma list of row names or globs (default: all), e.g. sns,vicreg-*")
    ap.add_argument("--tracks", default="full,scarce", help="comma list of tracks: full, scarce")
    ap.add_argument("--force", action="store_true", help="redo the selected cells even if cached")
    ap.add_argument(
        "--work", help="where run directories go (default runs/bench-fashion[-quick|-sitting|-long][-fp32])"
    )
    ap.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="TRACK=SPEC",
        help="use this teacher for a track instead of the committed/trained one",
    )
    ap.add_argument("--budget-minutes", type=float, help="start no new run after this many minutes")
    ap.add_argument("--results", help="results folder (default bench/results/fashion[-quick|-sitting|-long][-fp32])")
    ap.add_argument(
        "--lrs",
        help="comma list of learning rates replacing the mode's sweep for the selected rows "
        "(e.g. --mode sitting --rows simsiam-real --lrs 0.1,0.3 adds lr 0.3; the table then picks each "
        "row's lr by held-out kNN among all it has)",
    )
    ap.add_argument("--list", action="store_true", help="list the rows and their overrides, run nothing")
    ap.add_argument(
        "--todo",
        action="store_true",
        help="list the cells still to run for the selected rows and tracks (in run order, with hours estimated "
        "from the cached cells' walls), run nothing",
    )
    ap.add_argument("--progress", action="store_true", help="progress bars during training")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest on a shared CPU; 0 keeps torch's default)",
    )
    return ap


def parse_lrs(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        lrs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SnsError(f"--lrs {text!r}: expected a comma list of numbers, e.g. 0.1,0.3") from None
    if not lrs or any(not (0 < lr < 10) for lr in lrs):
        raise SnsError(f"--lrs {text!r}: expected learning rates in (0, 10)")
    return lrs


def main(argv: list[str] | None = None, prog: str = "python -m bench.fashion") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.list:
        for r in plan.ROWS:
            print(f"{r.name:<18} {r.group:<10} {r.kind:<12} {' '.join(r.overrides):<40} {r.note}")
        return 0
    teachers = {}
    for item in args.teacher:
        track, sep, spec = item.partition("=")
        if not sep or track not in plan.TRACKS or not spec:
            raise SnsError(f"--teacher {item!r}: expected TRACK=SPEC with TRACK one of {', '.join(plan.TRACKS)}")
        teachers[track] = spec
    if args.quick and args.mode not in (None, "quick"):
        raise SnsError(f"--quick and --mode {args.mode} contradict each other; give one")
    run_bench(
        mode="quick" if args.quick else (args.mode or "full"),
        precision=args.precision,
        teacher_precision=args.teacher_precision,
        render_only=args.render_only,
        todo=args.todo,
        lrs=parse_lrs(args.lrs),
        rows=args.rows,
        tracks=tuple(t.strip() for t in args.tracks.split(",") if t.strip()),
        force=args.force,
        work=args.work,
        teachers=teachers,
        budget_minutes=args.budget_minutes,
        results_dir=args.results,
        progress=args.progress,
        threads=args.threads or None,
    )
    return 0
