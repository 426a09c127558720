"""Pixel helpers on uint8 image tensors: resize, channel conversion, per-channel statistics, normalize."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import SnsError

# Elements per chunk when converting images to float/int64: bounds peak memory on 100k-image sets.
_CHUNK_ELEMENTS = 1 << 22

# Smallest std a consumer divides by: a channel that never changes (std 0) is valid data, and since x - mean
# is then 0 on it, any positive divisor works; one grey level keeps every other input finite.
STD_FLOOR = 1.0 / 255.0

# ITU-R 601-2 luma, the same weights PIL uses for mode "L", so folder and tensor data agree.
_LUMA = (0.299, 0.587, 0.114)


def _chunk(images: torch.Tensor) -> int:
    per_image = max(1, images[0].numel()) if images.shape[0] else 1
    return max(1, _CHUNK_ELEMENTS // per_image)


def resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (N, C, resolution, resolution) with bilinear interpolation.

    Downsampling uses torch's antialiased bilinear filter (as PIL does), upsampling plain bilinear with
    align_corners=False. torch's native uint8 kernel is used (about 10x faster than going through float,
    which matters for lazily resized STL-10 batches; results agree with the float path to +-1 level);
    torch builds without it fall back to float and rounding. A no-op when the size already matches.
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = torch.empty((images.shape[0], images.shape[1], resolution, resolution), dtype=torch.uint8)
    step = _chunk(images)
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step]
        try:
            out[start : start + step] = F.interpolate(
                chunk, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
            )
        except (RuntimeError, NotImplementedError):
            resized = F.interpolate(
                chunk.float(), size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
            )
            out[start : start + step] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) between 1 (grey) and 3 (RGB) channels; grey -> RGB repeats, RGB -> grey is luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        out = torch.empty((images.shape[0], 1) + tuple(images.shape[2:]), dtype=torch.uint8)
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        step = _chunk(images)
        for start in range(0, images.shape[0], step):
            grey = (images[start : start + step].float() * weights).sum(1, keepdim=True)
            out[start : start + step] = grey.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise SnsError(f"channels={channels}: cannot convert {have}-channel images; use channels 1 or 3")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 (N, C, H, W) images, in [0, 1] units.

    Sums are accumulated exactly in int64 chunk by chunk, so the result does not depend on chunking
    and large sets never need a float copy.
    """
    if images.shape[0] == 0:
        raise SnsError("cannot compute mean/std of an empty image set")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    step = _chunk(images)
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step].to(torch.int64)
        total += chunk.sum(dim=(0, 2, 3)).double()
        total_sq += (chunk * chunk).sum(dim=(0, 2, 3)).double()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    mean01 = tuple(float(m) / 255.0 for m in mean)
    std01 = tuple(float(s) / 255.0 for s in var.sqrt())
    return mean01, std01


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Return (x - mean) / std per channel for float images in [0, 1], shape (N, C, H, W) or (C, H, W).

    A std of 0 (a constant channel) divides by STD_FLOOR instead.
    """
    if not torch.is_floating_point(x):
        raise SnsError(f"normalize expects float images in [0, 1], got dtype {x.dtype}; divide uint8 by 255 first")
    channels = x.shape[-3] if x.dim() >= 3 else -1
    if len(mean) != channels or len(std) != channels:
        raise SnsError(
            f"normalize: mean/std have {len(mean)}/{len(std)} values but the images have "
            f"{channels} channels; use the dataset's own mean/std"
        )
    if any(not float(s) >= 0 for s in std):
        raise SnsError(f"normalize: std must be >= 0, got {tuple(std)}")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1).clamp_min(STD_FLOOR)
    return (x - m) / s
