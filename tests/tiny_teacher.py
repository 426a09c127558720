"""A tiny, seeded StyleGAN2 generator for tests, loadable as the bring-your-own teacher `tiny_teacher:make`."""

import torch

from squeezespan.teachers import build_stylegan2


def make(resolution: int = 16, channels: int = 1):
    torch.manual_seed(1234)
    G, _ = build_stylegan2(
        resolution=resolution,
        img_channels=channels,
        channel_base=256,
        channel_max=16,
        z_dim=16,
        w_dim=16,
        mapping_layers=1,
    )
    return G


def make_nan(resolution: int = 16, channels: int = 1):
    """The tiny generator with one damaged (NaN) weight: a teacher whose images are NaN."""
    G = make(resolution, channels)
    with torch.no_grad():
        next(p for name, p in G.named_parameters() if name.startswith("synthesis")).fill_(float("nan"))
    return G


def make_failing():
    """A factory that fails the way a user's own code can (found by bench/fuzz.py: it used to escape as a traceback)."""
    raise RuntimeError("this factory fails\non two lines")
