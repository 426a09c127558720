"""Run directories: refuse to clobber, record the resolved config, pick the device."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import SnsError


def prepare_run_dir(out: str | os.PathLike, resume: bool = False, force: bool = False) -> Path:
    """Create ``out``; a non-empty one is refused unless resuming (keep it) or forcing (reuse it)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SnsError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (resume or force):
        raise SnsError(f"--out {path} is not empty; pass --resume to continue that run or --force to start over in it")
    if resume and not (path.is_dir() and any(path.iterdir())):
        raise SnsError(f"--resume given but --out {path} holds no run to resume")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SnsError(f"--out {path} is not writable: {e.strerror}") from None
    return path


def save_config(run_dir: str | os.PathLike, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
    from .checkpoint import atomic_write_bytes

    p = Path(run_dir) / name
    atomic_write_bytes(p, yaml.safe_dump(cfg, sort_keys=False).encode())
    return p


def resolve_device(spec: str | None) -> torch.device:
    """'auto' -> cuda if available else cpu; an unavailable device is a clear error."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise SnsError(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SnsError(f"--device {spec} requested but no CUDA GPU is available; use --device cpu")
    return dev


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on the run's device (CPU with AVX-512 BF16 trains ~2.6x faster), or a no-op."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(bf16))
