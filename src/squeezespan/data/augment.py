"""Batched SimSiam/MoCo-v2 augmentation on the batch's own device, with per-sample (or per-batch) random parameters."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from ..errors import SnsError

__all__ = ["AugmentConfig", "Augment", "default_blur_kernel"]


def _where(key: str) -> str:
    return f"augment config, key '{key}'"


def _number(key: str, value: Any) -> float:
    # bool is an int subclass; `flip_p: true` in YAML is a typo, not a probability of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SnsError(f"{_where(key)}: expected a finite number, got {value!r}; fix the value in your config")
    return float(value)


def _pair(key: str, value: Any, low: float, high: float, low_open: bool) -> tuple[float, float]:
    bound = f"{low} {'<' if low_open else '<='} min <= max <= {high}"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SnsError(f"{_where(key)}: expected two numbers [min, max] with {bound}, got {value!r}")
    lo, hi = (_number(key, v) for v in value)
    if (lo <= low if low_open else lo < low) or hi > high or lo > hi:
        raise SnsError(f"{_where(key)}: expected {bound}, got [{lo}, {hi}]; fix the range in your config")
    return (lo, hi)


def _probability(key: str, value: Any) -> float:
    p = _number(key, value)
    if not 0.0 <= p <= 1.0:
        raise SnsError(f"{_where(key)}: expected a probability in [0, 1], got {p}")
    return p


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SnsError(f"{_where(key)}: expected true or false, got {value!r}")
    return value


def default_blur_kernel(resolution: int) -> int:
    """Odd Gaussian-blur kernel of about 10% of the image side (SimCLR's rule), at least 3."""
    return max(3, int(0.1 * resolution) | 1)


@dataclass
class AugmentConfig:
    """The SimSiam/MoCo-v2 recipe (docs/method.md, "Augmentation"); the `augment:` section of a run config.

    Presets for CIFAR set ``blur_p: 0`` (the paper blurs everything except CIFAR).
    ``blur_kernel: null`` derives an odd kernel of ~10% of the resolution.
    ``per_sample: false`` reproduces the reference code: one parameter set for the whole batch.
    """

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    flip_p: float = 0.5
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    per_sample: bool = True

    def __post_init__(self) -> None:
        # Validate (and turn YAML lists into tuples) here, so a config built in Python is checked too.
        self.enabled = _flag("enabled", self.enabled)
        self.per_sample = _flag("per_sample", self.per_sample)
        self.crop_scale = _pair("crop_scale", self.crop_scale, 0.0, 1.0, low_open=True)
        self.crop_ratio = _pair("crop_ratio", self.crop_ratio, 0.0, math.inf, low_open=True)
        self.blur_sigma = _pair("blur_sigma", self.blur_sigma, 0.0, math.inf, low_open=True)
        if not isinstance(self.jitter, (list, tuple)) or len(self.jitter) != 4:
            raise SnsError(
                f"{_where('jitter')}: expected four numbers [brightness, contrast, saturation, hue], "
                f"got {self.jitter!r}"
            )
        jitter = tuple(_number("jitter", v) for v in self.jitter)
        if min(jitter[:3]) < 0 or not 0.0 <= jitter[3] <= 0.5:
            raise SnsError(
                f"{_where('jitter')}: expected brightness, contrast, saturation >= 0 and 0 <= hue <= 0.5, "
                f"got {list(jitter)}"
            )
        self.jitter = jitter  # type: ignore[assignment]
        for key in ("jitter_p", "grayscale_p", "flip_p", "blur_p"):
            setattr(self, key, _probability(key, getattr(self, key)))
        if self.blur_kernel is not None:
            k = self.blur_kernel
            if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
                raise SnsError(f"{_where('blur_kernel')}: expected an odd integer >= 3 or null (derive), got {k!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a YAML mapping; missing keys keep their defaults, unknown keys are an SnsError."""
        if d is None:
            return cls()
        valid = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, Mapping):
            raise SnsError(f"augment config: expected a mapping of {', '.join(valid)}; got {type(d).__name__}")
        for key in d:
            if key not in valid:
                raise SnsError(f"augment config: unknown key '{key}'; valid keys are: {', '.join(valid)}")
        return cls(**dict(d))


class Augment(nn.Module):
    """``aug(x)``: float (N, C, H, W) in [0, 1] -> float32 (N, C, resolution, resolution) in [0, 1], same device.

    Pipeline (torchvision's order in the SimSiam/MoCo-v2 recipe): random resized crop, colour jitter,
    grayscale, horizontal flip, Gaussian blur. Images with a channel count other than 3 keep brightness and
    contrast jitter only (saturation, hue and grayscale mean nothing there) and keep their channel count.

    Colour jitter is kornia's ``ColorJitter``, not ``ColorJiggle``: ColorJitter uses torchvision's formulas
    (brightness multiplies, contrast and saturation blend with the grayscale mean / grayscale image), which is
    what the paper's recipe was tuned with; ColorJiggle's brightness is additive. As in torchvision, the order
    of the four colour steps is drawn once per call, the factors per sample.

    Randomness: parameters are always drawn from the global CPU RNG (also when the batch is on a GPU), so
    ``torch.manual_seed(s)`` gives the same augmentation on any device. ``forward(x, generator=g)`` instead
    draws one seed from ``g`` and runs under ``torch.random.fork_rng``: the global RNG is neither consumed nor
    changed, and the same generator state gives the same output.

    ``cfg.enabled=False`` is the identity (only cast to float32; no resize).
    """

    def __init__(self, cfg: AugmentConfig, channels: int, resolution: int) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise SnsError(f"Augment: channels must be a positive integer, got {channels!r}")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise SnsError(f"Augment: resolution must be a positive integer, got {resolution!r}")
        self.cfg = cfg
        self.channels = channels
        self.resolution = resolution
        self.blur_kernel = cfg.blur_kernel if cfg.blur_kernel is not None else default_blur_kernel(resolution)
        self.pipeline = nn.Sequential(self._build()) if cfg.enabled else nn.Sequential()
        self._pin_rng_to_cpu()

    def _build(self) -> OrderedDict[str, nn.Module]:
        cfg, same = self.cfg, not self.cfg.per_sample
        colour = self.channels == 3
        brightness, contrast, saturation, hue = cfg.jitter
        if not colour:
            saturation, hue = 0.0, 0.0
        steps: OrderedDict[str, nn.Module] = OrderedDict()
        steps["crop"] = K.RandomResizedCrop(
            (self.resolution, self.resolution), scale=cfg.crop_scale, ratio=cfg.crop_ratio, same_on_batch=same
        )
        # Steps that can never fire are left out: they would only cost time and RNG draws.
        if cfg.jitter_p > 0 and max(brightness, contrast, saturation, hue) > 0:
            steps["jitter"] = K.ColorJitter(brightness, contrast, saturation, hue, p=cfg.jitter_p, same_on_batch=same)
        if colour and cfg.grayscale_p > 0:
            steps["grayscale"] = K.RandomGrayscale(p=cfg.grayscale_p, same_on_batch=same)
        if cfg.flip_p > 0:
            steps["flip"] = K.RandomHorizontalFlip(p=cfg.flip_p, same_on_batch=same)
        if cfg.blur_p > 0:
            k = self.blur_kernel
            steps["blur"] = K.RandomGaussianBlur((k, k), cfg.blur_sigma, p=cfg.blur_p, same_on_batch=same)
        return steps

    def _pin_rng_to_cpu(self) -> None:
        for m in self.pipeline:
            m.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Augment:
        # kornia moves its samplers with `.to(device)`; keep them on the CPU so a seed means the same on any device.
        out = super()._apply(fn, *args, **kwargs)
        self._pin_rng_to_cpu()
        return out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise SnsError(
                f"Augment: expected images of shape (N, {self.channels}, H, W), got {tuple(x.shape)}; "
                "the dataset/teacher channel count must match the model's in_channels"
            )
        x = x.to(torch.float32)  # bf16/fp16 batches: kornia's colour maths wants float32
        if not self.cfg.enabled or x.shape[0] == 0:
            return x
        if generator is None:
            return self._augment(x)
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self._augment(x)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        # Bilinear resampling and the blur can overshoot [0, 1] by float rounding.
        return self.pipeline(x).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, resolution={self.resolution}, per_sample={self.cfg.per_sample}"
