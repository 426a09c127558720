"""`sns eval`: evaluate backbones (exported, raw pixels, random init) with kNN and a linear probe, write JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..engine.device import resolve_bf16, resolve_device
from ..engine.run import save_config
from ..errors import SnsError
from ..export import load_backbone
from ..models import ARCHS
from . import KNN_CAP_FRACTION, PROTOCOLS, evaluate, format_table
from .baselines import random_init_student
from .disc import disc_backbone

EVAL_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "data_root": None,
    "resolution": 32,
    "train_split": "train",
    "test_split": "test",
    "backbones": ["raw", "random"],  # exported backbone paths/run dirs, 'raw', 'random', disc:TEACHER[:multi]
    "protocol": "fast",  # fast: linear probe on frozen features; paper: on augmented images
    "knn": True,
    "knn_k": 200,  # neighbours per vote, capped by knn_cap (CIFAR-scale banks keep 200)
    "knn_t": 0.1,
    "knn_cap": KNN_CAP_FRACTION,  # k <= floor(knn_cap x the bank's smallest class); 0 = no cap (eval/knn.py)
    "linear_epochs": 100,  # fast protocol: L-BFGS iterations on standardised frozen features
    "paper_epochs": 90,  # paper protocol (SGD lr 30, batch 256, cosine)
    "paper_lr": 30.0,
    "batch_size": 256,
    "arch": "resnet18",  # for the 'random' baseline: resnet18/34/50, timm:NAME or package.module:factory
    "arch_kwargs": None,
    "variant": "cifar",
    "width": 1.0,
    "bf16": False,
    "seed": 0,
    "device": "auto",
}


def resolve_backbone(spec: str, train, cfg: dict[str, Any], device):
    """(name, module or None for raw pixels, normalize_outside) for a --backbone value."""
    if spec == "raw":
        return "raw pixels", None, True
    if spec == "random":
        m = random_init_student(
            cfg["arch"],
            cfg["variant"],
            cfg["width"],
            train.channels,
            seed=cfg["seed"],
            arch_kwargs=cfg.get("arch_kwargs"),
            resolution=cfg["resolution"],
        )
        return f"random-init {cfg['arch']}" + (f" x{cfg['width']:g}" if cfg["arch"] in ARCHS else ""), m, True
    if spec.startswith("disc:"):  # disc:TEACHER[:single|:multi], the teacher's D used directly (Table 1)
        return (*disc_backbone(spec, train.channels, device), False)  # takes [0, 1] images
    path = Path(spec)
    if path.is_dir() and (path / "backbone.safetensors").exists():
        path = path / "backbone.safetensors"  # a `sns pretrain` run dir
    backbone = load_backbone(path, device=device)  # normalises inside
    meta = backbone.meta
    if meta.get("in_channels") not in (None, train.channels):
        raise SnsError(
            f"--backbone {spec} expects {meta['in_channels']}-channel images but {cfg['data']} has {train.channels}"
        )
    label = path.parent.name if path.suffix in (".safetensors", ".json") else path.name
    method = meta.get("method") or "backbone"
    return (method if label == method else f"{method} ({label})"), backbone, False


def run_eval(cfg: dict[str, Any], run_dir: str | Path, progress: bool = True, log=print) -> list[dict[str, Any]]:
    """Evaluate every backbone of ``cfg['backbones']``; writes <run_dir>/eval.json and prints a table."""
    device = resolve_device(cfg["device"])
    cfg = dict(cfg, bf16=resolve_bf16(cfg["bf16"], device, log))
    if cfg["protocol"] not in PROTOCOLS:
        raise SnsError(f"--protocol {cfg['protocol']!r} must be one of {', '.join(PROTOCOLS)}")
    if not cfg["backbones"]:
        raise SnsError("no --backbone given (use an exported backbone or run dir, 'raw' or 'random')")
    train = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["train_split"], resolution=cfg["resolution"])
    test = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["test_split"], resolution=cfg["resolution"])
    backbones = [resolve_backbone(str(b), train, cfg, device) for b in cfg["backbones"]]
    save_config(run_dir, cfg)
    if cfg["protocol"] == "fast":
        linear_kw = {"epochs": cfg["linear_epochs"]}
    else:
        linear_kw = {"epochs": cfg["paper_epochs"], "lr": cfg["paper_lr"]}
    rows = []
    for name, model, norm in backbones:
        row = evaluate(
            model,
            train,
            test,
            protocol=cfg["protocol"],
            knn=cfg["knn"],
            name=name,
            device=device,
            bf16=cfg["bf16"],
            batch_size=cfg["batch_size"],
            k=cfg["knn_k"],
            t=cfg["knn_t"],
            knn_cap=cfg["knn_cap"],
            linear_kw=linear_kw,
            seed=cfg["seed"],
            normalize=norm,
            progress=progress,
        )
        rows.append(row)
        log(f"{name}: " + ", ".join(f"{k} top-1 {row[k]['top1']:.2f}" for k in ("knn", "linear") if row.get(k)))
    result = {"data": cfg["data"], "protocol": cfg["protocol"], "bf16": bool(cfg["bf16"]), "results": rows}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2))
    log(format_table(rows))
    log(f"wrote {Path(run_dir) / 'eval.json'}")
    return rows
