"""Training for the Fashion-MNIST bench: its teachers (the committed ones, or trained and recorded now), the
evaluation data, and one cell run end to end (train or resume, export, kNN + linear probe)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench import common
from squeezespan import (
    SnsError,
    checkpointed_step,
    extract_features,
    knn_eval,
    linear_probe,
    load_backbone,
    load_dataset,
    pretrain,
)
from squeezespan.config import resolve_config
from squeezespan.eval import RawPixels, random_init_student
from squeezespan.gan import GAN_DEFAULTS, train_gan
from squeezespan.pretraining import real_subset

from . import cells, plan

# The teachers: `sns train-gan --preset gan-fashion-cpu` on the track's images, on the CPU.
GAN_PRESET = "gan-fashion-cpu"
# The scarce-track teacher (2,000 images): as long as the committed full-track one (its best FD-ref snapshot was
# at 60 kimg), FD-ref every 20 kimg picks the snapshot; 75 minutes is room for 60 kimg at one thread.
GAN_SCARCE = ("kimg=60", "max_minutes=75")
GAN_QUICK = (
    "kimg=2",
    "max_minutes=4",
    "fd_ref_kimg=0",
    "ckpt_every=63",  # iterations: 1 kimg at the preset's batch_size 16
    "sample_kimg=1",
    "teacher_pick=last",
    "bf16=auto",
)


def scarce_dataset(train):
    """The 2,000 real images the scarce track pretrains on: the engine's own fixed choice (real_subset)."""
    return train.subset(real_subset({"real_subset": plan.SCARCE_IMAGES}, len(train)))


def _teacher_dirs(track: str, mode: str, work: Path) -> tuple[Path, Path]:
    """Where a track's teacher is committed, and the run directory in ``work`` that trains it."""
    quick = "-quick" if mode == "quick" else ""
    return common.RESULTS / "teachers" / f"fashion-{track}", work / "teachers" / f"fashion-{track}{quick}"


def find_teacher(track: str, mode: str, work: Path, given: str | None) -> str | None:
    """The teacher spec ``ensure_teacher`` would use without training one: the given one, the committed one or a
    finished one in ``work``; None when one is still to train."""
    if given:
        return given
    quick = mode == "quick"
    committed, run_dir = _teacher_dirs(track, mode, work)
    if not quick and (committed / "teacher.json").exists():
        return str(committed)
    if (run_dir / "teacher" / "teacher.json").exists() and (run_dir / "summary.json").exists():
        stopped = json.loads((run_dir / "summary.json").read_text()).get("stopped_by_time")
        if quick or not stopped:  # a full-mode teacher stopped by max_minutes continues in the next sitting
            return str(run_dir)
    return None


def ensure_teacher(track: str, mode: str, work: Path, given: str | None, log: Callable) -> str:
    """A teacher spec for ``track``: the given one, the committed one, or one trained now (and recorded)."""
    found = find_teacher(track, mode, work, given)
    if found:
        return found
    quick = mode == "quick"
    committed, run_dir = _teacher_dirs(track, mode, work)
    overrides = ["device=cpu", *(GAN_QUICK if quick else ())]
    if plan.split_mode(mode)[1]:
        overrides.append("bf16=false")
    if track == "scarce":
        overrides.append("ada_target=0.6")  # 2,000 images: D overfits without adaptive augmentation (ADA)
        if not quick:
            overrides += list(GAN_SCARCE)
    cfg = resolve_config(GAN_DEFAULTS, "gan", GAN_PRESET, None, overrides, {"data": plan.DATA})
    train = load_dataset(plan.DATA, split="train", resolution=cfg["resolution"])
    dataset = scarce_dataset(train) if track == "scarce" else train
    log(f"training the {track} teacher ({len(dataset)} images, preset {GAN_PRESET}) in {run_dir}")
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = train_gan(cfg, run_dir, resume=resume, progress=False, dataset=dataset, log=log)
    if summary.get("interrupted"):  # a signal: checkpointed, nothing exported; never commit a half-trained teacher
        raise SnsError(f"the {track} teacher in {run_dir} was interrupted; run the same command again to continue it")
    if quick:
        return str(run_dir)
    if summary.get("stopped_by_time"):
        raise SnsError(
            f"the {track} teacher in {run_dir} stopped at its max_minutes ({summary.get('kimg')} kimg); "
            "run the same command again to continue it (rows without a teacher can run meanwhile: "
            "--rows vicreg-real,simsiam-real,supervised,random-init,raw-pixels)"
        )
    # committed with the results (G_ema + D + json, a few MB) so the table can be rebuilt against it
    committed.mkdir(parents=True, exist_ok=True)
    for f in (run_dir / "teacher").iterdir():
        if f.suffix in (".json", ".safetensors") and f.name != "G.safetensors":
            shutil.copy2(f, committed / f.name)
    shutil.copy2(run_dir / "summary.json", committed / "summary.json")
    return str(committed)


@dataclass
class EvalData:
    train: Any
    test: Any
    val_idx: torch.Tensor  # positions in `train` held out for choosing the lr (never the test set)
    settings: dict[str, Any] = field(default_factory=dict)


def eval_data(mode: str) -> EvalData:
    """The mode's evaluation sets (fixed subsets in --quick) and the held-out train images that pick the lr."""
    settings = plan.mode_settings(mode)
    train = load_dataset(plan.DATA, split="train", resolution=32)
    test = load_dataset(plan.DATA, split="test", resolution=32)
    g = torch.Generator().manual_seed(0)
    if settings["eval_train"]:
        train = train.subset(torch.randperm(len(train), generator=g)[: settings["eval_train"]])
    if settings["eval_test"]:
        test = test.subset(torch.randperm(len(test), generator=g)[: settings["eval_test"]])
    val_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: settings["val_images"]]
    recorded = {
        "train_images": len(train),
        "test_images": len(test),
        "val_images": len(val_idx),
        "features_bf16": bool(settings["eval_bf16"]),
        "knn": {"k": 200, "t": 0.1},
        "linear": {"protocol": "fast", "solver": "lbfgs", "epochs": 100},
    }
    return EvalData(train, test, val_idx, recorded)


def evaluate_backbone(backbone, ev: EvalData, normalize: bool) -> dict[str, Any]:
    """kNN and fast linear probe on the test set, plus kNN on the held-out train images (for the lr choice)."""
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


def cell_dir(work: Path, track: str, row: plan.Row, lr: float, seed: int) -> Path:
    """The run directory of one trained cell: ``<work>/<track>/<row>/lr<lr>-s<seed>``."""
    return Path(work) / track / row.name / f"lr{lr:g}-s{seed}"


def run_one(
    row: plan.Row,
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
    t0, earlier_s = time.time(), 0.0
    out: dict[str, Any] = {}
    if row.kind == "raw":
        out.update(evaluate_backbone(RawPixels(1, 32), ev, normalize=True))
    elif row.kind == "random":
        base = plan.resolve_run_config(plan.ROW_BY_NAME["vicreg-real"], track, 0.1, seed, "full")
        m = random_init_student(base["arch"], base["variant"], base["width"], in_channels=1, seed=seed)
        out.update(evaluate_backbone(m, ev, normalize=True))
    else:
        run_dir = cell_dir(work, track, row, lr, seed)
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        resume = checkpointed_step(run_dir) is not None
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            log(f"  resuming {run_dir}")
        # the supervised row too: method=supervised trains the student + a linear head with cross-entropy
        summary = pretrain(cfg, run_dir, resume=resume, progress=progress, log=log)
        if summary.get("interrupted"):
            return None
        # a resumed cell's wall time also counts the training of its earlier segments (their checkpoints carry it)
        earlier_s = summary["train_time_s"] - summary.get("segment_time_s", summary["train_time_s"])
        out.update(
            steps=summary["steps"],
            train_time_s=round(summary["train_time_s"], 1),
            run_dir=str(run_dir),
            knn_monitor=cells.monitor_curve(run_dir),
        )
        out.update(evaluate_backbone(load_backbone(run_dir / "backbone.safetensors"), ev, normalize=False))
    out["wall_s"] = round(time.time() - t0 + earlier_s, 1)
    return out
