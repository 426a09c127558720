"""The one training engine: devices and precision, distributed runs, the run directory (checkpoints, resume,
RNG states, signals), logging, and the training loop ``fit`` shared by every method.

The engine knows no method's loss, no teacher and no evaluation: an objective is any module mapping
``StepInputs`` to ``(loss, logs)``, and monitors come in as callbacks.
"""

from .checkpoint import checkpointed_step, load_checkpoint, load_latest, save_checkpoint
from .device import (
    PRECISIONS,
    autocast,
    bf16_native,
    cpu_name,
    decide_precision,
    fp16_native,
    grad_scaler,
    resolve_bf16,
    resolve_device,
    resolve_precision,
)
from .distributed import World, setup
from .fit import Callback, FitResult, Start, begin, fit, lr_at
from .logging import MetricsLogger, read_metrics
from .run import (
    RunDir,
    StopSignal,
    config_diff,
    describe_diff,
    prepare_run_dir,
    save_config,
    state_fits,
    tensors_sha256,
)
from .step import RealStream, StepInputs, step_inputs

__all__ = [
    "PRECISIONS",
    "Callback",
    "FitResult",
    "MetricsLogger",
    "RealStream",
    "RunDir",
    "Start",
    "StepInputs",
    "StopSignal",
    "World",
    "autocast",
    "begin",
    "checkpointed_step",
    "config_diff",
    "describe_diff",
    "bf16_native",
    "cpu_name",
    "decide_precision",
    "fp16_native",
    "grad_scaler",
    "fit",
    "load_checkpoint",
    "load_latest",
    "lr_at",
    "prepare_run_dir",
    "read_metrics",
    "resolve_bf16",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "save_config",
    "state_fits",
    "tensors_sha256",
    "setup",
    "step_inputs",
]
