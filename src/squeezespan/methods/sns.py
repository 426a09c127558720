"""Squeeze and Span (and Squeeze only, vanilla KD): distil squeezed teacher features, span them to real data."""

from __future__ import annotations

import torch

from ..errors import SnsError
from ..models import Projector, SqueezeModule
from . import losses
from .base import Objective, StepInputs


class SqueezeAndSpan(Objective):
    """L = rho * L_syn + (1 - rho) * L_real  (docs/method.md, "The objective").

    L_syn: the student sees A(x_syn) and must predict T_phi(taps of G); L_real: VICReg on two views of a
    real image. rho = syn_ratio (0.5 SnS, 1.0 Squeeze only). squeeze_depth 0 with w_var = w_cov = 0 is
    vanilla distillation to the raw pooled features (Table 5 rows a/b, Table 1 "vanilla"). Both terms follow
    the conventions of ``losses`` (docs/method.md, "Loss conventions").
    """

    def __init__(
        self,
        student_dim: int,
        tap_channels: list[int],
        syn_ratio: float = 0.5,
        proj_layers: int = 5,
        proj_hidden: int = 512,
        proj_dim: int = 2048,
        squeeze_depth: int = 3,
        squeeze_hidden: int = 2048,
        w_mse: float = 25.0,
        w_var: float = 25.0,
        w_cov: float = 1.0,
        augment_syn: bool = True,
        augment_real: bool = True,
        bn_pass: str | None = "separate",
    ):
        super().__init__()
        if not 0.0 <= syn_ratio <= 1.0:
            raise SnsError(f"syn_ratio={syn_ratio} must be in [0, 1] (0.5 = Squeeze and Span, 1.0 = Squeeze only)")
        if not tap_channels:
            raise SnsError("the squeeze objective needs at least one tapped teacher feature (check --taps)")
        self.syn_ratio = float(syn_ratio)
        self.squeeze = SqueezeModule(tap_channels, hidden_dim=squeeze_hidden, out_dim=proj_dim, depth=squeeze_depth)
        out_dim = self.squeeze.out_dim  # depth 0: the concatenated pooled features fix the target size
        self.projector = Projector(student_dim, proj_hidden, out_dim, proj_layers)
        self.w = dict(w_mse=w_mse, w_var=w_var, w_cov=w_cov)
        self.augment_syn, self.augment_real = augment_syn, augment_real
        bn_pass = bn_pass or "separate"
        if bn_pass not in ("separate", "shared"):
            raise SnsError(
                f"bn_pass={bn_pass!r}: expected separate (one student pass per image kind and view, the "
                "default) or shared (one pass over synthetic images and both real views)"
            )
        self.bn_pass = bn_pass

    def forward(self, inputs: StepInputs):
        use_syn, use_real = self.syn_ratio > 0, self.syn_ratio < 1
        if use_syn:
            xs = inputs.augment(inputs.syn) if self.augment_syn else inputs.syn
        if use_real:
            r = inputs.real
            v1, v2 = (inputs.augment(r), inputs.augment(r)) if self.augment_real else (r, r)
        if use_syn and use_real and self.bn_pass == "shared":
            # one student (and projector) pass: BatchNorm normalises synthetic images and both real views with
            # shared batch statistics instead of per-kind/per-view ones
            zf, z1, z2 = self.projector(inputs.encode(torch.cat([xs, v1, v2]))).split([len(xs), len(v1), len(v2)])
        else:
            zf = self.projector(inputs.encode(xs)) if use_syn else None
            z1 = self.projector(inputs.encode(v1)) if use_real else None
            z2 = self.projector(inputs.encode(v2)) if use_real else None
        logs: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=(inputs.syn if inputs.syn is not None else inputs.real).device)
        if use_syn:
            zg = self.squeeze([t.float() for t in inputs.taps])
            l_syn, parts = losses.squeeze(zf, zg, **self.w)
            loss = loss + self.syn_ratio * l_syn
            logs.update(
                {
                    "loss_syn": l_syn.detach(),
                    **{f"syn_{k}": v for k, v in parts.items()},
                    "syn_std": losses.embedding_std(zf),
                }
            )
        if use_real:
            l_real, parts = losses.vicreg(z1, z2, **self.w)
            loss = loss + (1 - self.syn_ratio) * l_real
            logs.update({"loss_real": l_real.detach(), **{f"real_{k}": v for k, v in parts.items()}})
        return loss, logs
