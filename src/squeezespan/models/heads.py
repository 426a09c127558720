"""Heads on top of features: the student's projector MLP and the squeeze module T_phi over teacher taps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import SnsError


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SnsError(f"{name} = {value!r} is invalid: expected an integer >= {minimum}")
    return value


def _hidden_block(in_dim: int, out_dim: int) -> list[nn.Module]:
    # No bias: the BatchNorm right after it has its own shift.
    return [nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]


class Projector(nn.Sequential):
    """Projector MLP after the student backbone: (num_layers-1) x [Linear, BN1d, ReLU] + Linear, no biases.

    ``num_layers=1`` is a single linear map. SnS uses 5 layers, the SimSiam baselines 2
    (docs/method.md, "Student and projector").
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        in_dim = _positive_int("projector in_dim", in_dim)
        hidden_dim = _positive_int("projector hidden_dim", hidden_dim)
        out_dim = _positive_int("projector out_dim", out_dim)
        num_layers = _positive_int("projector num_layers", num_layers)
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += _hidden_block(dim, hidden_dim)
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=False))
        super().__init__(*layers)
        self.in_dim, self.hidden_dim, self.out_dim, self.num_layers = in_dim, hidden_dim, out_dim, num_layers


def pool_tap(feature: torch.Tensor) -> torch.Tensor:
    """Global-average-pool one tapped feature to (N, C).

    4D (N, C, H, W) feature maps are pooled over space; 2D (N, C) taps (latent w) pass through;
    3D (N, num_ws, w_dim) broadcast latents are averaged over the ws, which is w itself when untruncated.
    """
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    if feature.dim() == 3:
        return feature.mean(dim=1)
    if feature.dim() == 2:
        return feature
    raise SnsError(
        f"squeeze tap of shape {tuple(feature.shape)} is unsupported: expected (N, C, H, W), (N, num_ws, C) or (N, C)"
    )


class SqueezeModule(nn.Module):
    """T_phi: pool each teacher tap, map each by a lateral Linear(C_i -> hidden), sum, then an MLP of ``depth``.

    The MLP is (depth-1) x [Linear(hidden, hidden, no bias), BN1d, ReLU] + Linear(hidden, out_dim).
    ``depth=0`` is the "vanilla" target (docs/method.md, "The squeeze module"): the concatenated pooled taps,
    no parameters, ``out_dim = sum(in_channels)`` (``hidden_dim``/``out_dim`` are then ignored).
    """

    def __init__(self, in_channels: Sequence[int], hidden_dim: int = 2048, out_dim: int = 2048, depth: int = 3):
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels:
            raise SnsError("squeeze in_channels is empty: the teacher must expose at least one tap")
        for c in in_channels:
            _positive_int("squeeze in_channels entry", c)
        self.in_channels = in_channels
        self.depth = _positive_int("squeeze depth", depth, minimum=0)
        if self.depth == 0:
            self.hidden_dim = 0
            self.out_dim = sum(in_channels)
            self.lateral = nn.ModuleList()
            self.mlp = nn.Identity()
            return
        self.hidden_dim = _positive_int("squeeze hidden_dim", hidden_dim)
        self.out_dim = _positive_int("squeeze out_dim", out_dim)
        self.lateral = nn.ModuleList(nn.Linear(c, hidden_dim) for c in in_channels)
        layers: list[nn.Module] = []
        for _ in range(self.depth - 1):
            layers += _hidden_block(hidden_dim, hidden_dim)
        layers.append(nn.Linear(hidden_dim, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher taps in the order of ``in_channels`` -> squeezed target (N, out_dim)."""
        taps = list(taps)
        if len(taps) != len(self.in_channels):
            raise SnsError(
                f"squeeze module got {len(taps)} teacher taps but was built for {len(self.in_channels)} "
                f"(channels {self.in_channels}): check the teacher taps pattern"
            )
        pooled = [pool_tap(t) for t in taps]
        got = [p.shape[1] for p in pooled]
        if got != self.in_channels:
            raise SnsError(
                f"squeeze module got taps with channels {got} but was built for {self.in_channels}: "
                "check the teacher taps pattern and checkpoint"
            )
        if self.depth == 0:
            return torch.cat(pooled, dim=1)
        h = self.lateral[0](pooled[0])
        for lateral, p in zip(self.lateral[1:], pooled[1:]):
            h = h + lateral(p)
        return self.mlp(h)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, depth={self.depth}, out_dim={self.out_dim}"
