"""SimSiam on real, synthetic or mixed images: projector + predictor, symmetric negative cosine with stop-grad."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SnsError
from ..models import Projector
from . import losses
from .base import Objective, StepInputs


class SimSiam(Objective):
    def __init__(
        self,
        student_dim: int,
        syn_ratio: float = 0.0,
        proj_layers: int = 2,
        proj_hidden: int = 2048,
        proj_dim: int = 2048,
        pred_hidden: int = 512,
        **_,
    ):
        super().__init__()
        if not 0.0 <= syn_ratio <= 1.0:
            raise SnsError(f"syn_ratio={syn_ratio} must be in [0, 1] (0 = real data, 1 = synthetic, else mixed)")
        self.syn_ratio = float(syn_ratio)
        # SimSiam ends its projector with BN (no affine): keeps the output scale fixed.
        self.projector = nn.Sequential(
            Projector(student_dim, proj_hidden, proj_dim, proj_layers), nn.BatchNorm1d(proj_dim, affine=False)
        )
        self.predictor = nn.Sequential(
            nn.Linear(proj_dim, pred_hidden, bias=False),
            nn.BatchNorm1d(pred_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(pred_hidden, proj_dim),
        )

    def forward(self, inputs: StepInputs):
        x = torch.cat([t for t in (inputs.real, inputs.syn) if t is not None])
        z1 = self.projector(inputs.encode(inputs.augment(x)))
        z2 = self.projector(inputs.encode(inputs.augment(x)))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (losses.negative_cosine(p1, z2) + losses.negative_cosine(p2, z1))
        return loss, {
            "loss_simsiam": loss.detach(),
            "z_std": losses.embedding_std(nn.functional.normalize(z1.detach().float(), dim=1)),
        }
