"""The teacher-directory format: our StyleGAN2 G, G_ema and D as safetensors plus teacher.json.

A teacher directory (what `sns train-gan` exports into RUN/teacher/) holds G.safetensors, G_ema.safetensors,
D.safetensors and teacher.json: the format tag, the official-style constructor kwargs of both networks and
free-form metadata (dataset, kimg, FD-ref, the training config). teacher.json is written last, so a directory
with one is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import SnsError
from ..files import atomic_write_bytes, safetensors_bytes, write_json
from .stylegan2 import Discriminator, Generator

TEACHER_FORMAT = "squeezespan-teacher/1"

__all__ = ["TEACHER_FORMAT", "build_networks", "load_teacher_dir", "network_kwargs", "save_teacher_dir"]


# ------------------------------------------------------------------------------------------------ networks


def network_kwargs(cfg: dict[str, Any], img_channels: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Official-style constructor kwargs (Generator(**G_kwargs), Discriminator(**D_kwargs)) from a config."""
    G_kwargs = dict(
        z_dim=int(cfg["z_dim"]),
        c_dim=0,
        w_dim=int(cfg["w_dim"]),
        img_resolution=int(cfg["resolution"]),
        img_channels=int(img_channels),
        mapping_kwargs=dict(num_layers=int(cfg["mapping_layers"]), lr_multiplier=float(cfg["mapping_lr_mult"])),
        synthesis_kwargs=dict(
            channel_base=int(cfg["channel_base"]),
            channel_max=int(cfg["channel_max"]),
            conv_clamp=cfg["conv_clamp"],
            architecture=cfg["g_architecture"],
        ),
    )
    D_kwargs = dict(
        c_dim=0,
        img_resolution=int(cfg["resolution"]),
        img_channels=int(img_channels),
        architecture=cfg["d_architecture"],
        channel_base=int(cfg["channel_base"]),
        channel_max=int(cfg["channel_max"]),
        conv_clamp=cfg["conv_clamp"],
        epilogue_kwargs=dict(mbstd_group_size=int(cfg["mbstd_group_size"])),
    )
    return G_kwargs, D_kwargs


def build_networks(G_kwargs: dict[str, Any], D_kwargs: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """Our StyleGAN2 (G, D) from official-style constructor kwargs."""
    return Generator(**G_kwargs), Discriminator(**D_kwargs)


# -------------------------------------------------------------------------------------------- teacher dirs


def _save_safetensors(module: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(state, metadata={"squeezespan": json.dumps(meta)}))


def save_teacher_dir(
    path: str | Path,
    G: nn.Module,
    G_ema: nn.Module,
    D: nn.Module,
    G_kwargs: dict[str, Any],
    D_kwargs: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write G/G_ema/D as safetensors plus teacher.json (constructor kwargs + meta); teacher.json goes last."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    info = {"format": TEACHER_FORMAT, "arch": "stylegan2", "G_kwargs": G_kwargs, "D_kwargs": D_kwargs, **meta}
    for name, module in (("G", G), ("G_ema", G_ema), ("D", D)):
        _save_safetensors(module, path / f"{name}.safetensors", {"network": name, "format": TEACHER_FORMAT})
    write_json(path / "teacher.json", info)
    return path


def load_teacher_dir(
    path: str | Path, device: str | torch.device = "cpu", generator: str = "G_ema"
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(G_ema, D, meta) rebuilt from a teacher directory (or a run dir holding teacher/, or its teacher.json).

    Both networks come back in eval mode with requires_grad off (teachers are frozen); ``generator="G"``
    loads the raw generator instead of the EMA one.
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.parent
    if not (path / "teacher.json").exists() and (path / "teacher" / "teacher.json").exists():
        path = path / "teacher"
    meta_path = path / "teacher.json"
    if not meta_path.exists():
        raise SnsError(
            f"teacher directory {path} has no teacher.json; point at a `sns train-gan` run dir or its teacher/ folder"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise SnsError(f"{meta_path} cannot be read as JSON ({type(e).__name__}); re-export the teacher") from None
    if not isinstance(meta, dict):
        raise SnsError(f"{meta_path} holds a JSON {type(meta).__name__}, expected an object; re-export the teacher")
    if meta.get("format") != TEACHER_FORMAT:
        raise SnsError(f"{meta_path}: format {meta.get('format')!r} is not {TEACHER_FORMAT!r}")
    if generator not in ("G", "G_ema"):
        raise SnsError(f"generator={generator!r}: expected 'G_ema' or 'G'")
    bad = [k for k in ("G_kwargs", "D_kwargs") if not isinstance(meta.get(k), dict)]
    if bad:
        raise SnsError(f"{meta_path}: {', '.join(bad)} missing or not an object; re-export the teacher")
    try:
        G, D = build_networks(meta["G_kwargs"], meta["D_kwargs"])
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as e:  # kwargs of another shape
        problem = " ".join(str(e).split())[:200]
        raise SnsError(f"{meta_path}: its network kwargs do not build a StyleGAN2 ({problem}); re-export") from None
    for name, module in ((generator, G), ("D", D)):
        file = path / f"{name}.safetensors"
        try:
            state = load_file(str(file))
        except FileNotFoundError:
            raise SnsError(f"teacher directory {path} lacks {file.name}; re-export the teacher") from None
        except Exception as e:  # noqa: BLE001 - a damaged file is the user's problem to fix, not a traceback
            raise SnsError(f"{file} cannot be read ({type(e).__name__}); it is damaged or not safetensors") from None
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0][:200]
            raise SnsError(f"{file} does not match the networks described in {meta_path}: {first}") from None
    for module in (G, D):
        module.to(device).eval().requires_grad_(False)
    return G, D, meta
