"""Discriminator features used directly as a backbone (Table 1 baseline): single (last block) or multi (every block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SnsError
from ..teachers.load import load_generator

MODES = ("single", "multi")


class DiscriminatorFeatures(nn.Module):
    """A frozen StyleGAN2 discriminator D as a feature extractor: [0, 1] images (N, C, H, W) -> (N, D) features.

    D's blocks bR, ..., b8 each halve the resolution; the epilogue b4 then scores the 4x4 map.
    single: the globally average-pooled output of the last block (b8), i.e. the 4x4 map the epilogue
      takes in. The epilogue's own fc features are not used: its minibatch-std layer mixes the samples of
      a batch, so they would change with the evaluation batch and its size.
    multi: the globally average-pooled outputs of every block, concatenated (shallow to deep).
    Images are resized to D's resolution, mapped to D's [-1, 1] range, and grey images are repeated to
    RGB for an RGB D. A conditional D needs no label here: c enters only in the unused epilogue.
    Normalisation with dataset mean/std must NOT be applied (evaluate(normalize=False)).
    """

    def __init__(self, D: nn.Module, mode: str = "single"):
        super().__init__()
        if mode not in MODES:
            raise SnsError(f"discriminator features mode {mode!r}: expected one of {', '.join(MODES)}")
        resolutions = list(getattr(D, "block_resolutions", []) or [])
        if not resolutions or not all(hasattr(D, f"b{r}") for r in resolutions):
            raise SnsError(
                f"{type(D).__name__} is not a StyleGAN2 discriminator with blocks before its 4x4 "
                "epilogue (needs block_resolutions and b<res> modules, image resolution >= 8)"
            )
        self.D = D.eval().requires_grad_(False)
        self.mode = mode
        self.resolution = int(D.img_resolution)
        self.channels = int(D.img_channels)
        device = next(iter(D.parameters())).device
        with torch.no_grad():
            self.feature_dim = int(
                self(torch.zeros(1, self.channels, self.resolution, self.resolution, device=device)).shape[1]
            )

    def train(self, mode: bool = True) -> DiscriminatorFeatures:
        super().train(mode)
        self.D.eval()  # frozen: a teacher's D always runs in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise SnsError(f"discriminator features take images (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                raise SnsError(f"the discriminator takes {self.channels}-channel images, got {x.shape[1]} channels")
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x.float(), size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True
            )
        img = x * 2 - 1
        h: torch.Tensor | None = None
        pooled = []
        for res in self.D.block_resolutions:
            h, img = getattr(self.D, f"b{res}")(h, img)
            pooled.append(h.float().mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1) if self.mode == "multi" else pooled[-1]


def parse_disc_spec(spec: str) -> tuple[str, str]:
    """'disc:TEACHER[:single|:multi]' -> (TEACHER, mode); mode defaults to single."""
    if not spec.startswith("disc:"):
        raise SnsError(f"--backbone {spec!r}: a discriminator backbone is written disc:TEACHER[:single|:multi]")
    rest = spec[len("disc:") :]
    mode = "single"
    for m in MODES:
        if rest.endswith(":" + m):
            rest, mode = rest[: -len(m) - 1], m
    if not rest:
        raise SnsError(
            f"--backbone {spec!r}: name the teacher, e.g. disc:runs/gan-digits or disc:stylegan2-pkl:cifar10.pkl:multi"
        )
    return rest, mode


def load_discriminator(teacher: str, device="cpu") -> nn.Module:
    """D of a `sns train-gan` teacher dir (or run dir) or of an official pickle (stylegan2-pkl:PATH), frozen."""
    D = load_generator(teacher, key="D")
    if D is None:
        raise SnsError(
            f"--backbone disc:{teacher}: a discriminator comes from a `sns train-gan` run/teacher "
            "directory or stylegan2-pkl:PATH, not from a module:factory generator"
        )
    return D.to(device).eval().requires_grad_(False)


def disc_backbone(spec: str, channels: int, device="cpu") -> tuple[str, DiscriminatorFeatures]:
    """(display name, backbone) for an `sns eval --backbone disc:TEACHER[:single|:multi]` value."""
    teacher, mode = parse_disc_spec(spec)
    D = load_discriminator(teacher, device)
    d_channels = int(getattr(D, "img_channels", channels))
    if d_channels != channels and channels != 1:
        raise SnsError(
            f"--backbone {spec}: the discriminator takes {d_channels}-channel images but the dataset has {channels}"
        )
    return f"disc-{mode} ({teacher})", DiscriminatorFeatures(D, mode)
