"""The seam between the engine and a method: what a step hands an objective, and what it must return."""

from __future__ import annotations

import torch
from torch import nn

from ..engine.step import StepInputs

__all__ = ["Objective", "StepInputs"]


class Objective(nn.Module):
    """A representation-learning method: its own heads (projector, squeeze module, ...) and its loss.

    Subclasses set ``syn_ratio`` (share of the batch that is synthetic; 0 = real only) and implement
    ``forward(inputs) -> (loss, logs)``: ``loss`` a scalar tensor, ``logs`` named scalar tensors the engine
    averages over ranks and writes to metrics.jsonl. The engine never knows a loss; it fills the StepInputs
    the class asks for through these flags.
    """

    syn_ratio: float = 0.0
    needs_w: bool = False  # the teacher must tap its latent w (pretrain turns tap_w on)
    needs_labels: bool = False  # the engine fills StepInputs.labels with the real images' labels

    def forward(self, inputs: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError
