"""Evaluation of a frozen backbone: kNN monitor + linear probe (fast or paper protocol), results table."""

from __future__ import annotations

import copy
import inspect
import time
from typing import Callable

import torch

from ..data import ImageDataset
from ..errors import SnsError
from .baselines import RawPixels, random_init_student
from .features import extract_features, iter_batches
from .knn import KNN_CAP_FRACTION, capped_k, knn_eval, knn_predict, knn_settings, topk_accuracy
from .linear import CropFlip, linear_probe, linear_probe_augmented

__all__ = [
    "evaluate",
    "format_table",
    "extract_features",
    "iter_batches",
    "knn_eval",
    "knn_predict",
    "knn_settings",
    "capped_k",
    "KNN_CAP_FRACTION",
    "topk_accuracy",
    "linear_probe",
    "linear_probe_augmented",
    "CropFlip",
    "RawPixels",
    "random_init_student",
    "PROTOCOLS",
]

PROTOCOLS = ("fast", "paper")


def evaluate(
    backbone,
    train_ds,
    test_ds,
    protocol: str = "fast",
    knn: bool = True,
    linear: bool = True,
    *,
    name: str | None = None,
    device=None,
    bf16: bool = False,
    batch_size: int = 256,
    k: int = 200,
    t: float = 0.1,
    knn_cap: float = 0.0,
    linear_kw: dict | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    normalize: bool = True,
    num_workers: int = 0,
    progress: bool = False,
) -> dict:
    """Score ``backbone`` (None = raw pixels) with kNN and a linear probe; return a JSON-ready results dict.

    ``protocol="fast"`` trains the probe on pre-computed features (:func:`linear_probe`, seconds);
    ``"paper"`` trains it on freshly augmented images every epoch (:func:`linear_probe_augmented`, the
    reference numbers' protocol, needs a backbone pass per image per epoch). kNN votes with ``k`` neighbours
    (capped by ``knn_cap`` x the bank's smallest class when ``knn_cap`` > 0: `sns eval` passes KNN_CAP_FRACTION)
    and temperature ``t``; its result names the k used, t and the rule. ``linear_kw`` overrides the
    chosen probe's keyword defaults. Unlabelled train images (label -1, e.g. STL-10's) are left out.
    ``normalize=False`` feeds float [0, 1] images to a backbone that normalises inside (an exported one).
    """
    if protocol not in PROTOCOLS:
        raise SnsError(f"eval protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if backbone is None:
        backbone = RawPixels(train_ds.channels, train_ds.resolution)
        name = name or "raw-pixels"
    name = name or type(backbone).__name__
    train_ds = _labelled_only(train_ds)
    num_classes = getattr(train_ds, "num_classes", None) or None
    seconds = {}
    result = {
        "name": name,
        "protocol": protocol if linear else None,
        "train": _describe(train_ds),
        "test": _describe(test_ds),
        "bf16": bool(bf16),  # the features' precision (kNN and the fast probe)
        "knn": None,
        "linear": None,
    }
    start = time.perf_counter()
    run_kw = dict(device=device, bf16=bf16, normalize=normalize, num_workers=num_workers, progress=progress)
    feats = None
    if knn or (linear and protocol == "fast"):
        feats = _features(backbone, train_ds, test_ds, batch_size=batch_size, **run_kw)
        result["feature_dim"] = int(feats[0].shape[1])
        seconds["features"] = time.perf_counter() - start
    if knn:
        tick = time.perf_counter()
        acc = knn_eval(*feats, k=k, t=t, num_classes=num_classes, cap=knn_cap)
        result["knn"] = dict(acc, **knn_settings(k, t, feats[1], knn_cap))
        seconds["knn"] = time.perf_counter() - tick
    if linear:
        tick = time.perf_counter()
        result["linear"] = _probe(
            protocol,
            backbone,
            train_ds,
            test_ds,
            feats,
            linear_kw,
            augment=augment,
            seed=seed,
            batch_size=batch_size,
            num_classes=num_classes,
            **run_kw,
        )
        seconds["linear"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start
    result["seconds"] = seconds
    return result


def _features(backbone, train_ds, test_ds, **feat_kw) -> tuple[torch.Tensor, ...]:
    """(train features, train labels, test features, test labels), unlabelled train rows left out."""
    train_f, train_y = extract_features(backbone, train_ds, **feat_kw)
    test_f, test_y = extract_features(backbone, test_ds, **feat_kw)
    keep = train_y >= 0  # a streamed dataset cannot be subset before extraction
    return train_f[keep], train_y[keep], test_f, test_y


def _probe(
    protocol, backbone, train_ds, test_ds, feats, linear_kw, *, augment, seed, batch_size, num_classes, **run_kw
) -> dict:
    """The linear probe of ``protocol`` (on ``feats`` or on augmented images) and the settings it ran with."""
    kw = dict(linear_kw or {})
    kw.setdefault("seed", seed)
    if protocol == "fast":
        probe = linear_probe(*feats, num_classes=num_classes, **kw)
        return dict(probe, **_settings(linear_probe, kw))
    if augment is None:
        augment = CropFlip(generator=torch.Generator().manual_seed(seed))
    kw.setdefault("batch_size", batch_size)
    probe = linear_probe_augmented(backbone, train_ds, test_ds, augment, num_classes=num_classes, **run_kw, **kw)
    return dict(probe, **_settings(linear_probe_augmented, kw))


def _labelled_only(ds):
    """The dataset without its unlabelled (-1) images; in-memory datasets are subset before extraction."""
    labels = getattr(ds, "labels", None)
    if labels is None or bool((labels >= 0).all()):
        return ds
    keep = torch.nonzero(labels >= 0).flatten()
    if keep.numel() == 0:
        raise SnsError(
            f"dataset {getattr(ds, 'name', '')!r} split {getattr(ds, 'split', '')!r} has no "
            "labelled images; evaluate on a labelled split (e.g. train, test)"
        )
    if isinstance(ds, ImageDataset):
        # take() reads only the labelled rows, so STL-10's 100k unlabelled images are never decoded
        return ds.subset(keep)
    if isinstance(getattr(ds, "images", None), torch.Tensor):
        view = copy.copy(ds)
        view.images, view.labels = ds.images[keep], labels[keep]
        return view
    return ds  # streamed: unlabelled features are dropped after extraction


def _settings(probe: Callable, overrides: dict) -> dict:
    """The probe's effective plain-valued keyword settings, so a results file says how it was made."""
    params = inspect.signature(probe).parameters.values()
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    out.update(overrides)
    return {
        key: value
        for key, value in out.items()
        if key in ("epochs", "lr", "batch_size", "weight_decay", "momentum", "seed", "solver")
    }


def _describe(ds) -> dict:
    return {"dataset": getattr(ds, "name", None), "split": getattr(ds, "split", None), "n": len(ds)}


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`evaluate` results: one line per row, accuracies in %."""
    header = ["name", "protocol", "kNN top-1", "kNN top-5", "linear top-1", "linear top-5", "time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
    for row in rows:
        knn, lin = row.get("knn") or {}, row.get("linear") or {}
        total = (row.get("seconds") or {}).get("total", row.get("time_s"))
        cells = [
            str(row.get("name", row.get("backbone", ""))),
            str(row.get("protocol") or "-"),
            _pct(knn.get("top1")),
            _pct(knn.get("top5")),
            _pct(lin.get("top1")),
            _pct(lin.get("top5")),
            "-" if total is None else f"{total:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
