"""The one training engine: run directories, checkpoints, logging and the training loop shared by every method."""

from .checkpoint import load_checkpoint, load_latest, save_checkpoint
from .logging import MetricsLogger, read_metrics
from .rundir import autocast, prepare_run_dir, resolve_device, save_config

__all__ = [
    "MetricsLogger",
    "autocast",
    "load_checkpoint",
    "load_latest",
    "prepare_run_dir",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "save_config",
]
