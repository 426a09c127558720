"""VICReg on real, synthetic or mixed images: two augmented views, invariance + variance + covariance."""

from __future__ import annotations

import torch

from ..errors import SnsError
from ..models import Projector
from . import losses
from .base import Objective, StepInputs


class VICReg(Objective):
    """Each image (real or teacher-made) gives two views; syn_ratio sets the synthetic share of the batch."""

    def __init__(
        self,
        student_dim: int,
        syn_ratio: float = 0.0,
        proj_layers: int = 3,
        proj_hidden: int = 2048,
        proj_dim: int = 2048,
        w_mse: float = 25.0,
        w_var: float = 25.0,
        w_cov: float = 1.0,
        **_,
    ):
        super().__init__()
        if not 0.0 <= syn_ratio <= 1.0:
            raise SnsError(f"syn_ratio={syn_ratio} must be in [0, 1] (0 = real data, 1 = synthetic, else mixed)")
        self.syn_ratio = float(syn_ratio)
        self.projector = Projector(student_dim, proj_hidden, proj_dim, proj_layers)
        self.w = dict(w_mse=w_mse, w_var=w_var, w_cov=w_cov)

    def forward(self, inputs: StepInputs):
        x = torch.cat([t for t in (inputs.real, inputs.syn) if t is not None])
        z1 = self.projector(inputs.encode(inputs.augment(x)))
        z2 = self.projector(inputs.encode(inputs.augment(x)))
        loss, parts = losses.vicreg(z1, z2, **self.w)
        return loss, {"loss_real" if self.syn_ratio == 0 else "loss_vicreg": loss.detach(), **parts}
