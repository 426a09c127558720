"""`sns eval`: evaluate backbones (exported, raw pixels, random init) with kNN and a linear probe, write JSON."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import SnsError

EVAL_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "data_root": None,
    "resolution": 32,
    "train_split": "train",
    "test_split": "test",
    "backbones": ["raw", "random"],  # exported backbone paths/run dirs, 'raw', 'random'
    "protocol": "fast",               # fast: linear probe on frozen features; paper: on augmented images
    "knn": True,
    "knn_k": 200,
    "knn_t": 0.1,
    "linear_epochs": 100,             # fast protocol
    "linear_lr": 0.1,
    "paper_epochs": 90,               # paper protocol (SGD lr 30, batch 256, cosine)
    "paper_lr": 30.0,
    "batch_size": 256,
    "arch": "resnet18",               # for the 'random' baseline
    "variant": "cifar",
    "width": 1.0,
    "bf16": False,
    "seed": 0,
    "device": "auto",
}


def resolve_backbone(spec: str, train, cfg: dict[str, Any], device):
    """(name, module, normalize_outside) for a --backbone value."""
    from ..export import load_backbone
    from .baselines import RawPixels, random_init_student

    if spec == "raw":
        return "raw pixels", RawPixels(train.channels, train.resolution), True
    if spec == "random":
        torch.manual_seed(cfg["seed"])
        m = random_init_student(cfg["arch"], cfg["variant"], cfg["width"], train.channels, seed=cfg["seed"])
        return f"random-init {cfg['arch']}", m, True
    path = Path(spec)
    if path.is_dir():
        path = path / "backbone.safetensors"
    backbone = load_backbone(path, device=device)  # normalises inside
    meta = getattr(backbone, "meta", {}) or {}
    if meta.get("in_channels") not in (None, train.channels):
        raise SnsError(f"--backbone {spec} expects {meta['in_channels']}-channel images but {cfg['data']} has "
                       f"{train.channels}")
    return f"{meta.get('method', 'backbone')} ({path.parent.name or path.stem})", backbone, False


def run_eval(cfg: dict[str, Any], run_dir: str | Path, progress: bool = True, log=print) -> list[dict[str, Any]]:
    from ..data import load_dataset
    from ..data.augment import Augment, AugmentConfig
    from ..engine.rundir import resolve_device, save_config
    from . import extract_features, knn_eval, linear_probe, linear_probe_augmented
    from .report import format_table

    device = resolve_device(cfg["device"])
    if cfg["protocol"] not in ("fast", "paper"):
        raise SnsError(f"protocol={cfg['protocol']!r} must be fast or paper")
    if not cfg["backbones"]:
        raise SnsError("no --backbone given (use a path, 'raw' or 'random')")
    train = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["train_split"], resolution=cfg["resolution"])
    test = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["test_split"], resolution=cfg["resolution"])
    backbones = [resolve_backbone(str(b), train, cfg, device) for b in cfg["backbones"]]
    save_config(run_dir, cfg)
    rows = []
    for name, model, norm in backbones:
        t0 = time.time()
        model = model.to(device)
        f_tr, y_tr = extract_features(model, train, device=device, bf16=cfg["bf16"], normalize=norm, progress=progress)
        f_te, y_te = extract_features(model, test, device=device, bf16=cfg["bf16"], normalize=norm, progress=progress)
        row: dict[str, Any] = {"backbone": name, "feature_dim": int(f_tr.shape[1])}
        if cfg["knn"]:
            row["knn"] = knn_eval(f_tr, y_tr, f_te, y_te, k=cfg["knn_k"], t=cfg["knn_t"])
        if cfg["protocol"] == "fast":
            row["linear"] = linear_probe(f_tr, y_tr, f_te, y_te, epochs=cfg["linear_epochs"], lr=cfg["linear_lr"],
                                         seed=cfg["seed"])
        else:
            crop = Augment(AugmentConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0), train.channels,
                           train.resolution).to(device)
            row["linear"] = linear_probe_augmented(model, train, test, crop, epochs=cfg["paper_epochs"],
                                                   lr=cfg["paper_lr"], device=device, bf16=cfg["bf16"],
                                                   seed=cfg["seed"], mean=train.mean if norm else None,
                                                   std=train.std if norm else None, progress=progress)
        row["time_s"] = round(time.time() - t0, 1)
        rows.append(row)
        log(f"{name}: " + ", ".join(f"{k} top1 {row[k]['top1']:.2f}" for k in ("knn", "linear") if k in row))
    result = {"data": cfg["data"], "protocol": cfg["protocol"], "train_size": len(train), "test_size": len(test),
              "results": rows}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2))
    log(format_table(rows))
    log(f"wrote {Path(run_dir) / 'eval.json'}")
    return rows
