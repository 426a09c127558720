"""Checkpoints of a run: atomic, checksummed writes, verified loads, fallback to the last good one."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import SnsError
from ..files import atomic_write_bytes

CKPT_PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")
MAGIC = b"SNSCKPT1"  # 8-byte magic + 32-byte sha256 of the payload, then the torch.save payload


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically save ``state`` (tensors, numbers, strings, nested dicts/lists) with a sha256 checksum."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint; raises SnsError if it is missing, truncated or corrupted."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnsError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise SnsError(f"checkpoint {path} cannot be read: {e.strerror}") from None
    if len(raw) < 40 or raw[:8] != MAGIC:
        raise SnsError(f"checkpoint {path} is not a squeezespan checkpoint (bad header; truncated or another format)")
    payload = raw[40:]
    if hashlib.sha256(payload).digest() != raw[8:40]:
        raise SnsError(f"checkpoint {path} is corrupted or truncated (checksum mismatch)")
    try:
        # weights_only: a checkpoint can never execute code on load.
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad file for the user
        raise SnsError(f"checkpoint {path} cannot be decoded: {type(e).__name__}") from None


def _steps_and_paths(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of each checkpoint in ``ckpt_dir``, the step read from its name, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_PATTERN.match(p.name)))


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``ckpt_dir`` sorted by step, oldest first."""
    return [p for _, p in _steps_and_paths(ckpt_dir)]


def checkpointed_step(run_dir: str | os.PathLike) -> int | None:
    """The step a ``--resume`` of ``run_dir`` would start near: that of its newest checkpoint, read from the file
    name (``checkpoints/ckpt-<step>.pt``; the file is neither loaded nor verified). None if it has no checkpoint."""
    found = _steps_and_paths(Path(run_dir) / "checkpoints")
    return found[-1][0] if found else None


def checkpoint_path(ckpt_dir: str | os.PathLike, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt-{step:08d}.pt"


def load_latest(ckpt_dir: str | os.PathLike, map_location="cpu", warn=print) -> tuple[dict[str, Any], Path] | None:
    """Newest checkpoint that verifies; corrupted newer ones are reported and skipped."""
    for p in reversed(list_checkpoints(ckpt_dir)):
        try:
            return load_checkpoint(p, map_location), p
        except SnsError as e:
            warn(f"warning: {e}; falling back to the previous checkpoint")
    return None


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep >= 1: a good one always stays)."""
    ckpts = list_checkpoints(ckpt_dir)
    for p in ckpts[: max(0, len(ckpts) - max(1, keep))]:
        try:
            p.unlink()
        except OSError:
            pass


def remove_stale_temporaries(ckpt_dir: str | os.PathLike) -> None:
    """Delete the temporary files of writes that never finished (a run killed while saving)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return
    for p in d.glob(".ckpt-*.pt.tmp-*"):
        try:
            p.unlink()
        except OSError:
            pass
