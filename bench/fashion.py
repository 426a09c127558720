"""Fashion-MNIST benchmark: every method, same student and budget, one cached resumable run per table cell.

Usage: python bench/fashion.py [--quick | --mode quick|sitting|long|full] [--precision bf16|fp32|auto]
                               [--rows PATTERNS] [--tracks full,scarce] [--force] [--work DIR]
                               [--teacher TRACK=SPEC] [--budget-minutes M] [--list]   (= `sns bench fashion ...`)

A row is a set of config overrides of the `fashion-cpu` preset. Each (track, row, lr, seed) is one run in
<work>/<track>/<row>/lr<lr>-s<seed> (resumable) whose result is cached as a JSON file in
bench/results/fashion[-quick|-sitting|-long][-fp32]/runs/; a cached result is reused unless --force or its config
changed. --precision fp32 (or auto on a CPU without bf16 hardware) keeps fp32 cells apart in the -fp32 folders.
Learning rate: seed 0 at every lr of the sweep, the best by kNN on a held-out part of the train set
(never the test set), then the remaining seeds at that lr. Tables:
bench/results/fashion[-quick|-sitting|-long][-fp32].{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from squeezespan.errors import SnsError

RESULTS = Path(__file__).resolve().parent / "results"
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
# What each mode's Markdown table says about itself (under its heading).
MODE_TEXT = {
    "sitting": (
        "one-sitting budget (--mode sitting)",
        "The full student, data, teachers and evaluation, but one epoch-equivalent of student passes per run, "
        "lr 0.1 (rows whose sweep a later sitting widened with --lrs: see their sweep table) and 2 seeds: "
        "what separates the methods at that budget, no more.",
    ),
    "long": (
        "three epoch-equivalents (--mode long)",
        "The full student, data, teachers and evaluation, three times the sitting budget, one learning rate and "
        "one seed (compare with the sitting's seed spread), kNN every 150 steps: how the methods move with "
        "budget, no more.",
    ),
    "full": (
        "the issue's protocol (--mode full)",
        "Ten epoch-equivalents per run, the lr sweep at seed 0, then 3 seeds at the chosen lr. At one CPU thread "
        "a cell takes 2-3 hours, so the table is built across sittings (re-run to resume); a row says "
        "'partial' until its sweep and seeds are all done, and a verdict on partial rows is provisional.",
    ),
}

FP32_TEXT = (
    " Trained and evaluated in fp32 (--precision fp32, for CPUs without bf16 hardware): the same protocol "
    "as the bf16 table, measured separately; compare its cells with that table's, do not pool them."
)

# Teachers (StyleGAN2, 32 px, 1 channel) when `sns presets` has no gan-fashion-cpu yet: the settings that
# trained the digits teachers in a few minutes, sized up for Fashion-MNIST's textures.
GAN_FALLBACK = (
    "channels=1",
    "channel_base=1024",
    "channel_max=64",
    "batch=32",
    "kimg=200",
    "bf16=true",
    "threads=1",
    "mapping_lr_mult=0.1",
    "diffaug=translation,color",
    "augment_p=0",
    "ada_target=0.6",
    "ada_kimg=10",
    "snapshot_kimg=10",
    "sample_kimg=10",
    "fd_ref_kimg=20",
)
# The scarce-track teacher (2,000 images): as long as the committed full-track one (its best FD-ref snapshot was
# at 60 kimg), FD-ref every 20 kimg picks the snapshot; 75 minutes is room for 60 kimg at one thread.
GAN_SCARCE = ("kimg=60", "max_minutes=75")
GAN_QUICK = (
    "kimg=2",
    "max_minutes=4",
    "fd_ref_kimg=0",
    "snapshot_kimg=1",
    "sample_kimg=1",
    "teacher_pick=last",
    "bf16=auto",
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
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Core", ("sns", "vicreg-real", "simsiam-real", "squeeze")),
    ("References", ("supervised", "random-init", "raw-pixels")),
    (
        "Pretraining data of the SSL baselines (real / synthetic / mixed)",
        ("vicreg-real", "vicreg-syn", "vicreg-mixed", "simsiam-real", "simsiam-syn", "simsiam-mixed", "sns"),
    ),
    (
        "Table 5 ablation (a-f), BatchNorm passes and per-batch augmentation",
        ("kd-noaug", "kd-aug", "squeeze-novarcov", "squeeze-var", "squeeze", "sns", "sns-sharedbn", "sns-perbatch"),
    ),
    ("Synthetic share rho (syn_ratio) of SnS: 0 = VICReg-real, 1 = Squeeze", RHO_ROWS),
    ("Live teacher vs a teacher feature bank", ("squeeze", "squeeze-bank", "sns", "sns-bank")),
)


# ------------------------------------------------------------------------------------------------ planning


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


def mode_name(mode: bool | str) -> str:
    """quick | sitting | long | full (a bool is the old --quick switch: True = quick, False = full)."""
    if isinstance(mode, bool):
        return "quick" if mode else "full"
    if mode not in MODES:
        raise SnsError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def split_mode(name: str) -> tuple[str, bool]:
    """A mode name's protocol and whether it is the fp32 variant: 'sitting-fp32' -> ('sitting', True)."""
    return name.removesuffix(FP32_SUFFIX), name.endswith(FP32_SUFFIX)


def with_precision(mode: bool | str, precision: str | None) -> str:
    """The mode that trains ``mode`` in ``precision`` (bf16 | fp32 | auto: bf16 where this CPU has bf16 hardware,
    else fp32); None keeps the mode's own (bf16; --mode quick: bf16 where native)."""
    name = mode_name(mode)
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
        from squeezespan.engine.rundir import bf16_native

        precision = "bf16" if bf16_native("cpu") else "fp32"
    base = split_mode(name)[0]
    return base + FP32_SUFFIX if precision == "fp32" else base


def mode_settings(mode: bool | str) -> dict[str, Any]:
    return copy.deepcopy(MODES[mode_name(mode)])


def _suffix(mode: bool | str) -> str:
    """File/folder suffix of a mode's results: fashion-quick, fashion-sitting, fashion (full)."""
    name = mode_name(mode)
    return "" if name == "full" else f"-{name}"


def passes_per_step(method: str, syn_ratio: float, batch_size: int) -> int:
    """Student image passes of one step: two views per real image; one per synthetic image for the squeeze
    family (its target comes from the teacher), two for VICReg/SimSiam on synthetic images."""
    n_syn = int(round(syn_ratio * batch_size))
    n_real = batch_size - n_syn
    syn_views = 2 if method in ("vicreg", "simsiam") else 1
    return n_syn * syn_views + n_real * 2


def resolve_run_config(
    row: Row, track: str, lr: float, seed: int, quick: bool | str, teacher: str | None = None
) -> dict[str, Any]:
    """The full pretrain config of one run: fashion-cpu preset < mode overrides < row overrides < run keys."""
    from squeezespan.config import resolve_config
    from squeezespan.engine.trainer import PRETRAIN_DEFAULTS
    from squeezespan.methods import method_settings

    mode = mode_settings(quick)
    overrides = list(mode["overrides"]) + list(row.overrides)
    if track == "scarce":
        overrides.append(f"real_subset={SCARCE_IMAGES}")
    elif track != "full":
        raise SnsError(f"--tracks {track!r}: expected full or scarce")
    cfg = resolve_config(
        PRETRAIN_DEFAULTS, "pretrain", PRESET, None, overrides, {"lr": float(lr), "seed": int(seed), "data": DATA}
    )
    cfg["final_eval"] = False  # the bench evaluates the export itself (full bank, probe, held-out split)
    if cfg.get("teacher_bank") and mode.get("max_bank"):  # --quick: a smoke-sized bank, not 60k teacher samples
        cfg["teacher_bank"] = min(int(cfg["teacher_bank"]), mode["max_bank"])
    settings = method_settings(cfg) if row.kind == "pretrain" else {"syn_ratio": 0.0}
    per_step = passes_per_step(
        cfg["method"] if row.kind != "supervised" else "supervised", settings["syn_ratio"], cfg["batch_size"]
    )
    if row.kind == "supervised":
        per_step = cfg["batch_size"]  # one view per labelled image
    cfg["steps"] = max(1, int(round(mode["budget_passes"] / per_step)))
    if row.kind == "supervised":
        cfg["method"] = "supervised"  # not an engine method: bench/fashion.py trains it (train_supervised)
    if settings["syn_ratio"] > 0:
        cfg["teacher"] = teacher
    return cfg


def plan_runs(
    row: Row, quick: bool | str, cached: dict[tuple[float, int], dict | None], lrs: tuple[float, ...] | None = None
) -> list[tuple[float, int]]:
    """(lr, seed) pairs still to run for a row: the lr sweep at seed 0, then further seeds at the best lr.

    ``cached`` maps (lr, seed) to a valid cached result (or None); seeds past 0 wait for a complete sweep.
    ``lrs`` replaces the mode's sweep (--lrs), e.g. to widen a sitting's single lr for one row.
    """
    if row.kind in ("random", "raw"):
        return [] if cached.get((0.0, 0)) else [(0.0, 0)]
    mode = mode_settings(quick)
    lrs = tuple(lrs or mode["lrs"])
    todo = [(lr, 0) for lr in lrs if not cached.get((lr, 0))]
    if todo:
        return todo
    best = best_lr(lrs, cached)
    n_seeds = min(row.seeds, mode["seeds"])
    return [(best, s) for s in range(1, n_seeds) if not cached.get((best, s))]


def best_lr(lrs, cached: dict[tuple[float, int], dict | None]) -> float:
    """The lr whose seed-0 run has the best held-out kNN top-1 (ties: the smaller lr)."""
    scored = [(cached[(lr, 0)]["val_knn_top1"], -lr, lr) for lr in lrs if cached.get((lr, 0))]
    if not scored:
        raise SnsError("no finished lr-sweep run to choose a learning rate from")
    return max(scored)[2]


# ------------------------------------------------------------------------------------------------ caching


def fingerprint(obj: Any) -> str:
    """Stable hash of what determines a result (config, teacher identity, evaluation settings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def result_path(results_dir: Path, track: str, row: str, lr: float, seed: int) -> Path:
    return Path(results_dir) / "runs" / f"{track}__{row}__lr{lr:g}__s{seed}.json"


def load_cached(path: Path, fp: str | None) -> dict | None:
    """A cached result if it exists, parses and (when ``fp`` is given) was made with the same fingerprint."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if fp is not None and res.get("fingerprint") != fp:
        return None
    return res


def needs_run(path: Path, fp: str, force: bool) -> bool:
    """True unless a finished result with this fingerprint is cached (and --force is not given)."""
    return force or load_cached(path, fp) is None


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ teachers


def teacher_identity(spec: str) -> dict[str, Any]:
    """What the results record about a teacher: spec (repo-relative when inside the repository), G_ema checksum,
    training length and FD-ref."""
    p = Path(spec)
    tdir = p / "teacher" if (p / "teacher" / "teacher.json").exists() else p
    out: dict[str, Any] = {"spec": _repo_relative(spec)}
    g = tdir / "G_ema.safetensors"
    if g.exists():
        out["G_ema_sha256"] = hashlib.sha256(g.read_bytes()).hexdigest()[:16]
        out["G_ema_bytes"] = g.stat().st_size
    summ = tdir.parent / "summary.json" if tdir.name == "teacher" else tdir / "summary.json"
    for src in (tdir / "teacher.json", summ):
        try:
            meta = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for k in ("kimg", "fd_ref", "best_fd_ref", "best_kimg", "dataset", "images"):
            if k in meta and not isinstance(meta[k], (dict, list)):
                out.setdefault(k, meta[k])
    return out


def _repo_relative(spec: str) -> str:
    """An absolute path inside the repository as a repo-relative one (committed results name no machine path)."""
    try:
        return str(Path(spec).relative_to(RESULTS.parent.parent)) if Path(spec).is_absolute() else str(spec)
    except ValueError:
        return str(spec)


def _teacher_key(t: dict[str, Any]) -> str | None:
    """What tells two teachers apart in the table: the G_ema checksum, else the spec."""
    return t.get("G_ema_sha256") or t.get("spec")


def teachers_of(runs: list[dict[str, Any]], resolved: dict[str, dict[str, Any]]):
    """The teacher of each track and, per track, which rows each distinct teacher served.

    A cell's teacher comes from its result; ``resolved`` (this invocation's) is named only when a cell of that
    track used it or no cell of the track recorded a teacher (a teacher no cell used says nothing about the table).
    Cells of one track may have used different teachers (a --teacher override in one sitting): the second
    mapping then lists every teacher (by G_ema checksum, else spec) with the rows it served, so the table can
    say so instead of naming only one."""
    named: dict[str, dict[str, Any]] = {}
    served: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        t = r.get("teacher")
        if not t:
            continue
        # cells written before specs were recorded repo-relative hold absolute paths
        t = named[r["track"]] = {**t, "spec": _repo_relative(t.get("spec", ""))}
        key = _teacher_key(t)
        entry = served.setdefault(r["track"], {}).setdefault(key, {"teacher": t, "rows": []})
        if r["row"] not in entry["rows"]:
            entry["rows"].append(r["row"])
    for track, t in resolved.items():
        if track not in served or _teacher_key(t) in served[track]:
            named[track] = t
    mixed = {track: list(by.values()) for track, by in served.items() if len(by) > 1}
    return named, mixed


def scarce_dataset(train):
    """The 2,000 real images the scarce track pretrains on: the engine's own fixed choice (real_subset)."""
    from squeezespan.engine.trainer import _subset

    return train.subset(_subset({"real_subset": SCARCE_IMAGES}, len(train)))


def ensure_teacher(track: str, mode: bool | str, work: Path, given: str | None, log: Callable) -> str:
    """A teacher spec for ``track``: the given one, the committed one, or one trained now (and recorded)."""
    if given:
        return given
    quick = mode_name(mode) == "quick"
    committed = RESULTS / "teachers" / f"fashion-{track}"
    if not quick and (committed / "teacher.json").exists():
        return str(committed)
    run_dir = work / "teachers" / f"fashion-{track}{'-quick' if quick else ''}"
    if (run_dir / "teacher" / "teacher.json").exists() and (run_dir / "summary.json").exists():
        stopped = json.loads((run_dir / "summary.json").read_text()).get("stopped_by_time")
        if quick or not stopped:  # a full-mode teacher stopped by max_minutes continues in the next sitting
            return str(run_dir)
    from squeezespan.config import list_presets, resolve_config
    from squeezespan.data import load_dataset
    from squeezespan.teachers.train_gan import GAN_DEFAULTS, train_gan

    preset = "gan-fashion-cpu" if "gan-fashion-cpu" in list_presets("gan") else None
    overrides = list(() if preset else GAN_FALLBACK) + list(GAN_QUICK if quick else ())
    if split_mode(mode_name(mode))[1]:
        overrides.append("bf16=false")
    if track == "scarce":
        overrides.append("ada_target=0.6")  # 2,000 images: D overfits without adaptive augmentation (ADA)
        if not quick:
            overrides += list(GAN_SCARCE)
    cfg = resolve_config(GAN_DEFAULTS, "gan", preset, None, overrides, {"data": DATA})
    train = load_dataset(DATA, split="train", resolution=cfg["resolution"])
    dataset = scarce_dataset(train) if track == "scarce" else train
    log(f"training the {track} teacher ({len(dataset)} images, preset {preset or 'bench fallback'}) in {run_dir}")
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = train_gan(cfg, run_dir, resume=resume, device="cpu", progress=False, dataset=dataset, log=log)
    if not quick and summary.get("stopped_by_time"):
        raise SnsError(
            f"the {track} teacher in {run_dir} stopped at its max_minutes ({summary.get('kimg')} kimg); "
            "run the same command again to continue it (rows without a teacher can run meanwhile: "
            "--rows vicreg-real,simsiam-real,supervised,random-init,raw-pixels)"
        )
    if not quick:
        # committed with the results (G_ema + D + json, a few MB) so the table can be rebuilt against it
        committed.mkdir(parents=True, exist_ok=True)
        for f in (run_dir / "teacher").iterdir():
            if f.suffix in (".json", ".safetensors") and f.name != "G.safetensors":
                shutil.copy2(f, committed / f.name)
        shutil.copy2(run_dir / "summary.json", committed / "summary.json")
        return str(committed)
    return str(run_dir)


# ------------------------------------------------------------------------------------------------ running


@dataclass
class EvalData:
    train: Any
    test: Any
    val_idx: torch.Tensor  # positions in `train` held out for choosing the lr (never the test set)
    settings: dict[str, Any] = field(default_factory=dict)


def eval_data(mode: bool | str) -> EvalData:
    from squeezespan.data import load_dataset

    mode = mode_settings(mode)
    train = load_dataset(DATA, split="train", resolution=32)
    test = load_dataset(DATA, split="test", resolution=32)
    g = torch.Generator().manual_seed(0)
    if mode["eval_train"]:
        train = train.subset(torch.randperm(len(train), generator=g)[: mode["eval_train"]])
    if mode["eval_test"]:
        test = test.subset(torch.randperm(len(test), generator=g)[: mode["eval_test"]])
    val_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: mode["val_images"]]
    settings = {
        "train_images": len(train),
        "test_images": len(test),
        "val_images": len(val_idx),
        "features_bf16": bool(mode["eval_bf16"]),
        "knn": {"k": 200, "t": 0.1},
        "linear": {"protocol": "fast", "solver": "lbfgs", "epochs": 100},
    }
    return EvalData(train, test, val_idx, settings)


def evaluate_backbone(backbone, ev: EvalData, normalize: bool) -> dict[str, Any]:
    """kNN and fast linear probe on the test set, plus kNN on the held-out train images (for the lr choice)."""
    from squeezespan.eval import extract_features, knn_eval, linear_probe

    t0 = time.perf_counter()
    bf16 = bool(ev.settings.get("features_bf16"))
    tr_f, tr_y = extract_features(backbone, ev.train, device="cpu", normalize=normalize, bf16=bf16)
    te_f, te_y = extract_features(backbone, ev.test, device="cpu", normalize=normalize, bf16=bf16)
    knn = knn_eval(tr_f, tr_y, te_f, te_y, k=200, t=0.1, num_classes=10)
    keep = torch.ones(len(tr_y), dtype=torch.bool)
    keep[ev.val_idx] = False
    val = knn_eval(tr_f[keep], tr_y[keep], tr_f[ev.val_idx], tr_y[ev.val_idx], k=200, t=0.1, num_classes=10)
    lin = linear_probe(tr_f, tr_y, te_f, te_y, epochs=100, num_classes=10)
    return {
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "linear_top1": lin["top1"],
        "linear_top5": lin["top5"],
        "val_knn_top1": val["top1"],
        "feature_dim": int(tr_f.shape[1]),
        "eval_s": round(time.perf_counter() - t0, 1),
    }


def train_supervised(cfg: dict[str, Any], run_dir: Path, resume: bool, log: Callable) -> dict[str, Any]:
    """The supervised upper bound: the student + a linear head trained with cross-entropy on the labels of the
    images pretraining may see, same steps, lr schedule, optimizer and augmentation as the other rows.
    Resumable: the data order is the engine's RealStream (a function of seed and step) and RNGs are saved."""
    from squeezespan.data import Augment, AugmentConfig, load_dataset
    from squeezespan.engine.checkpoint import (
        checkpoint_path,
        load_latest,
        prune_checkpoints,
        rng_state,
        save_checkpoint,
        set_rng_state,
    )
    from squeezespan.engine.trainer import RealStream, _export, _lr_at, _subset
    from squeezespan.models import build_student

    train = load_dataset(cfg["data"], split="train", resolution=cfg["resolution"])
    torch.manual_seed(cfg["seed"])
    student = build_student(cfg["arch"], cfg["variant"], cfg["width"], in_channels=train.channels)
    head = torch.nn.Linear(student.feature_dim, train.num_classes)
    augment = Augment(AugmentConfig.from_dict(cfg["augment"]), train.channels, cfg["resolution"])
    params = list(student.parameters()) + list(head.parameters())
    base_lr = cfg["lr"] * cfg["batch_size"] / 256
    opt = torch.optim.SGD(params, lr=base_lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    stream = RealStream(train, cfg["batch_size"], cfg["seed"], _subset(cfg, len(train)))
    mean = torch.tensor(train.mean).view(1, -1, 1, 1)
    std = torch.tensor(train.std).view(1, -1, 1, 1)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start, total, earlier_s = 0, cfg["steps"], 0.0
    found = load_latest(ckpt_dir, warn=log) if resume else None
    if found is not None:
        state, _ = found
        earlier_s = float(state.get("train_time_s", 0.0))
        student.load_state_dict(state["student"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = int(state["step"])
    else:
        torch.manual_seed(cfg["seed"] + 1)
    student.train()
    t0 = time.perf_counter()
    metrics = open(run_dir / "metrics.jsonl", "a" if start else "w")
    for step in range(start, total):
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, total, base_lr, cfg["warmup_steps"])
        idx = stream.indices(step)
        x = train.take(idx).float().div_(255)
        y = train.labels[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(cfg["bf16"])):
            logits = head(student((augment(x) - mean) / std))
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        done = step + 1
        if done % cfg["log_every"] == 0 or done == total:
            metrics.write(json.dumps({"step": done, "time": round(time.time(), 3), "loss": loss.item()}) + "\n")
            metrics.flush()
        if done % cfg["ckpt_every"] == 0 or done == total:
            save_checkpoint(
                checkpoint_path(ckpt_dir, done),
                dict(
                    step=done,
                    student=student.state_dict(),
                    head=head.state_dict(),
                    optimizer=opt.state_dict(),
                    rng=rng_state(),
                    train_time_s=earlier_s + time.perf_counter() - t0,
                ),
            )
            prune_checkpoints(ckpt_dir, 2)
    metrics.close()
    cfg = dict(cfg, method="supervised")
    _export(cfg, student, train, run_dir)
    segment_s = time.perf_counter() - t0
    return {"steps": total, "train_time_s": round(earlier_s + segment_s, 3), "segment_time_s": round(segment_s, 3)}


def run_one(
    row: Row,
    track: str,
    lr: float,
    seed: int,
    cfg: dict[str, Any] | None,
    ev: EvalData,
    work: Path,
    force: bool,
    progress: bool,
    log: Callable,
) -> dict[str, Any] | None:
    """Train (or resume) and evaluate one cell; None if training was interrupted (checkpoint kept)."""
    from squeezespan.engine.trainer import pretrain
    from squeezespan.eval import RawPixels, random_init_student
    from squeezespan.export import load_backbone

    t0, earlier_s = time.time(), 0.0
    out: dict[str, Any] = {}
    if row.kind == "raw":
        out.update(evaluate_backbone(RawPixels(1, 32), ev, normalize=True))
    elif row.kind == "random":
        base = resolve_run_config(ROW_BY_NAME["vicreg-real"], track, 0.1, seed, False)
        m = random_init_student(base["arch"], base["variant"], base["width"], in_channels=1, seed=seed)
        out.update(evaluate_backbone(m, ev, normalize=True))
    else:
        run_dir = work / track / row.name / f"lr{lr:g}-s{seed}"
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("ckpt-*.pt"))
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            log(f"  resuming {run_dir}")
        if row.kind == "supervised":
            summary = train_supervised(cfg, run_dir, resume, log)
        else:
            summary = pretrain(cfg, run_dir, resume=resume, progress=progress, log=log)
        if summary.get("interrupted"):
            return None
        # a resumed cell's wall time also counts the training of its earlier segments (their checkpoints carry it)
        earlier_s = summary["train_time_s"] - summary.get("segment_time_s", summary["train_time_s"])
        out.update(
            steps=summary["steps"],
            train_time_s=round(summary["train_time_s"], 1),
            run_dir=str(run_dir),
            knn_monitor=monitor_curve(run_dir),
        )
        out.update(evaluate_backbone(load_backbone(run_dir / "backbone.safetensors"), ev, normalize=False))
    out["wall_s"] = round(time.time() - t0 + earlier_s, 1)
    return out


def monitor_curve(run_dir: str | Path) -> list[list[float]]:
    """The in-training kNN monitor of a run as [step, top-1] pairs (from its metrics.jsonl; [] if none). Kept in
    the cell's result so that the curves can be drawn from a clean clone, without the run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    pts = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
        if "knn_top1" in rec:
            pts.append([int(rec["step"]), float(rec["knn_top1"])])
    return pts


def machine() -> dict[str, Any]:
    from squeezespan.engine.rundir import bf16_native, cpu_name

    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "bf16_native": bf16_native("cpu"),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str | None:
    try:
        import subprocess

        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001 - provenance only
        return None


def run_bench(
    quick: bool | str = False,
    rows: str | None = None,
    tracks: tuple[str, ...] = TRACKS,
    force: bool = False,
    work: str | Path | None = None,
    teachers: dict[str, str] | None = None,
    budget_minutes: float | None = None,
    results_dir: str | Path | None = None,
    progress: bool = False,
    threads: int | None = 1,
    log: Callable = print,
    mode: str | None = None,
    lrs: tuple[float, ...] | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run every selected cell that has no valid cached result; then rewrite the JSON + Markdown tables.

    ``threads=1`` by default: on a CPU shared with other jobs, two OpenMP threads spin-waiting on each other
    measured 8-12x slower per step than one (bench/results/throughput.md).
    """
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run_bench(
            with_precision(mode if mode is not None else quick, precision),
            rows,
            tracks,
            force,
            work,
            teachers,
            budget_minutes,
            results_dir,
            progress,
            log,
            lrs,
        )
    finally:
        torch.set_num_threads(threads_before)


def _run_bench(quick, rows, tracks, force, work, teachers, budget_minutes, results_dir, progress, log, lrs=None):
    selected = select_rows(rows)
    for t in tracks:
        if t not in TRACKS:
            raise SnsError(f"--tracks {t!r}: expected a comma list of {', '.join(TRACKS)}")
    results_dir = Path(results_dir) if results_dir else RESULTS / f"fashion{_suffix(quick)}"
    work = Path(work) if work else Path("runs") / f"bench-fashion{_suffix(quick)}"
    teachers = dict(teachers or {})
    mode = mode_settings(quick)
    started = time.time()
    ev = None
    forced_done: set[Path] = set()  # --force redoes each cell once per invocation, not again after the sweep
    stopped = False
    for track in tracks:
        for row in selected:
            while not stopped:
                teacher = None
                if row.kind == "pretrain" and _uses_teacher(row, track, quick):
                    teachers[track] = teacher = ensure_teacher(track, quick, work, teachers.get(track), log)
                cached, fps = _cached_cells(row, track, quick, teacher, results_dir, force, forced_done, lrs)
                todo = plan_runs(row, quick, cached, lrs)
                if not todo:
                    break
                lr, seed = todo[0]
                if budget_minutes is not None and time.time() - started > budget_minutes * 60:
                    log(f"--budget-minutes {budget_minutes:g} used up; re-run to continue from {track}/{row.name}")
                    stopped = True
                    break
                ev = ev or eval_data(quick)
                cfg = (
                    None if row.kind in ("raw", "random") else resolve_run_config(row, track, lr, seed, quick, teacher)
                )
                log(f"[{track}] {row.name} lr={lr:g} seed={seed}" + (f" ({cfg['steps']} steps)" if cfg else ""))
                path = result_path(results_dir, track, row.name, lr, seed)
                res = run_one(row, track, lr, seed, cfg, ev, work, force and path not in forced_done, progress, log)
                if res is None:
                    log("interrupted: the run kept its checkpoint; re-run the same command to resume")
                    stopped = True
                    break
                forced_done.add(path)
                write_json(
                    path,
                    {
                        "row": row.name,
                        "track": track,
                        "lr": lr,
                        "seed": seed,
                        "smoke": quick == "quick",
                        "mode": quick,
                        "fingerprint": fps[(lr, seed)],
                        "teacher": teacher_identity(teacher) if teacher else None,
                        "config": cfg,
                        "eval": ev.settings,
                        "machine": machine(),
                        "commit": git_commit(),
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        **res,
                    },
                )
                log(
                    f"  kNN {res['knn_top1']:.2f}  linear {res['linear_top1']:.2f}  val-kNN {res['val_knn_top1']:.2f}"
                    f"  ({res['wall_s']:.0f} s)"
                )
            if stopped:
                break
        if stopped:
            break
    table = collect(results_dir, quick, tracks=TRACKS)
    table["settings"] = {k: v for k, v in mode.items()}
    table["teachers"], table["teacher_rows"] = teachers_of(
        table["runs"], {t: teacher_identity(s) for t, s in teachers.items()}
    )
    table["complete"] = not stopped
    write_json(results_dir.with_suffix(".json"), table)
    results_dir.with_suffix(".md").write_text(render_markdown(table))
    log(f"wrote {results_dir.with_suffix('.json')} and {results_dir.with_suffix('.md')}")
    if mode_name(quick) == "full" and results_dir == RESULTS / "fashion":  # the README shows the committed table
        readme = RESULTS.parent.parent / "README.md"
        if sync_readme(readme, table):
            log(f"updated the results table in {readme}")
    return table


def _uses_teacher(row: Row, track: str, quick: bool) -> bool:
    from squeezespan.methods import method_settings

    return method_settings(resolve_run_config(row, track, 0.1, 0, quick, "x"))["syn_ratio"] > 0


def cell_fingerprint(row: Row, track: str, quick: bool, cfg: dict[str, Any] | None, teacher_sha: str | None) -> str:
    """Hash of what decides a cell's result: row, track, mode budget and evaluation, the run config (teacher by
    its weights' checksum, not its path). Null keys and keys at the engine's current default are left out, so a
    key the engine adds later (null or with a default that keeps the old behaviour) does not invalidate finished
    results, while a changed default does (the stored value no longer equals it)."""
    from squeezespan.engine.trainer import PRETRAIN_DEFAULTS

    mode = mode_settings(quick)
    if cfg is not None:
        cfg = {
            k: v
            for k, v in cfg.items()
            if v is not None and not (k in PRETRAIN_DEFAULTS and _same(v, PRETRAIN_DEFAULTS[k]))
        }
        if cfg.get("teacher"):
            cfg["teacher"] = teacher_sha
    eval_key = [mode["eval_train"], mode["eval_test"], mode["val_images"]] + (["bf16"] if mode["eval_bf16"] else [])
    key = {
        "row": row.name,
        "kind": row.kind,
        "config": cfg,
        "quick": mode_name(quick) == "quick",
        "budget": mode["budget_passes"],
        "eval": eval_key,
        "track": track,
    }
    if mode_name(quick) not in ("quick", "full"):
        key["mode"] = mode_name(quick)  # quick/full fingerprints stay those of results written before modes existed
    return fingerprint(key)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True == 1 is not "the same setting"


def _cached_cells(row, track, quick, teacher, results_dir, force, forced_done, lrs=None):
    """Valid cached results of a row's cells, keyed (lr, seed), and each cell's fingerprint."""
    mode = mode_settings(quick)
    lrs = tuple(lrs or mode["lrs"])
    cells = [(0.0, 0)] if row.kind in ("random", "raw") else [(lr, s) for lr in lrs for s in range(mode["seeds"])]
    cached, fps = {}, {}
    sha = teacher_identity(teacher).get("G_ema_sha256", teacher) if teacher else None
    for lr, seed in cells:
        cfg = None if row.kind in ("random", "raw") else resolve_run_config(row, track, lr, seed, quick, teacher)
        fps[(lr, seed)] = fp = cell_fingerprint(row, track, quick, cfg, sha)
        path = result_path(results_dir, track, row.name, lr, seed)
        res = None if (force and path not in forced_done) else load_cached(path, None)
        if res is not None and res.get("fingerprint") != fp:
            # written under an older hashing rule: recompute from what the result itself recorded
            stored_sha = (res.get("teacher") or {}).get("G_ema_sha256")
            if cell_fingerprint(row, track, quick, res.get("config"), stored_sha) != fp:
                res = None
        cached[(lr, seed)] = res
    return cached, fps


# ------------------------------------------------------------------------------------------------ tables


def _stats(values: list[float]) -> dict[str, float | int]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "min": min(values),
        "max": max(values),
    }


def aggregate(row: Row, runs: list[dict], lrs, max_seeds: int = 3) -> dict[str, Any]:
    """One table row from a row's cached runs: best lr by held-out kNN, mean/std over seeds at that lr."""
    out: dict[str, Any] = {"row": row.name, "group": row.group, "kind": row.kind, "note": row.note}
    if not runs:
        out["status"] = "not run"
        return out
    by = {(r["lr"], r["seed"]): r for r in runs}
    if row.kind in ("random", "raw"):
        chosen, out["lr"] = [by[(0.0, 0)]] if (0.0, 0) in by else runs[:1], None
    else:
        swept = [lr for lr in lrs if (lr, 0) in by]
        if not swept:
            out["status"] = "sweep not started"
            return out
        best = best_lr(swept, by)
        out["lr"] = best
        out["sweep"] = {f"{lr:g}": by[(lr, 0)]["val_knn_top1"] for lr in swept}
        out["sweep_linear"] = {f"{lr:g}": by[(lr, 0)]["linear_top1"] for lr in swept}  # shown, never used to choose
        chosen = [r for (lr, s), r in sorted(by.items()) if lr == best]
        done = len(swept) == len(lrs) and len(chosen) >= min(row.seeds, max_seeds)
        out["status"] = "done" if done else f"partial: sweep {len(swept)}/{len(lrs)}, seeds {len(chosen)}"
    if row.kind in ("random", "raw"):
        out["status"] = "done"
    for key in ("knn_top1", "linear_top1", "wall_s"):
        out[key] = _stats([float(r[key]) for r in chosen])
    out["seeds"] = sorted(r["seed"] for r in chosen)
    return out


def collect(results_dir: Path, quick: bool, tracks=TRACKS) -> dict[str, Any]:
    """Every cached run under ``results_dir``/runs, aggregated per track and row."""
    mode = mode_settings(quick)
    runs = []
    for p in sorted((Path(results_dir) / "runs").glob("*.json")):
        r = load_cached(p, None)
        if r is None:
            continue
        if "knn_monitor" not in r and r.get("run_dir") and (Path(r["run_dir"]) / "metrics.jsonl").exists():
            r["knn_monitor"] = monitor_curve(r["run_dir"])  # a result written before curves were kept
            write_json(p, r)
        runs.append(r)

    def swept(row_runs):  # the mode's lrs plus any a --lrs sitting added for this row
        return tuple(sorted(set(mode["lrs"]) | {r["lr"] for r in row_runs}))

    rows = {}
    for t in tracks:
        rows[t] = []
        for row in ROWS:
            mine = [r for r in runs if r["track"] == t and r["row"] == row.name]
            rows[t].append(
                aggregate(row, mine, swept(mine) if row.kind not in ("random", "raw") else mode["lrs"], mode["seeds"])
            )
    return {
        "smoke": mode_name(quick) == "quick",
        "mode": mode_name(quick),
        "benchmark": "fashion-mnist",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "commit": git_commit(),
        "rows": rows,
        "runs": [{k: v for k, v in r.items() if k not in ("config", "machine", "eval")} for r in runs],
    }


def _cell(stat: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    if not stat:
        return "-"
    m = stat["mean"] * scale
    return f"{m:.{digits}f} ± {stat['std'] * scale:.{digits}f}" if stat["n"] > 1 else f"{m:.{digits}f}"


def _wall_cell(stat: dict | None) -> str:
    """Minutes; over seeds a range, not mean ± std: a row's seeds may run in different sittings on machines of
    different speed (1.9x apart here), where a spread says nothing about the method."""
    if not stat or stat["n"] < 2:
        return _cell(stat, 1 / 60, 1)
    return f"{stat['min'] / 60:.1f}-{stat['max'] / 60:.1f}"


def render_markdown(table: dict[str, Any]) -> str:
    """The Markdown tables of a collected result (one section per track, core rows first)."""
    lines = []
    if table.get("smoke"):
        lines += [
            "# Fashion-MNIST bench: SMOKE RUN (--quick), NOT THE BENCHMARK",
            "",
            "Tiny budgets and evaluation subsets: these numbers only show that every row runs end to end. "
            "They say nothing about the methods.",
            "",
        ]
    elif split_mode(str(table.get("mode")))[0] in MODE_TEXT:
        base, fp32 = split_mode(table["mode"])
        heading, text = MODE_TEXT[base]
        lines += [
            f"# Fashion-MNIST bench: {heading}{' in fp32' if fp32 else ''}",
            "",
            text
            + ("" if base == "full" else " The issue's budget (10 epochs, lr sweep, 3 seeds) is `--mode full`.")
            + (FP32_TEXT if fp32 else ""),
            "",
        ]
    else:
        lines += ["# Fashion-MNIST bench", ""]
    s = table.get("settings") or {}
    if s:
        lrs = list(s.get("lrs", []))
        lr_text = (
            f"lr {lrs[0]:g} x B/256 for every row unless --lrs widened its sweep"
            if len(lrs) == 1
            else f"lr sweep {lrs} (base lr x B/256, chosen by kNN on {s.get('val_images')} held-out train images)"
        )
        lines.append(
            f"Budget per run: {s.get('budget_passes')} student image passes; {lr_text}; "
            f"up to {s.get('seeds')} seeds for core rows. Linear probe: fast protocol (L-BFGS on frozen "
            "features); kNN: k=200, t=0.1; both on the test set. "
            "Wall time: training + evaluation (over seeds: min-max)."
        )
        lines.append("")
    if table.get("rows"):
        lines += ["## Summary: both tracks", "", *render_summary(table), ""]
    for track, rows in table["rows"].items():
        by = {r["row"]: r for r in rows}
        title = {
            "full": "Full track: all 60,000 real images",
            "scarce": f"Scarce track: pretraining sees {SCARCE_IMAGES} real images (teacher trained on them)",
        }
        lines += [f"## {title.get(track, track)}", ""]
        for name, members in TABLES:
            lines += [
                f"### {name}",
                "",
                "| row | linear top-1 | kNN top-1 | wall (min) | lr | seeds | status | note |",
                "|---|---:|---:|---:|---:|---:|---|---|",
            ]
            for m in members:
                r = by.get(m, {"row": m})
                lines.append(
                    f"| {m} | {_cell(r.get('linear_top1'))} | {_cell(r.get('knn_top1'))} | "
                    f"{_wall_cell(r.get('wall_s'))} | {'-' if r.get('lr') is None else format(r['lr'], 'g')} | "
                    f"{len(r.get('seeds', []))} | {r.get('status', '-')} | {r.get('note', '')} |"
                )
            lines.append("")
        lines += render_sweeps(rows)
    lines += render_targets(table)
    t = table.get("teachers") or {}
    if t:
        lines += ["Teachers: " + "; ".join(f"{k}: {json.dumps(v)}" for k, v in t.items()), ""]
    for track, entries in (table.get("teacher_rows") or {}).items():
        lines += [
            f"Note: the {track} track's cells used {len(entries)} different teachers: "
            + "; ".join(
                f"{e['teacher'].get('spec')} (G_ema {e['teacher'].get('G_ema_sha256', '?')}, FD-ref "
                f"{e['teacher'].get('fd_ref', '?')}) for {', '.join(e['rows'])}"
                for e in entries
            )
            + ".",
            "",
        ]
    m = table.get("machine", {})
    lines.append(
        f"Machine: {m.get('platform')}, {m.get('cpus')} CPUs, torch {m.get('torch')}, load average at "
        f"write time {m.get('loadavg')}; commit {table.get('commit')}; written {table.get('created')}."
    )
    return "\n".join(lines) + "\n"


def render_sweeps(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: each row swept over more than one lr, its seed-0 held-out kNN (what picks the lr) and,
    for reading only, its seed-0 test linear top-1 at every lr."""
    swept = [r for r in rows if len(r.get("sweep") or {}) > 1]
    if not swept:
        return []
    lrs = sorted({float(lr) for r in swept for lr in r["sweep"]})
    lines = [
        "### Learning-rate sweeps (seed 0): held-out kNN top-1 (picks the lr) / test linear top-1",
        "",
        "| row | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
        "|---|" + "---:|" * len(lrs) + "---:|",
    ]
    for r in swept:
        cells = []
        for lr in lrs:
            key = f"{lr:g}"
            val, lin = r["sweep"].get(key), (r.get("sweep_linear") or {}).get(key)
            cell = "-" if val is None else f"{val:.2f}" + ("" if lin is None else f" / {lin:.2f}")
            cells.append(f"**{cell}**" if val is not None and lr == r.get("lr") else cell)
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['lr']:g} |")
    return lines + [""]


# The targets: SnS linear top-1 this many points above both VICReg-real and SimSiam-real.
TARGETS = {"full": 1.5, "scarce": 3.0}


def target_verdict(track: str, rows: list[dict[str, Any]]) -> tuple[list[str], str, bool] | None:
    """A track's SnS minus VICReg-real and SimSiam-real (linear top-1, means over seeds; '-' for a baseline not
    run), whether both meet the track's target ('yes', 'no', or '-' without both baselines) and whether that
    verdict rests on a partial row; None without SnS."""
    by = {r["row"]: r for r in rows}
    sns = (by.get("sns") or {}).get("linear_top1")
    if not sns:
        return None
    deltas = []
    for base in ("vicreg-real", "simsiam-real"):
        b = (by.get(base) or {}).get("linear_top1")
        deltas.append(None if not b else sns["mean"] - b["mean"])
    target = TARGETS.get(track)
    met = "-" if None in deltas or target is None else ("yes" if min(deltas) >= target else "no")
    partial = met != "-" and any(
        str((by.get(n) or {}).get("status", "")).startswith("partial") for n in ("sns", "vicreg-real", "simsiam-real")
    )
    return ["-" if d is None else f"{d:+.2f}" for d in deltas], met, partial


def render_targets(table: dict[str, Any]) -> list[str]:
    """Markdown lines: SnS minus each real-data SSL baseline (linear top-1, means over seeds) against the target."""
    lines = [
        "## Targets: SnS linear top-1 minus the real-data SSL baselines",
        "",
        "| track | target | SnS - VICReg-real | SnS - SimSiam-real | met |",
        "|---|---:|---:|---:|---|",
    ]
    any_row = False
    for track, rows in table["rows"].items():
        verdict = target_verdict(track, rows)
        if verdict is None:
            continue
        cells, met, partial = verdict
        lines.append(
            f"| {track} | +{TARGETS.get(track):g} | {cells[0]} | {cells[1]} | {met}"
            f"{' (partial rows)' if partial else ''} |"
        )
        any_row = True
    return lines + [""] if any_row else []


# The README's results table: these rows (the ones with a result on some track), both tracks side by side.
SUMMARY_ROWS = (
    "sns",
    "vicreg-real",
    "simsiam-real",
    "squeeze",
    "squeeze-bank",
    "sns-bank",
    "supervised",
    "random-init",
    "raw-pixels",
)
README_BEGIN = (
    "<!-- fashion-summary: begin (written by `sns bench fashion --mode full` from bench/results/fashion.json) -->"
)
README_END = "<!-- fashion-summary: end -->"


def render_summary(table: dict[str, Any]) -> list[str]:
    """Markdown lines: one table with the tracks side by side, for the summary rows that have a result:
    linear / kNN top-1 (mean ± std over seeds), lr and seed count per track, then the targets row."""
    tracks = list(table["rows"])
    by = {t: {r["row"]: r for r in table["rows"][t]} for t in tracks}
    title = {"full": "full track (60k real)", "scarce": f"scarce track ({SCARCE_IMAGES // 1000}k real)"}
    lines = [
        "| row | " + " | ".join(f"{title.get(t, t)}: linear / kNN | lr | seeds" for t in tracks) + " |",
        "|---|" + "---:|---:|---:|" * len(tracks),
    ]
    for name in SUMMARY_ROWS:
        cells = [by[t].get(name) or {} for t in tracks]
        if not any(c.get("linear_top1") for c in cells):
            continue
        out = []
        for c in cells:
            lin, knn = c.get("linear_top1"), c.get("knn_top1")
            out += (
                ["-", "", ""]
                if not lin
                else [f"{_cell(lin)} / {_cell(knn)}", "-" if c.get("lr") is None else f"{c['lr']:g}", str(lin["n"])]
            )
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    verdicts = [target_verdict(t, table["rows"][t]) for t in tracks]
    if any(verdicts):
        out = []
        for t, v in zip(tracks, verdicts):
            if v is None:
                out += ["-", "", ""]
                continue
            (vicreg, simsiam), met, partial = v
            word = {"yes": "met", "no": "not met"}.get(met, "no verdict") + ("; partial rows" if partial else "")
            out += [f"**{vicreg} / {simsiam}** (target +{TARGETS.get(t):g}: {word})", "", ""]
        lines.append("| **SnS - VICReg-real / SnS - SimSiam-real** | " + " | ".join(out) + " |")
    return lines


def sync_readme(readme: Path, table: dict[str, Any]) -> bool:
    """Rewrite the summary table between the README's fashion-summary markers; False (file untouched) when the
    README or its markers are absent."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return False
    block = "\n".join([README_BEGIN, *render_summary(table), README_END])
    new = text[:begin] + block + text[end + len(README_END) :]
    if new != text:
        readme.write_text(new)
    return True


# ------------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser(prog: str = "python bench/fashion.py") -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke version: tiny budgets, eval subsets (~10 min with "
        "bf16 hardware, ~1 h on an AVX2-only CPU); = --mode quick",
    )
    ap.add_argument(
        "--mode",
        choices=BASE_MODES,
        help="quick (smoke), sitting (1 epoch-equivalent per run, one "
        "lr, 2 seeds: ~2 h on 2 cores for the core rows), long (3 epoch-equivalents, one lr, one seed, kNN "
        "curves) or full (the default: 10 epochs, lr sweep, 3 seeds)",
    )
    ap.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bf16 (the tables' definition, the default), fp32 "
        "(a separate table, results and work folders *-fp32: for CPUs without bf16 hardware, where bf16 is "
        "emulated ~20x slower) or auto (bf16 where the CPU has it, else fp32); --mode quick is always auto",
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
    ap.add_argument("--progress", action="store_true", help="progress bars during training")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest on a shared CPU; 0 keeps torch's default)",
    )
    return ap


def main(argv: list[str] | None = None, prog: str = "python bench/fashion.py") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.list:
        for r in ROWS:
            print(f"{r.name:<18} {r.group:<10} {r.kind:<12} {' '.join(r.overrides):<40} {r.note}")
        return 0
    teachers = {}
    for item in args.teacher:
        track, sep, spec = item.partition("=")
        if not sep or track not in TRACKS or not spec:
            raise SnsError(f"--teacher {item!r}: expected TRACK=SPEC with TRACK one of {', '.join(TRACKS)}")
        teachers[track] = spec
    tracks = tuple(t.strip() for t in args.tracks.split(",") if t.strip())
    if args.quick and args.mode not in (None, "quick"):
        raise SnsError(f"--quick and --mode {args.mode} contradict each other; give one")
    lrs = None
    if args.lrs:
        try:
            lrs = tuple(float(x) for x in args.lrs.split(",") if x.strip())
        except ValueError:
            raise SnsError(f"--lrs {args.lrs!r}: expected a comma list of numbers, e.g. 0.1,0.3") from None
        if not lrs or any(not (0 < lr < 10) for lr in lrs):
            raise SnsError(f"--lrs {args.lrs!r}: expected learning rates in (0, 10)")
    run_bench(
        quick=args.quick,
        mode=args.mode,
        lrs=lrs,
        rows=args.rows,
        tracks=tracks,
        force=args.force,
        work=args.work,
        teachers=teachers,
        budget_minutes=args.budget_minutes,
        results_dir=args.results,
        progress=args.progress,
        threads=args.threads or None,
        precision=args.precision,
    )
    return 0


if __name__ == "__main__":
    from squeezespan.bench import run_script

    run_script(main)
