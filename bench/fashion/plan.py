"""What the Fashion-MNIST bench measures: its modes (budgets, sweeps, evaluation sizes), its rows (config overrides
of the `fashion-cpu` preset), each cell's full run config, and which (lr, seed) cells of a row are still to run."""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any

from squeezespan import PRETRAIN_DEFAULTS, SnsError, resolve_config
from squeezespan.engine import bf16_native
from squeezespan.methods import method_settings

PRESET = "fashion-cpu"
DATA = "fashion-mnist"
TRACKS = ("full", "scarce")
SCARCE_IMAGES = 2000

# The budget, in student image passes (one image through the student, forward + backward): 10 epochs of the
# 60k real images in two views, i.e. exactly 10 epochs for VICReg/SimSiam on real data at any batch size.
# Methods whose steps pass fewer images get proportionally more steps (sns: 384 passes per step of 256).
# Features for evaluation in bf16 (as the preset trains): fp32 extraction of 70k images is ~4x slower on a CPU.
FULL = dict(
    budget_passes=10 * 60000 * 2,
    lrs=(0.03, 0.1, 0.3),
    seeds=3,
    eval_train=None,
    eval_test=None,
    val_images=10000,
    eval_bf16=True,
    overrides=(),
)
# --quick: the same rows and code paths with tiny budgets and evaluation subsets; a smoke test, not a result.
# Its student is narrower (width 0.25) so that its cells fit in about ten minutes of one free core with bf16
# hardware; in fp32 on an AVX2-only CPU its 58 cells took 57 min of cell walls plus two 4-min teachers (2026-12-04).
QUICK = dict(
    budget_passes=64 * 2 * 16,
    lrs=(0.1,),
    seeds=2,
    eval_train=4000,
    eval_test=1000,
    val_images=500,
    eval_bf16=False,
    max_bank=1024,
    overrides=(
        "width=0.25",
        "batch_size=64",
        "warmup_steps=2",
        "knn_every=8",
        "knn_bank=1000",
        "ckpt_every=8",
        "log_every=4",
        "bf16=auto",
    ),
)  # a smoke test: fast on any CPU
# --mode sitting: what one ~2-hour sitting on 2 free cores can measure honestly. The full student, full evaluation,
# full data and teachers, but a budget of ONE epoch-equivalent (60k x 2 passes: ~6-13 min per run at one thread),
# one lr (0.1, no sweep) and 2 seeds for the core rows. Its table says what separates at that budget, no more.
SITTING = dict(
    budget_passes=60000 * 2,
    lrs=(0.1,),
    seeds=2,
    eval_train=None,
    eval_test=None,
    val_images=10000,
    eval_bf16=True,
    overrides=(),
)
# --mode long: three times the sitting budget (3 epoch-equivalents: ~25-60 min per run at one thread), one lr, one
# seed, and a kNN point every 150 steps (~30 s each): does a margin seen at one epoch-equivalent grow or shrink
# with budget, and where do the curves flatten.
LONG = dict(
    budget_passes=3 * 60000 * 2,
    lrs=(0.1,),
    seeds=1,
    eval_train=None,
    eval_test=None,
    val_images=10000,
    eval_bf16=True,
    overrides=("knn_every=150",),
)
MODES = {"quick": QUICK, "sitting": SITTING, "long": LONG, "full": FULL}
BASE_MODES = tuple(MODES)
# --precision fp32: the sitting/long/full protocol trained and evaluated in fp32, for CPUs without bf16 hardware
# (there bf16 is emulated, 19-20x slower than fp32: bench/results/throughput-avx2.md). Its cells are another
# measurement, not seeds of the bf16 table: own mode (fingerprint), results folder and work folder (-<mode>-fp32).
PRECISIONS = ("bf16", "fp32", "auto")
FP32_SUFFIX = "-fp32"
for _name in ("sitting", "long", "full"):
    MODES[_name + FP32_SUFFIX] = dict(
        MODES[_name], eval_bf16=False, overrides=tuple(MODES[_name]["overrides"]) + ("bf16=false",)
    )
# --teacher-precision bf16 (issue 28): the sitting protocol with the teacher's forward under bf16 autocast
# (teacher_precision=bf16), to measure what bf16 teacher images and taps change against the fp32-teacher sitting
# cells. Another measurement again: own mode, fingerprint and folders (-sitting-teacher-bf16).
TEACHER_PRECISIONS = ("fp32", "bf16")
TEACHER_BF16_SUFFIX = "-teacher-bf16"
MODES["sitting" + TEACHER_BF16_SUFFIX] = dict(
    SITTING, overrides=tuple(SITTING["overrides"]) + ("teacher_precision=bf16",)
)


@dataclass(frozen=True)
class Row:
    name: str
    group: str
    overrides: tuple[str, ...] = ()
    kind: str = "pretrain"  # pretrain | supervised | random | raw
    seeds: int = 1  # 3 for core rows (mean and std); capped by the mode's seed count
    note: str = ""


ROWS: tuple[Row, ...] = (
    Row("sns", "core", ("method=sns",), seeds=3, note="Squeeze and Span, syn_ratio 0.5; separate BN passes"),
    Row("vicreg-real", "core", ("method=vicreg", "syn_ratio=0.0"), seeds=3),
    Row("simsiam-real", "core", ("method=simsiam", "syn_ratio=0.0"), seeds=3),
    Row("squeeze", "core", ("method=squeeze",), seeds=3, note="syn_ratio 1.0; = Table 5 row e (var + cov)"),
    Row(
        "supervised",
        "reference",
        kind="supervised",
        note="upper bound: cross-entropy on the labels of the pretraining images, same budget",
    ),
    Row("random-init", "reference", kind="random", note="no training"),
    Row("raw-pixels", "reference", kind="raw", note="the image as the feature"),
    Row("vicreg-syn", "data", ("method=vicreg", "syn_ratio=1.0")),
    Row("vicreg-mixed", "data", ("method=vicreg", "syn_ratio=0.5")),
    Row("simsiam-syn", "data", ("method=simsiam", "syn_ratio=1.0")),
    Row("simsiam-mixed", "data", ("method=simsiam", "syn_ratio=0.5")),
    Row("kd-noaug", "kd", ("method=kd", "augment_syn=false"), note="Table 5 row a"),
    Row("kd-aug", "kd", ("method=kd",), note="Table 5 row b"),
    Row("squeeze-novarcov", "ablation", ("method=squeeze", "w_var=0", "w_cov=0"), note="Table 5 row c (collapse)"),
    Row("squeeze-var", "ablation", ("method=squeeze", "w_cov=0"), note="Table 5 row d"),
    Row(
        "sns-sharedbn",
        "ablation",
        ("method=sns", "bn_pass=shared"),
        note="one student pass over syn + both real views (shared BatchNorm statistics)",
    ),
    Row(
        "sns-perbatch",
        "ablation",
        ("method=sns", "augment.per_sample=false"),
        note="one augmentation parameter set per batch (the reference code's), not per image",
    ),
    # rho sweep: the SnS loss at rho = 0 is VICReg-real's, at rho = 1 Squeeze's; these fill in between
    Row("sns-syn25", "syn_ratio", ("method=sns", "syn_ratio=0.25"), seeds=2, note="SnS with rho = 0.25"),
    Row("sns-syn75", "syn_ratio", ("method=sns", "syn_ratio=0.75"), seeds=2, note="SnS with rho = 0.75"),
    # the feature bank (engine/bank.py): as many teacher images as real ones, sampled once; Squeeze's step is
    # about 2.7x faster from it here (bench/results/throughput.md), so its 10-epoch run fits one sitting
    Row(
        "squeeze-bank",
        "bank",
        ("method=squeeze", "teacher_bank=60000"),
        seeds=3,
        note="Squeeze from a 60k-image teacher bank (images + pooled taps sampled once), not the live teacher",
    ),
    Row(
        "sns-bank",
        "bank",
        ("method=sns", "teacher_bank=60000"),
        seeds=3,
        note="SnS with its teacher images from the same 60k bank: is a gain the bank's or the real images' absence?",
    ),
)
ROW_BY_NAME = {r.name: r for r in ROWS}
RHO_ROWS = ("vicreg-real", "sns-syn25", "sns", "sns-syn75", "squeeze")  # the rho sweep, rho ascending
UNTRAINED = ("random", "raw")  # row kinds with one cell (lr 0, seed 0) and nothing to train


def select_rows(patterns: str | None) -> list[Row]:
    """Rows whose names match any comma-separated glob (``sns,vicreg-*``), in table order (core first)."""
    if not patterns:
        return list(ROWS)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [r for r in ROWS if any(fnmatch.fnmatchcase(r.name, p) for p in pats)]
    unmatched = [p for p in pats if not any(fnmatch.fnmatchcase(r.name, p) for r in ROWS)]
    if unmatched:
        raise SnsError(f"--rows {','.join(unmatched)} matches no row; rows: {', '.join(r.name for r in ROWS)}")
    return chosen


def check_mode(mode: str) -> str:
    """``mode`` if it is a mode's name (quick | sitting | long | full, each but quick also with -fp32)."""
    if mode not in MODES:
        raise SnsError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def split_mode(name: str) -> tuple[str, bool]:
    """A mode name's protocol and whether it is the fp32 variant: 'sitting-fp32' -> ('sitting', True),
    'sitting-teacher-bf16' -> ('sitting', False) (see teacher_bf16)."""
    name = name.removesuffix(TEACHER_BF16_SUFFIX)
    return name.removesuffix(FP32_SUFFIX), name.endswith(FP32_SUFFIX)


def teacher_bf16(name: str) -> bool:
    """Whether a mode samples its teacher under bf16 autocast (--teacher-precision bf16)."""
    return name.endswith(TEACHER_BF16_SUFFIX)


def with_teacher_precision(mode: str, teacher_precision: str | None) -> str:
    """The mode that samples the teacher of ``mode`` in ``teacher_precision`` (fp32, the tables' definition, or
    bf16: only for the bf16 sitting protocol, the issue-28 comparison)."""
    if teacher_precision in (None, "fp32"):
        return mode
    if teacher_precision not in TEACHER_PRECISIONS:
        raise SnsError(f"--teacher-precision {teacher_precision!r}: expected one of {', '.join(TEACHER_PRECISIONS)}")
    if mode != "sitting":
        raise SnsError(
            f"--teacher-precision bf16 runs only with --mode sitting in bf16 (got mode {mode!r}): it measures what a "
            "bf16 teacher changes against the committed sitting cells"
        )
    return mode + TEACHER_BF16_SUFFIX


def with_precision(mode: str, precision: str | None) -> str:
    """The mode that trains ``mode`` in ``precision`` (bf16 | fp32 | auto: bf16 where this CPU has bf16 hardware,
    else fp32); None keeps the mode's own (bf16; --mode quick: bf16 where native)."""
    name = check_mode(mode)
    if precision is None:
        return name
    if precision not in PRECISIONS:
        raise SnsError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if name == "quick":
        if precision != "auto":
            raise SnsError(
                f"--precision {precision} does not apply to --mode quick: the smoke run always trains "
                "in bf16 where the CPU has bf16 hardware and in fp32 elsewhere (= --precision auto)"
            )
        return name
    if precision == "auto":
        precision = "bf16" if bf16_native("cpu") else "fp32"
    base = split_mode(name)[0]
    return base + FP32_SUFFIX if precision == "fp32" else base


def emulated_bf16_warning(mode: str) -> str | None:
    """A warning when ``mode`` trains in bf16 (the tables' definition) on a CPU without bf16 hardware, where torch
    emulates it and the cached cells' hours (measured with bf16 hardware) do not hold; None elsewhere. --mode quick
    (bf16 where native) and the -fp32 modes never emulate."""
    if mode == "quick" or split_mode(mode)[1] or bf16_native("cpu"):
        return None
    return (
        f"Warning: this CPU has no bf16 hardware (no AVX-512 BF16 / AMX) and --mode {split_mode(mode)[0]} trains in "
        "bf16, which torch emulates here: a step of this student ran 19x slower than in fp32 on an AVX2-only CPU "
        "(bench/results/throughput-avx2.md), and the cached cells' hours (bf16 hardware) do not hold here. Run on a "
        "CPU with AVX-512 BF16 or AMX (grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo), or give --precision fp32 for "
        "a separate fp32 table."
    )


def mode_settings(mode: str) -> dict[str, Any]:
    return copy.deepcopy(MODES[check_mode(mode)])


def suffix(mode: str) -> str:
    """File/folder suffix of a mode's results: fashion-quick, fashion-sitting, fashion (full)."""
    return "" if check_mode(mode) == "full" else f"-{mode}"


def passes_per_step(method: str, syn_ratio: float, batch_size: int) -> int:
    """Student image passes of one step: two views per real image; one per synthetic image for the squeeze
    family (its target comes from the teacher), two for VICReg/SimSiam on synthetic images."""
    n_syn = int(round(syn_ratio * batch_size))
    n_real = batch_size - n_syn
    syn_views = 2 if method in ("vicreg", "simsiam") else 1
    return n_syn * syn_views + n_real * 2


def resolve_run_config(
    row: Row, track: str, lr: float, seed: int, mode: str, teacher: str | None = None
) -> dict[str, Any]:
    """The full pretrain config of one run: fashion-cpu preset < mode overrides < row overrides < run keys."""
    settings_of_mode = mode_settings(mode)
    overrides = list(settings_of_mode["overrides"]) + list(row.overrides)
    if track == "scarce":
        overrides.append(f"real_subset={SCARCE_IMAGES}")
    elif track != "full":
        raise SnsError(f"--tracks {track!r}: expected full or scarce")
    cfg = resolve_config(
        PRETRAIN_DEFAULTS, "pretrain", PRESET, None, overrides, {"lr": float(lr), "seed": int(seed), "data": DATA}
    )
    cfg["final_eval"] = False  # the bench evaluates the export itself (full bank, probe, held-out split)
    if cfg.get("teacher_bank") and settings_of_mode.get("max_bank"):  # --quick: a smoke-sized bank, not 60k samples
        cfg["teacher_bank"] = min(int(cfg["teacher_bank"]), settings_of_mode["max_bank"])
    if row.kind == "supervised":
        per_step = cfg["batch_size"]  # one view per labelled image
        settings = {"syn_ratio": 0.0}
    else:
        settings = method_settings(cfg) if row.kind == "pretrain" else {"syn_ratio": 0.0}
        per_step = passes_per_step(cfg["method"], settings["syn_ratio"], cfg["batch_size"])
    cfg["steps"] = max(1, int(round(settings_of_mode["budget_passes"] / per_step)))
    if row.kind == "supervised":
        cfg["method"] = "supervised"  # set after the preset: the cell's config (and fingerprint) predate the method
    if settings["syn_ratio"] > 0:
        cfg["teacher"] = teacher
    return cfg


def uses_teacher(row: Row, track: str, mode: str) -> bool:
    """Whether a row's runs sample the teacher (syn_ratio > 0): only those need one trained first."""
    if row.kind != "pretrain":
        return False
    return method_settings(resolve_run_config(row, track, 0.1, 0, mode, "x"))["syn_ratio"] > 0


def cells_of(row: Row, mode: str, lrs: tuple[float, ...] | None = None) -> list[tuple[float, int]]:
    """Every (lr, seed) cell a row may run in ``mode``: one (0, 0) for an untrained row, else the sweep x seeds."""
    if row.kind in UNTRAINED:
        return [(0.0, 0)]
    settings = mode_settings(mode)
    return [(lr, s) for lr in tuple(lrs or settings["lrs"]) for s in range(settings["seeds"])]


def plan_runs(
    row: Row, mode: str, cached: dict[tuple[float, int], dict | None], lrs: tuple[float, ...] | None = None
) -> list[tuple[float, int]]:
    """(lr, seed) pairs still to run for a row: the lr sweep at seed 0, then further seeds at the best lr.

    ``cached`` maps (lr, seed) to a valid cached result (or None); seeds past 0 wait for a complete sweep.
    ``lrs`` replaces the mode's sweep (--lrs), e.g. to widen a sitting's single lr for one row.
    """
    if row.kind in UNTRAINED:
        return [] if cached.get((0.0, 0)) else [(0.0, 0)]
    settings = mode_settings(mode)
    lrs = tuple(lrs or settings["lrs"])
    todo = [(lr, 0) for lr in lrs if not cached.get((lr, 0))]
    if todo:
        return todo
    best = best_lr(lrs, cached)
    n_seeds = min(row.seeds, settings["seeds"])
    return [(best, s) for s in range(1, n_seeds) if not cached.get((best, s))]


def best_lr(lrs, cached: dict[tuple[float, int], dict | None]) -> float:
    """The lr whose seed-0 run has the best held-out kNN top-1 (ties: the smaller lr)."""
    scored = [(cached[(lr, 0)]["val_knn_top1"], -lr, lr) for lr in lrs if cached.get((lr, 0))]
    if not scored:
        raise SnsError("no finished lr-sweep run to choose a learning rate from")
    return max(scored)[2]
