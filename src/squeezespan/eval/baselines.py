"""Reference backbones every result is compared with: raw pixels and a randomly initialised student."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SnsError
from ..models import build_student


class RawPixels(nn.Module):
    """The normalised image itself as the feature vector: (N, C, H, W) -> (N, C*s*s).

    ``s`` is the resolution, unless C*H*W exceeds ``max_dim`` (4096 by default): then the image is
    average-pooled to the largest s with C*s*s <= max_dim, so that a kNN bank or a linear probe on
    STL-10's 96px (27648 dims) stays as cheap as on CIFAR's 32px (3072 dims, kept whole).
    """

    def __init__(self, channels: int, resolution: int, max_dim: int = 4096):
        super().__init__()
        if channels < 1 or resolution < 1 or max_dim < channels:
            raise SnsError(
                f"RawPixels needs channels >= 1, resolution >= 1, max_dim >= channels; "
                f"got {channels}, {resolution}, {max_dim}"
            )
        self.channels, self.resolution = channels, resolution
        self.side = min(resolution, int(math.isqrt(max_dim // channels)))
        self.feature_dim = channels * self.side * self.side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2:] != (self.resolution, self.resolution):
            raise SnsError(
                f"RawPixels({self.channels}, {self.resolution}) got images of shape "
                f"{tuple(x.shape)}; build it with the dataset's channels and resolution"
            )
        if self.side != self.resolution:
            x = F.adaptive_avg_pool2d(x, self.side)
        return x.flatten(1)


def random_init_student(
    arch: str = "resnet18",
    variant: str = "cifar",
    width: float = 1.0,
    in_channels: int = 3,
    seed: int = 0,
    arch_kwargs: dict | None = None,
    resolution: int | None = None,
) -> nn.Module:
    """A student exactly as training would start it (``seed`` fixes the init), in eval mode; ``arch_kwargs`` and
    ``resolution`` as ``models.build_student`` takes them (timm and factory students).

    The global RNG is forked, so building it leaves everyone else's random stream untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_student(arch, variant, width, in_channels, arch_kwargs=arch_kwargs, resolution=resolution)
    return student.eval()
