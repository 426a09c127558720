"""The knobs of `sns train-gan` (GAN_DEFAULTS) and their checks."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..checks import SEED_LIMIT, check_choice, check_flag, check_loggers, check_real, check_whole
from ..config import apply_aliases, check_renamed
from ..data.diffaug import parse_policy
from ..engine.device import PRECISIONS
from ..errors import SnsError

# Every knob of `sns train-gan`, with its default; presets (configs/gan-*.yaml) and key=value override these.
# Knobs it shares with pretrain have pretrain's names and units (batch_size, log_every, ckpt_every in steps,
# keep_ckpts, precision, seed, device); config.RENAMED_KEYS turns the old names into one-line errors.
GAN_DEFAULTS: dict[str, Any] = {
    # data
    "data": "digits",  # dataset name for squeezespan.data.load_dataset
    "data_root": None,  # folder holding the files (None: the data package's default search)
    "train_split": "train",  # the split the GAN trains on (pretrain names it the same)
    "resolution": 32,  # square image size (power of two)
    "channels": None,  # 1 or 3; None keeps the dataset's own (config.yaml records the one that ran)
    "mirror": False,  # random x-flips of real images (dataset augmentation; not for digits)
    # networks (StyleGAN2; channels per resolution = min(channel_base // res, channel_max))
    "z_dim": 128,
    "w_dim": 128,
    "mapping_layers": 2,
    "mapping_lr_mult": 0.01,  # learning-rate multiplier of the mapping network (StyleGAN2: 0.01)
    "channel_base": 2048,
    "channel_max": 128,
    "g_architecture": "skip",
    "d_architecture": "resnet",
    "mbstd_group_size": 4,
    "conv_clamp": None,
    # optimisation (StyleGAN2-ADA)
    "batch_size": 32,  # global batch: real (and fake) images per iteration over all processes
    "kimg": 100.0,  # total length: thousands of real images shown to D
    "lr": 0.0025,  # both G and D
    "betas": [0.0, 0.99],
    "eps": 1e-8,
    "r1_gamma": 0.01,
    "r1_interval": 16,  # lazy R1 every N D steps (0 or None: no R1)
    "ema_kimg": 10.0,  # G_ema half-life in kimg
    "ema_rampup": 0.05,  # cap the half-life at ema_rampup * kimg so far (None: no rampup)
    # differentiable augmentation, applied to real and fake images before D
    "diffaug": "color,translation,cutout",  # comma list of color, translation, cutout; "none" disables
    "augment_p": 1.0,  # per-sample probability of each op (initial value when ADA adapts it)
    "ada_target": None,  # e.g. 0.6: adapt p so that E[sign(D(real))] stays at this target (ADA)
    "ada_interval": 4,  # iterations between p updates
    "ada_kimg": 100.0,  # kimg for p to move by 1
    # autocast of the G and D passes (R1 stays fp32): auto | bf16 | fp16 | fp32, as in pretrain (fp16 with a loss
    # scaler per network; auto: bf16 where native, fp16 on other CUDA GPUs, else fp32); bf16=true/false/auto: the
    # old spelling
    "precision": "fp32",
    "seed": 0,
    "device": "auto",  # cpu, cuda, cuda:N or auto (config.yaml records the device that ran)
    "threads": None,  # CPU threads for this run (None: torch's setting); 1 is fastest on a busy CPU
    "max_minutes": None,  # stop cleanly (final samples, FD-ref, checkpoint, teacher) after this wall time
    # bookkeeping
    "log_every": 20,  # metrics line every N iterations
    "loggers": ["tensorboard", "jsonl"],  # + mlflow, wandb (extras), as in pretrain: docs/tracking.md
    "ckpt_every": 313,  # iterations between checkpoints (~10 kimg at batch_size 32); 0: only at the end
    "keep_ckpts": 2,
    "export_snapshots": False,  # also export a teacher at every checkpoint, into snapshots/kimg-XXXXXX/
    "sample_kimg": 5.0,  # fixed-z sample grid of G_ema every N kimg into samples/
    "grid_size": 64,  # images in the sample grid
    "fd_ref_kimg": 10.0,  # FD-ref of G_ema every N kimg (0: only at the end; None: never)
    "fd_ref_num": 2000,  # generated images per FD-ref evaluation
    "fd_ref_real": 10000,  # real images (fixed subset) for the reference statistics
    "fd_ref_cache": None,  # folder for the cached reference net (None: ~/.cache/squeezespan/fdref)
    "teacher_pick": "best_fd",  # teacher/ holds the snapshot with the best FD-ref ("best_fd") or the last one ("last")
}

# Keys that fix the networks' shapes: a resumed run must agree with its checkpoint on these.
ARCH_KEYS = (
    "resolution",
    "channels",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "mapping_lr_mult",
    "channel_base",
    "channel_max",
    "g_architecture",
    "d_architecture",
    "mbstd_group_size",
    "conv_clamp",
)

# What a resumed train-gan may change (key=value on --resume; every other key decides what it trains and is
# refused): the length, logging, checkpoints, samples and FD-ref measurement, the hardware and precision, where
# the data is found.
GAN_RESUME_FREE_KEYS = frozenset(
    {
        "kimg",
        "max_minutes",
        "log_every",
        "ckpt_every",
        "keep_ckpts",
        "export_snapshots",
        "sample_kimg",
        "grid_size",
        "fd_ref_kimg",
        "fd_ref_num",
        "fd_ref_real",
        "fd_ref_cache",
        "teacher_pick",
        "device",
        "bf16",
        "precision",
        "threads",
        "loggers",
        "data_root",
    }
)

# The run's counters, saved as the checkpoint's "state".
COUNTERS = ("cur_nimg", "step", "ada_sum", "ada_count", "best_fd", "best_kimg", "last_fd")


# --------------------------------------------------------------------------------------------------- config


# whole-number keys: (lowest value, None allowed); real-number keys: (low, strictly above, high, strictly below,
# None allowed). Types, ranges and finiteness are checked before the run directory is touched.
_WHOLE = {
    "batch_size": (1, False),
    "z_dim": (1, False),
    "w_dim": (1, False),
    "mapping_layers": (1, False),
    "channel_base": (1, False),
    "channel_max": (1, False),
    "mbstd_group_size": (1, False),
    "r1_interval": (0, True),
    "ada_interval": (1, False),
    "threads": (1, True),
    "log_every": (1, False),
    "ckpt_every": (0, False),
    "keep_ckpts": (1, False),
    "grid_size": (1, False),
    "fd_ref_num": (2, False),
    "fd_ref_real": (2, False),
}
_REAL = {
    "kimg": (0, True, None, False, False),
    "lr": (0, True, None, False, False),
    "eps": (0, True, None, False, False),
    "mapping_lr_mult": (0, True, None, False, False),
    "r1_gamma": (0, False, None, False, False),
    "ema_kimg": (0, False, None, False, False),
    "ema_rampup": (0, False, None, False, True),
    "augment_p": (0, False, 1, False, False),
    "ada_target": (0, False, 1, False, True),
    "ada_kimg": (0, True, None, False, False),
    "max_minutes": (0, False, None, False, True),
    "sample_kimg": (0, False, None, False, True),
    "fd_ref_kimg": (0, False, None, False, True),
    "conv_clamp": (0, True, None, False, True),
}


def _check_limits(cfg: dict[str, Any]) -> None:
    prefix = "train-gan "
    for key, (low, none_ok) in _WHOLE.items():
        check_whole(cfg, key, low, none_ok=none_ok, prefix=prefix)
    for key, (low, above, high, below, none_ok) in _REAL.items():
        check_real(cfg, key, low, above, high, below, none_ok, prefix=prefix)
    check_whole(cfg, "seed", 0, SEED_LIMIT, prefix=prefix)
    for key in ("mirror", "export_snapshots"):
        check_flag(cfg, key, prefix=prefix)
    check_loggers(cfg, prefix=prefix)
    check_choice(cfg, "precision", PRECISIONS, prefix=prefix)
    if cfg["channels"] is not None:
        check_choice(cfg, "channels", (1, 3), prefix=prefix)


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over GAN_DEFAULTS, checked: renamed, unknown and out-of-range keys are one-line SnsErrors."""
    check_renamed("gan", cfg, "train-gan config")
    cfg = apply_aliases(cfg, GAN_DEFAULTS, "train-gan config")  # bf16=true from a Python caller: precision=bf16
    unknown = sorted(set(cfg) - set(GAN_DEFAULTS))
    if unknown:
        raise SnsError(f"train-gan config: unknown key(s) {unknown}; valid keys: {', '.join(GAN_DEFAULTS)}")
    cfg = {**copy.deepcopy(GAN_DEFAULTS), **cfg}
    if isinstance(cfg["device"], torch.device):
        cfg["device"] = str(cfg["device"])
    _check_limits(cfg)
    res = cfg["resolution"]
    if not isinstance(res, int) or res < 8 or res & (res - 1):
        raise SnsError(f"train-gan resolution={res!r}: expected a power of two >= 8 (e.g. 32)")
    B, group = cfg["batch_size"], cfg["mbstd_group_size"]  # both whole numbers >= 1 (_check_limits)
    if B % min(group, B):
        raise SnsError(f"train-gan batch_size={B}: must be >= 1 and a multiple of mbstd_group_size={group}")
    if cfg["teacher_pick"] not in ("best_fd", "last"):
        raise SnsError(f"train-gan teacher_pick={cfg['teacher_pick']!r}: expected 'best_fd' or 'last'")
    if not (
        isinstance(cfg["betas"], (list, tuple))
        and len(cfg["betas"]) == 2
        and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in cfg["betas"])
    ):
        raise SnsError(f"train-gan betas={cfg['betas']!r}: expected two numbers in [0, 1), e.g. [0.0, 0.99]")
    parse_policy(cfg["diffaug"])
    return cfg
