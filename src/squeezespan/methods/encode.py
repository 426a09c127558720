"""Latent encoding (Table 1 baseline): the student predicts w from an image, reconstructed through the frozen G."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import SnsError
from ..models import Projector
from ..teachers.teacher import load_weights
from .base import Objective, StepInputs


def wants_w_tap(cfg: dict[str, Any]) -> bool:
    """True when a run config makes the teacher tap its latent w (the target of this method)."""
    taps = cfg.get("taps")
    patterns = [taps] if isinstance(taps, str) else list(taps or [])
    return bool(cfg.get("tap_w")) or "w" in patterns


def check_config(cfg: dict[str, Any]) -> None:
    """The teacher must hand over w, and must exist at all (syn_ratio > 0), for this method to work."""
    if not wants_w_tap(cfg):
        raise SnsError(
            "method encode predicts the teacher's latent w: add tap_w=true "
            "(or taps=w, which also skips the block features it does not use)"
        )


class LatentEncoding(Objective):
    """Encoder E = head(student): w_hat = E(x), x_rec = G.synthesis(w_hat broadcast to every layer).

    L_syn  = w_latent * MSE(w_hat, w) + w_rec * d(x_rec, x_syn)     on teacher images (w known)
    L_real = w_rec * d(G.synthesis(E(x_real)), x_real)             on real images (no w: reconstruction only)
    L = rho * L_syn + (1 - rho) * L_real, rho = syn_ratio (1.0: "syn" row of Table 1, 0.5: "syn+real").
    d is L1 on [0, 1] images, or LPIPS when ``lpips_weights`` names a state_dict of ``lpips.LPIPS`` (the
    `lpips` package must be installed; its backbone weights cannot be downloaded here, hence the file).
    Images are not augmented: w determines the un-augmented image. Gradients reach the student through
    the frozen G, whose parameters are never trained (requires_grad off, not in this module's state).
    """

    needs_w = True

    def __init__(
        self,
        student_dim: int,
        w_dim: int,
        syn_ratio: float = 1.0,
        proj_layers: int = 2,
        proj_hidden: int = 512,
        w_latent: float = 1.0,
        w_rec: float = 1.0,
        lpips_weights: str | None = None,
        **_,
    ):
        super().__init__()
        if not 0.0 < syn_ratio <= 1.0:
            raise SnsError(
                f"syn_ratio={syn_ratio}: method encode needs teacher images, so 0 < syn_ratio <= 1 "
                "(1.0 = syn, 0.5 = syn+real)"
            )
        for name, value in (("w_latent", w_latent), ("w_rec", w_rec)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SnsError(f"config key {name}={value!r} must be a number >= 0 (a loss weight)")
        self.syn_ratio = float(syn_ratio)
        self.w_dim = int(w_dim)
        self.head = Projector(student_dim, proj_hidden, self.w_dim, proj_layers)
        # the Projector ends without a bias, but w has a mean (w_avg) the encoder must be able to output
        self.w_bias = nn.Parameter(torch.zeros(self.w_dim))
        self.w_latent, self.w_rec = float(w_latent), float(w_rec)
        # kept out of the module tree: LPIPS is a fixed metric, never trained nor checkpointed
        self._lpips: list[nn.Module] = [load_lpips(lpips_weights)] if lpips_weights else []

    def predict_w(self, inputs: StepInputs, x: torch.Tensor) -> torch.Tensor:
        return self.head(inputs.encode(x)).float() + self.w_bias

    def forward(self, inputs: StepInputs):
        G, out_range = _generator(inputs.teacher)
        logs: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=inputs.syn.device)
        if self.syn_ratio > 0:
            w = _w_target(inputs.taps, self.w_dim)
            w_hat = self.predict_w(inputs, inputs.syn)
            l_latent = F.mse_loss(w_hat, w)
            l_rec = self.distance(reconstruct(G, w_hat, out_range), inputs.syn)
            loss = loss + self.syn_ratio * (self.w_latent * l_latent + self.w_rec * l_rec)
            logs.update(
                loss_latent=l_latent.detach(), loss_rec_syn=l_rec.detach(), w_hat_std=w_hat.detach().std(dim=0).mean()
            )
        if self.syn_ratio < 1 and inputs.real is not None:
            x = inputs.real
            x_rec = reconstruct(G, self.predict_w(inputs, x), out_range)
            if x_rec.shape[-2:] != x.shape[-2:]:  # a teacher at another resolution than the real data
                x_rec = F.interpolate(x_rec, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            l_real = self.distance(x_rec, x)
            loss = loss + (1 - self.syn_ratio) * self.w_rec * l_real
            logs.update(loss_rec_real=l_real.detach())
        return loss, logs

    def distance(self, x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction distance between [0, 1] images: LPIPS if loaded, else mean absolute error."""
        x_rec, x = x_rec.float(), x.float()
        if not self._lpips:
            return F.l1_loss(x_rec, x)
        metric = self._lpips[0].to(x.device)
        if x.shape[1] == 1:  # LPIPS nets take RGB
            x_rec, x = x_rec.expand(-1, 3, -1, -1), x.expand(-1, 3, -1, -1)
        return metric(x_rec * 2 - 1, x * 2 - 1).mean()


def _generator(teacher) -> tuple[nn.Module, tuple[float, float]]:
    G = getattr(teacher, "generator", None)
    if G is None:
        raise SnsError("method encode needs the teacher itself (StepInputs.teacher); pass --teacher")
    if not callable(getattr(G, "synthesis", None)) or not hasattr(G, "num_ws"):
        raise SnsError(
            f"method encode reconstructs through G.synthesis(ws): the teacher's {type(G).__name__} "
            "has no synthesis network / num_ws (use a StyleGAN2 teacher)"
        )
    return G, getattr(teacher, "output_range", (-1.0, 1.0))


def _w_target(taps: Sequence[torch.Tensor], w_dim: int) -> torch.Tensor:
    w = taps[-1] if taps else None
    if w is None or w.ndim != 2 or w.shape[1] != w_dim:
        got = "nothing" if w is None else f"shape {tuple(w.shape)}"
        raise SnsError(f"method encode expects the teacher's w (N, {w_dim}) as its last tap, got {got}; add tap_w=true")
    return w.float()


def reconstruct(G: nn.Module, w_hat: torch.Tensor, out_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """G.synthesis(w_hat repeated for every layer) mapped from G's range to [0, 1]; differentiable in w_hat.

    No clamp, unlike the Teacher's samples: clamped pixels would pass no gradient back to the encoder.
    """
    ws = w_hat.unsqueeze(1).expand(-1, int(G.num_ws), -1)
    if G.training:
        G.eval()
    img = G.synthesis(ws, noise_mode="const")
    lo, hi = out_range
    return (img.float() - lo) / (hi - lo)


def load_lpips(path: str) -> nn.Module:
    """A frozen ``lpips.LPIPS`` built without downloads and filled strictly from a user's state_dict file.

    Make the file once where the weights can be fetched:
    ``torch.save(lpips.LPIPS(net="alex").state_dict(), "lpips_alex.pt")``; net alex/vgg/squeeze is read
    from the file itself.
    """
    try:  # optional dependency, imported only when a run asks for LPIPS
        import lpips
    except ImportError:
        raise SnsError(
            f"lpips_weights={path}: the `lpips` package is not installed (pip install lpips), "
            "or drop lpips_weights to use the L1 reconstruction loss"
        ) from None
    state = _read_state(path)
    if "lin5.model.1.weight" in state:
        net = "squeeze"
    elif state.get("net.slice1.0.weight", torch.empty(0, 0, 0, 0)).shape[-1:] == (11,):
        net = "alex"
    else:
        net = "vgg"
    metric = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    load_weights(metric, path)
    return metric.eval().requires_grad_(False)


def _read_state(path: str) -> dict[str, torch.Tensor]:
    try:
        if str(path).endswith(".safetensors"):
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SnsError(f"lpips_weights={path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - unreadable or unsafe content: a one-line user error
        raise SnsError(
            f"lpips_weights={path}: cannot read ({type(e).__name__}); expected a state_dict of "
            "lpips.LPIPS saved with torch.save or as .safetensors"
        ) from None
    if not isinstance(state, dict):
        raise SnsError(f"lpips_weights={path}: expected a state_dict (dict of tensors)")
    return state
