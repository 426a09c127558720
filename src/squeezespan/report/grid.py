"""Sample grids: a batch of [0, 1] images written as one PNG."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import torch
from PIL import Image

from ..errors import SnsError
from ..files import atomic_write_bytes


def make_image_grid(images01: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') image with ``nrow`` images per row, C in {1, 3}."""
    if images01.ndim != 4 or images01.shape[1] not in (1, 3):
        raise SnsError(f"image grid expects (N, 1|3, H, W) images, got shape {tuple(images01.shape)}")
    x = images01.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    ncol = max(1, min(nrow, n))
    nrows = max(1, math.ceil(n / ncol))
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), float(pad_value))
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def save_image_grid(
    images01: torch.Tensor, path: str | os.PathLike, nrow: int = 8, scale: int = 1, padding: int = 2
) -> Path:
    """Write ``images01`` as a PNG grid (``nrow`` per row, each pixel ``scale`` x ``scale``); atomic write."""
    grid = make_image_grid(images01, nrow=nrow, padding=padding)
    if scale > 1:
        grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    arr = (grid * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # uint8 2-D -> "L", HxWx3 -> "RGB"
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
