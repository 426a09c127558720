"""Methods: one small objective module per representation-learning method, all trained by the one engine."""

from __future__ import annotations

from typing import Any

from ..errors import SnsError
from . import losses
from .base import Objective, StepInputs
from .encode import LatentEncoding, check_config
from .simsiam import SimSiam
from .sns import SqueezeAndSpan
from .supervised import Supervised, check_syn_ratio
from .vicreg import VICReg

_SQUEEZE = dict(proj_layers=5, squeeze_depth=3, w_var=25.0, w_cov=1.0, bn_pass="separate")

# name -> (objective class, the method's own defaults for config keys left at null)
METHODS: dict[str, tuple[type, dict[str, Any]]] = {
    "sns": (SqueezeAndSpan, dict(_SQUEEZE, syn_ratio=0.5)),
    "squeeze": (SqueezeAndSpan, dict(_SQUEEZE, syn_ratio=1.0)),
    # vanilla distillation: MSE to the raw pooled teacher features (Table 1/5 "vanilla", rows a/b)
    "kd": (SqueezeAndSpan, dict(_SQUEEZE, syn_ratio=1.0, squeeze_depth=0, w_var=0.0, w_cov=0.0)),
    "vicreg": (VICReg, dict(syn_ratio=0.0, proj_layers=5, w_var=25.0, w_cov=1.0)),
    "simsiam": (SimSiam, dict(syn_ratio=0.0, proj_layers=2)),
    # latent encoding (Table 1): predict w from x_syn + reconstruction through G; syn_ratio 0.5 = syn+real
    "encode": (LatentEncoding, dict(syn_ratio=1.0, proj_layers=2, w_latent=1.0, w_rec=1.0, lpips_weights=None)),
    # the supervised reference: a linear head, cross-entropy on the labels of the real images
    "supervised": (Supervised, dict(syn_ratio=0.0)),
}

# config keys each objective takes (resolved: null -> the method's default above)
_KEYS = {
    SqueezeAndSpan: (
        "syn_ratio",
        "proj_layers",
        "proj_hidden",
        "proj_dim",
        "squeeze_depth",
        "squeeze_hidden",
        "w_mse",
        "w_var",
        "w_cov",
        "augment_syn",
        "augment_real",
        "bn_pass",
    ),
    VICReg: ("syn_ratio", "proj_layers", "proj_hidden", "proj_dim", "w_mse", "w_var", "w_cov"),
    SimSiam: ("syn_ratio", "proj_layers", "proj_dim"),
    LatentEncoding: ("syn_ratio", "proj_layers", "proj_hidden", "w_latent", "w_rec", "lpips_weights"),
    Supervised: ("syn_ratio",),
}


def method_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The objective's keyword arguments from a run config, method defaults filling nulls."""
    name = cfg["method"]
    if name not in METHODS:
        raise SnsError(f"--method {name!r} is unknown; methods: {', '.join(METHODS)}")
    cls, defaults = METHODS[name]
    out = {}
    for k in _KEYS[cls]:
        v = cfg.get(k)
        out[k] = defaults.get(k) if v is None else v
    rho = out["syn_ratio"]
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
        raise SnsError(f"syn_ratio={rho} must be in [0, 1] (share of synthetic images in the batch)")
    for k in ("proj_layers", "squeeze_depth"):
        if k in out and (not isinstance(out[k], int) or out[k] < (1 if k == "proj_layers" else 0)):
            raise SnsError(f"config key {k}={out[k]!r} must be an integer >= {1 if k == 'proj_layers' else 0}")
    if cls is LatentEncoding:
        check_config(cfg)
    if cls is Supervised:
        check_syn_ratio(rho)
    return out


def resolve_method(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` as its method runs it: the method's defaults in place of nulls, and ``tap_w`` on for a method that
    predicts the teacher's w (what config.yaml records, so a resumed or repeated run reads what ran).

    Args:
        cfg: a run config (not modified).

    Returns:
        A new config dict.
    """
    if cfg["method"] in METHODS and METHODS[cfg["method"]][0].needs_w and not cfg.get("tap_w"):
        cfg = {**cfg, "tap_w": True}  # e.g. encode predicts w: tap it without asking the user
    return {**cfg, **method_settings(cfg)}


def build_objective(
    cfg: dict[str, Any], student_dim: int, tap_channels: list[int] | None = None, num_classes: int = 0
) -> Objective:
    """The objective of ``cfg['method']`` with its resolved settings.

    Args:
        cfg: the run config.
        student_dim: the student's feature size.
        tap_channels: channels of the teacher's taps, in tap order (the w tap last when tapped).
        num_classes: classes of the training labels (method supervised).

    Returns:
        The Objective module (on the CPU; the caller moves it).
    """
    kw = method_settings(cfg)
    cls, _ = METHODS[cfg["method"]]
    if cls is SqueezeAndSpan:
        return cls(student_dim, list(tap_channels or []), **kw)
    if cls is LatentEncoding:
        return cls(student_dim, (tap_channels or [0])[-1], **kw)  # the w tap comes last
    if cls is Supervised:
        return cls(student_dim, num_classes, **kw)
    return cls(student_dim, **kw)


__all__ = [
    "METHODS",
    "Objective",
    "StepInputs",
    "SqueezeAndSpan",
    "VICReg",
    "SimSiam",
    "LatentEncoding",
    "Supervised",
    "losses",
    "build_objective",
    "method_settings",
    "resolve_method",
]
