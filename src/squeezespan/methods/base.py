"""The seam between the engine and a method: what a step hands an objective, and what it must return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class StepInputs:
    """Everything one training step offers a method; the engine fills only what the method asked for.

    Images are float in [0, 1], (N, C, H, W), on the training device, NOT yet augmented or normalised.
    """

    real: torch.Tensor | None = None  # real images of this step (syn part excluded)
    syn: torch.Tensor | None = None  # teacher images x_syn
    taps: list[torch.Tensor] = field(default_factory=list)  # teacher's tapped features for x_syn
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # per-sample batched augmentation
    encode: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # student backbone on [0,1] images
    teacher: Any = None  # the Teacher, for methods that need G itself (encode)


class Objective(nn.Module):
    """A representation-learning method: its own heads (projector, squeeze module, ...) and its loss.

    Subclasses set ``syn_ratio`` (share of the batch that is synthetic; 0 = real only) and
    ``views_per_real`` and implement ``forward(inputs) -> (loss, logs)``. The engine never knows a loss.
    """

    syn_ratio: float = 0.0
    needs_taps: bool = False
    needs_w: bool = False  # the teacher must tap its latent w (the engine turns tap_w on)

    def forward(self, inputs: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def embed_for_monitor(self) -> None:  # pragma: no cover - optional hook
        return None
