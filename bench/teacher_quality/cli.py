"""Teacher quality against student quality (the paper's Figure 4 at CPU scale): one student per GAN snapshot.

Usage: python -m bench.teacher_quality [--quick] [--teachers LIST] [--rows squeeze,sns] [--seeds N]
                                       [--budget-passes P] [--force] [--work DIR] [--sitting | --ten-epochs]
                                       [--render-only]   (= `sns bench teachers ...`)

Each teacher of the list (default: an untrained generator, 'random' = kimg 0, then the 20/40/60/80 kimg snapshots
of the committed Fashion-MNIST GAN run) distills one student per method row (default `squeeze`: syn_ratio 1,
no real image, so the student learns only what the teacher shows) with the Fashion-MNIST bench's run config
(`fashion-cpu` preset, lr 0.1) and a small budget of student image passes, evaluated like `sns bench fashion
--mode sitting` (kNN and linear probe on the full train/test sets). Each (teacher, row, seed) is one cached
resumable cell: bench/results/teacher_quality/runs/*.json, keyed by the teacher's G_ema checksum and the config
fingerprint. Writes bench/results/teacher_quality.{json,md} and bench/results/figures/teacher_quality.png
(accuracy against the teacher's FD-ref, log x axis). --quick: tiny budget, narrow student, evaluation subsets.
"""

from __future__ import annotations

from squeezespan import SnsError
from squeezespan.cliutil import ArgumentParser

from .cells import BUDGET_PASSES, METHOD_ROWS, REFERENCE_ROWS, run_teacher_quality
from .teachers import DEFAULT_TEACHERS, RANDOM


def build_parser(prog: str = "python -m bench.teacher_quality") -> ArgumentParser:
    ap = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke version: tiny budget, width 0.25, eval subsets")
    ap.add_argument(
        "--teachers",
        help=f"comma list of teacher directories (or folder names under "
        f"bench/results/teachers/) and '{RANDOM}' (untrained generator, kimg 0); default: "
        f"{','.join(DEFAULT_TEACHERS)}",
    )
    ap.add_argument(
        "--rows",
        default="squeeze",
        help=f"comma list of {', '.join(METHOD_ROWS)}; with --sitting also "
        f"{', '.join(REFERENCE_ROWS)} (default squeeze)",
    )
    ap.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    ap.add_argument(
        "--budget-passes",
        type=int,
        help=f"student image passes per run (default {BUDGET_PASSES}; --quick: the fashion bench's quick budget)",
    )
    ap.add_argument("--force", action="store_true", help="redo the selected cells even if cached")
    ap.add_argument("--work", help="where run directories go (default runs/bench-teacher-quality[-quick])")
    ap.add_argument("--results", help="results folder (default bench/results/teacher_quality[-quick])")
    ap.add_argument("--figure", help="PNG path (default bench/results/figures/teacher_quality[-quick].png)")
    ap.add_argument(
        "--sitting",
        action="store_true",
        help="the fashion bench's sitting cells (1 epoch-equivalent, its warmup) with each teacher, cells that "
        "bench already ran reused, and the rho=0 row vicreg-real allowed in --rows: 'when does span pay?'; "
        "results bench/results/span_pays.{json,md}",
    )
    ap.add_argument(
        "--ten-epochs",
        action="store_true",
        help="as --sitting with the fashion bench's 10-epoch cells (--mode full, lr 0.1; its cells reused): the "
        "check of a crossover the sitting shows; results bench/results/span_pays-full.{json,md}",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite the table, Markdown and figure from the cells cached so far (marked incomplete)",
    )
    ap.add_argument("--progress", action="store_true", help="progress bars during training")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's default)")
    return ap


def main(argv: list[str] | None = None, prog: str = "python -m bench.teacher_quality") -> int:
    args = build_parser(prog).parse_args(argv)
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()] if args.teachers else None
    if args.teachers is not None and not teachers:
        raise SnsError("--teachers is empty; give a comma list of teacher directories or 'random'")
    run_teacher_quality(
        quick=args.quick,
        teachers=teachers,
        rows=args.rows,
        seeds=args.seeds,
        budget_passes=args.budget_passes,
        force=args.force,
        work=args.work,
        results_dir=args.results,
        figure=args.figure,
        progress=args.progress,
        threads=args.threads or None,
        sitting=args.sitting,
        render_only=args.render_only,
        ten_epochs=args.ten_epochs,
    )
    return 0
