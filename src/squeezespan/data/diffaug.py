"""Differentiable augmentation for GAN training on small data (DiffAugment colour/translation/cutout, per sample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SnsError

OPS = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'color,translation,cutout' -> ('color', 'translation', 'cutout'); '' / None / 'none' -> ()."""
    if policy is None:
        return ()
    names = tuple(p.strip() for p in str(policy).split(",") if p.strip() and p.strip().lower() != "none")
    bad = [n for n in names if n not in OPS]
    if bad:
        raise SnsError(
            f"diffaug policy {policy!r} has unknown op(s) {bad}; use a comma list of {', '.join(OPS)} or 'none'"
        )
    return names


def _uniform(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=x.device, dtype=torch.float32, generator=generator)


def _apply_mask(n: int, p: float, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Which samples this op touches; drawn even when p == 1 so the RNG stream does not depend on p.
    return _uniform(n, x, generator) < p


def augment_color(x: torch.Tensor, p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) on [-1, 1] images, per sample."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    on = _apply_mask(n, p, x, generator).view(shape)
    brightness = torch.where(on, _uniform(n, x, generator).view(shape) - 0.5, torch.zeros(shape, device=x.device))
    x = x + brightness.to(x.dtype)
    on = _apply_mask(n, p, x, generator).view(shape)
    saturation = torch.where(on, _uniform(n, x, generator).view(shape) * 2.0, torch.ones(shape, device=x.device))
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * saturation.to(x.dtype) + mean_c
    on = _apply_mask(n, p, x, generator).view(shape)
    contrast = torch.where(on, _uniform(n, x, generator).view(shape) + 0.5, torch.ones(shape, device=x.device))
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_all) * contrast.to(x.dtype) + mean_all


def augment_translation(
    x: torch.Tensor, ratio: float = 0.125, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y (integer pixels), filling with zeros."""
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sy == 0 and sx == 0:
        return x
    on = _apply_mask(n, p, x, generator)
    ty = torch.randint(-sy, sy + 1, (n,), device=x.device, generator=generator) * on
    tx = torch.randint(-sx, sx + 1, (n,), device=x.device, generator=generator) * on
    padded = F.pad(x, [sx, sx, sy, sy])
    # out[i, j] = x[i - ty, j - tx]; indices past the border land in the zero padding.
    rows = (
        (torch.arange(h, device=x.device).view(1, h) + sy - ty.view(n, 1)).view(n, 1, h, 1).expand(n, c, h, w + 2 * sx)
    )
    x = padded.gather(2, rows)
    cols = (torch.arange(w, device=x.device).view(1, w) + sx - tx.view(n, 1)).view(n, 1, 1, w).expand(n, c, h, w)
    return x.gather(3, cols)


def augment_cutout(
    x: torch.Tensor, ratio: float = 0.5, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero a square of side ``ratio`` * size at a random centre of each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    on = _apply_mask(n, p, x, generator)
    cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h) - (cy.view(n, 1) - ch // 2)
    xs = torch.arange(w, device=x.device).view(1, w) - (cx.view(n, 1) - cw // 2)
    inside = ((ys >= 0) & (ys < ch)).view(n, h, 1) & ((xs >= 0) & (xs < cw)).view(n, 1, w)
    keep = ~(inside & on.view(n, 1, 1))
    return x * keep.unsqueeze(1).to(x.dtype)


class DiffAugment(nn.Module):
    """Apply the same random-augmentation distribution to real and fake images right before D.

    Works on D's input domain ([-1, 1]); every op is differentiable w.r.t. the image so G gets gradients
    through it. ``p`` is the per-sample, per-op probability (1.0 = DiffAugment, < 1 = ADA-like strength).
    """

    def __init__(
        self,
        policy: str | None = "color,translation,cutout",
        p: float = 1.0,
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
    ):
        super().__init__()
        self.ops = parse_policy(policy)
        self.p = float(p)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    @property
    def enabled(self) -> bool:
        return bool(self.ops) and self.p > 0

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.enabled:
            return x
        for op in self.ops:
            if op == "color":
                x = augment_color(x, self.p, generator)
            elif op == "translation":
                x = augment_translation(x, self.translation_ratio, self.p, generator)
            elif op == "cutout":
                x = augment_cutout(x, self.cutout_ratio, self.p, generator)
        return x.contiguous()

    def extra_repr(self) -> str:
        return f"ops={list(self.ops)}, p={self.p:.3f}"
