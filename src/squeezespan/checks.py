"""Range checks of config values (pretrain's and train-gan's validation): one-line SnsErrors that name the key,
the value and what it must be. Every check also refuses the wrong type (a string, a bool for a number, a float
for a whole number) and non-finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .engine.device import PRECISIONS, TEACHER_PRECISIONS
from .engine.trackers import LOGGERS, TRACKERS, require_tracker
from .errors import SnsError
from .methods import METHODS
from .models import check_arch

__all__ = ["INT_LIMIT", "SEED_LIMIT", "check_choice", "check_flag", "check_real", "check_whole"]

# seeds are in [0, 2**32): the loops derive per-step, per-epoch and per-rank seeds from them (seed * 1_000_003 + ...),
# which must stay inside torch's int64 seeds
SEED_LIMIT = 2**32
INT_LIMIT = 2**63  # whole numbers beyond int64 overflow torch


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_whole(
    cfg: Mapping[str, Any], key: str, low: int = 0, high: int = INT_LIMIT, none_ok: bool = False, prefix: str = ""
) -> None:
    """``cfg[key]`` is an int in ``[low, high)`` (or None with ``none_ok``)."""
    v = cfg.get(key)
    if v is None and none_ok:
        return
    if not (isinstance(v, int) and not isinstance(v, bool)) or not low <= v < high:
        span = f">= {low}" if high == INT_LIMIT else f"in [{low}, {high})"
        if high == SEED_LIMIT:
            span = f"in [{low}, 2**32)"
        raise SnsError(f"{prefix}{key}={v!r} must be a whole number {span}" + (" or null" if none_ok else ""))


def check_real(
    cfg: Mapping[str, Any],
    key: str,
    low: float | None = None,
    above: bool = False,
    high: float | None = None,
    below: bool = False,
    none_ok: bool = False,
    prefix: str = "",
) -> None:
    """``cfg[key]`` is a finite number ``>= low`` (``> low`` with ``above``) and ``<= high`` (``< high`` with
    ``below``), or None with ``none_ok``."""
    v = cfg.get(key)
    if v is None and none_ok:
        return
    ok = _is_number(v) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if above else v >= low
    if ok and high is not None:
        ok = v < high if below else v <= high
    if ok:
        return
    if low == 0 and above and high is None:
        what = "a positive finite number"
    elif high is None and low is not None:
        what = f"a finite number {'>' if above else '>='} {low:g}"
    elif low is not None and high is not None:
        what = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
    else:
        what = "a finite number"
    raise SnsError(f"{prefix}{key}={v!r} must be {what}" + (" or null" if none_ok else ""))


def check_flag(cfg: Mapping[str, Any], key: str, auto_ok: bool = False, prefix: str = "") -> None:
    """``cfg[key]`` is true or false (or 'auto' with ``auto_ok``)."""
    v = cfg.get(key)
    if isinstance(v, bool) or (auto_ok and isinstance(v, str) and v.lower() == "auto"):
        return
    raise SnsError(f"{prefix}{key}={v!r} must be true or false" + (" or auto" if auto_ok else ""))


def check_loggers(cfg: Mapping[str, Any], prefix: str = "") -> None:
    """``cfg['loggers']`` is a list of distinct names from LOGGERS, and each tracker's package imports (a missing
    one names its extra), all before the run directory is touched."""
    v = cfg.get("loggers")
    if not (isinstance(v, list) and all(isinstance(n, str) and n in LOGGERS for n in v) and len(set(v)) == len(v)):
        raise SnsError(
            f"{prefix}loggers={v!r} must be a list of distinct names from {', '.join(LOGGERS)}, "
            "e.g. loggers=[tensorboard,jsonl,mlflow]"
        )
    for name in v:
        if name in TRACKERS:
            require_tracker(name, prefix)


def check_choice(cfg: Mapping[str, Any], key: str, choices: tuple[Any, ...], prefix: str = "") -> None:
    """``cfg[key]`` is one of ``choices``."""
    v = cfg.get(key)
    if isinstance(v, bool) or v not in choices:
        raise SnsError(f"{prefix}{key}={v!r} must be one of {', '.join(repr(c) for c in choices)}")


# ---- pretrain (``sns pretrain``): every value checked before the run directory is touched

_PRETRAIN_WHOLE = {  # key: (lowest value, None allowed)
    "steps": (0, False),
    "warmup_steps": (0, False),
    "ckpt_every": (0, False),
    "knn_every": (0, False),
    "real_subset": (0, False),
    "log_every": (1, False),
    "keep_ckpts": (1, False),
    "knn_k": (1, False),
    "knn_bank": (1, False),
    "num_workers": (0, False),
    "resolution": (1, False),
    "proj_hidden": (1, False),
    "proj_dim": (1, False),
    "squeeze_hidden": (1, False),
    "proj_layers": (1, True),
    "squeeze_depth": (0, True),
}
_PRETRAIN_REAL = {  # key: (low, strictly above low, high, strictly below high, None allowed)
    "lr": (0, True, None, False, False),
    "epochs": (0, True, None, False, False),
    "weight_decay": (0, False, None, False, False),
    "grad_clip": (0, False, None, False, False),
    "momentum": (0, False, 1, True, False),
    "width": (0, True, None, False, False),
    "knn_t": (0, True, None, False, False),
    "knn_cap": (0, False, 1, False, False),
    "w_mse": (0, False, None, False, False),
    "w_var": (0, False, None, False, True),
    "w_cov": (0, False, None, False, True),
    "w_latent": (0, False, None, False, True),
    "w_rec": (0, False, None, False, True),
    "syn_ratio": (0, False, 1, False, True),
}
_PRETRAIN_FLAGS = ("tap_w", "augment_syn", "augment_real", "final_eval", "channels_last", "compile", "teacher_compile")
# key: its values (train-gan checks the same precision in gan/config.py)
_PRETRAIN_CHOICES = {"precision": PRECISIONS, "teacher_precision": TEACHER_PRECISIONS}


def check_eval_config(cfg: Mapping[str, Any]) -> None:
    """`sns eval`'s values (types, ranges, finiteness, the seed), checked before --out is touched: a bad
    ``linear_epochs`` used to be refused only after every backbone's features were extracted."""
    for key, low in (("resolution", 1), ("knn_k", 1), ("linear_epochs", 1), ("paper_epochs", 1), ("batch_size", 1)):
        check_whole(cfg, key, low)
    check_whole(cfg, "seed", 0, SEED_LIMIT)
    check_real(cfg, "knn_t", 0, above=True)
    check_real(cfg, "knn_cap", 0, high=1)
    check_real(cfg, "paper_lr", 0, above=True)
    check_real(cfg, "width", 0, above=True)
    check_flag(cfg, "knn")
    check_flag(cfg, "bf16")
    check_choice(cfg, "protocol", ("fast", "paper"))
    backbones = cfg.get("backbones")
    if not isinstance(backbones, (list, tuple)) or not backbones or not all(isinstance(b, str) for b in backbones):
        raise SnsError(f"backbones={backbones!r} must be a non-empty list of backbone specs (--backbone PATH, raw)")


def check_pretrain_config(cfg: Mapping[str, Any]) -> None:
    """Every limit of a pretrain config (after ``methods.resolve_method``): types, ranges, finiteness, seeds.

    Raises:
        SnsError: one line naming the first bad key.
    """
    B = cfg.get("batch_size")
    if isinstance(B, int) and not isinstance(B, bool) and B < 4:
        raise SnsError(f"batch_size={B} is too small: the variance/covariance terms need a batch of at least 4")
    check_whole(cfg, "batch_size", 4)
    for key in ("lr", "epochs"):  # the historical wording ("must be a positive number") stays for these two
        v = cfg.get(key)
        if not _is_number(v) or not math.isfinite(v) or not v > 0:
            raise SnsError(f"{key}={v!r} must be a positive number")
    for key, (low, none_ok) in _PRETRAIN_WHOLE.items():
        if key in cfg:
            check_whole(cfg, key, low, none_ok=none_ok)
    for key, (low, above, high, below, none_ok) in _PRETRAIN_REAL.items():
        if key in cfg:
            check_real(cfg, key, low, above, high, below, none_ok)
    for key in _PRETRAIN_FLAGS:
        if key in cfg:
            check_flag(cfg, key)
    if "arch" in cfg:  # resnet18/34/50, timm:NAME (timm installed, model known) or package.module:factory (imports)
        check_arch(cfg["arch"], cfg.get("arch_kwargs"), cfg.get("width", 1.0))
    for key, choices in _PRETRAIN_CHOICES.items():
        if key in cfg:
            check_choice(cfg, key, choices)
    check_whole(cfg, "seed", 0, SEED_LIMIT)
    if "loggers" in cfg:
        check_loggers(cfg)
    bank = cfg.get("teacher_bank", 0)
    if isinstance(bank, bool) or not isinstance(bank, int) or not 0 <= bank < INT_LIMIT:
        raise SnsError(
            f"teacher_bank={bank!r} must be an integer >= 0 (0 = run the teacher live every step, "
            "N > 0 = sample N teacher images and their pooled taps once and reuse them)"
        )
    if bank and METHODS[cfg["method"]][0].needs_w:
        raise SnsError(
            f"teacher_bank={bank}: method {cfg['method']} runs the teacher G itself "
            "(reconstruction through G from the latent w) at every step, which a bank cannot replace; "
            "set teacher_bank=0"
        )
