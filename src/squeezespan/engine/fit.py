"""The one training loop: ``fit`` trains a student with any objective (squeeze, VICReg, SimSiam, supervised, ...).

Per step: the step's inputs, the objective's loss under autocast, a finiteness check across ranks, backward,
gradient clipping, the optimizer step under the learning-rate schedule, logging, periodic checkpoints and a
clean stop on a signal or ``stop_after``. The loop never knows a loss: an objective is any module mapping
``StepInputs`` to ``(loss, logs)``. Monitors (the kNN monitor of pretraining) come in as callbacks.

A minimal use, in one process::

    run = RunDir("runs/x", World(), keep=2)
    run.prepare()
    start = begin(run, student, objective, optimizer, seed=0, resume=False)
    logger = MetricsLogger(run.path, resume_step=start.resume_step)
    fit(student, objective, optimizer, lambda step: my_inputs(step), run, logger, start,
        total=1000, base_lr=0.03, batch_size=256)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import SnsError
from .device import autocast, grad_scaler
from .distributed import Trainable, World, convert_batchnorm, wrap_ddp
from .logging import MetricsLogger
from .run import RunDir, StopSignal, state_fits
from .step import StepInputs

__all__ = ["Callback", "FitResult", "Start", "begin", "fit", "lr_at"]

# After each step rank 0 calls every callback with (steps done, total steps); a dict it returns is logged at
# that step (e.g. the kNN monitor's accuracy), None means it had nothing to do at this step.
Callback = Callable[[int, int], "dict[str, float] | None"]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 0 (per step; the paper decays per epoch).

    Args:
        step: steps done before this one.
        total: steps of the whole run.
        base: the peak learning rate.
        warmup: steps of linear warmup (0 = none).

    Returns:
        The learning rate of ``step``.
    """
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class Start:
    """Where a training segment starts: step 0 of a new run, or a resumed checkpoint's step."""

    step: int = 0
    earlier_s: float = 0.0  # training time of the segments before this one (checkpoints carry it)
    path: str | None = None  # the checkpoint resumed from
    scaler: dict[str, Any] | None = None  # the fp16 loss scaler's state in that checkpoint (None: none saved)

    @property
    def resume_step(self) -> int | None:
        """For ``MetricsLogger(resume_step=...)``: the step to truncate the metrics to, None for a new run."""
        return self.step if self.path is not None else None


def begin(
    run: RunDir,
    student: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    seed: int,
    resume: bool,
) -> Start:
    """Load the newest good checkpoint into the models and optimizer (``resume``), or seed a new run.

    A new run seeds torch with ``seed + 1`` on rank 0 (exactly what a single process draws) and its own
    stream on every other rank (augmentation). A resumed run restores every rank's RNG state; on another
    number of processes it reseeds (RunDir.restore_rng warns). A checkpoint of another run (another identity, or
    weights that do not fit these models) is skipped by name; none fitting is a one-line SnsError.

    Args:
        run: the run directory (collective: every rank calls ``begin``).
        student, objective, optimizer: filled from the checkpoint's ``student``, ``objective``, ``optimizer``.
        seed: the run's seed.
        resume: look for a checkpoint at all; with none written yet the run starts over (the same run).

    Returns:
        The segment's Start.
    """

    def fits(state: dict[str, Any]) -> str | None:  # checked before anything loads: no half-loaded model
        return state_fits(student, state.get("student"), "student") or state_fits(
            objective, state.get("objective"), "objective"
        )

    found = run.load_latest(fits) if resume else None
    if found is None:
        torch.manual_seed(seed + 1 + 1_000_003 * run.world.rank)
        return Start()
    state, path = found
    student.load_state_dict(state["student"])
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    step = int(state["step"])
    run.restore_rng(state, reseed=(seed + 1) * 1_000_003 + step * 7919 + run.world.rank)
    return Start(
        step=step, earlier_s=float(state.get("train_time_s", 0.0)), path=str(path), scaler=state.get("scaler") or None
    )


@dataclass
class FitResult:
    """What a call of ``fit`` did."""

    step: int  # steps done when it returned
    interrupted: bool  # stopped early (signal or stop_after) with a checkpoint; resume continues it
    reason: str | None  # why it stopped early: the signal's name, "stop_after", or another rank's signal
    segment_s: float  # wall time of this call's steps
    train_time_s: float  # of the whole run: earlier segments + this one
    images: int  # images trained on in this call (global batch x steps)


def fit(
    student: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Callable[[int], StepInputs],
    run: RunDir,
    logger: MetricsLogger,
    start: Start,
    *,
    total: int,
    base_lr: float,
    batch_size: int,
    warmup_steps: int = 0,
    grad_clip: float = 0.0,
    precision: str = "fp32",
    log_every: int = 10,
    ckpt_every: int = 0,
    stop_after: int | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    desc: str = "fit",
    log: Callable[[str], Any] = print,
) -> FitResult:
    """Train ``student`` and ``objective`` from ``start.step`` to ``total`` steps (collective under torchrun).

    Args:
        student: the backbone being trained (checkpointed as ``student``).
        objective: the method: ``objective(inputs) -> (loss, logs)``, its heads checkpointed as ``objective``.
        optimizer: over the student's and objective's parameters; its lr is set every step by ``lr_at``.
        inputs: step -> this rank's StepInputs (real images, labels, teacher images, augment, encode).
        run: the run directory: checkpoints every ``ckpt_every`` steps, at the end and when stopping early.
        logger: metrics of rank 0 (loss, lr, img/s, the objective's logs averaged over ranks, callbacks').
        start: from ``begin``.
        total: steps of the whole run.
        base_lr: the peak learning rate of the schedule.
        batch_size: images per step over all ranks (for img/s).
        warmup_steps, grad_clip: the schedule's warmup; gradient-norm clipping (0 = off).
        precision: "bf16" or "fp16" autocast, or "fp32" (a resolved ``precision``, see engine.device). fp16 scales
            the loss (torch.amp.GradScaler: a step whose gradients overflow is skipped and the scale lowered);
            the scaler's state is checkpointed as ``scaler``, so a resumed fp16 run continues exactly.
        log_every, ckpt_every: steps between metric lines; between checkpoints (0 = only at the end).
        stop_after: checkpoint and return after this many steps as if interrupted (time-sliced runs, tests).
        callbacks: called on rank 0 after every step, see ``Callback``.
        progress, desc, log: a tqdm bar on rank 0, labelled ``desc``; rank 0's messages.

    Returns:
        A FitResult. A non-finite loss (on any rank) or non-finite weights raise SnsError, keeping the last
        good checkpoint.
    """
    world = run.world
    if world.size > 1:  # BatchNorm statistics of the global batch, as one process with the whole batch sees them
        convert_batchnorm(student, world.device)
        convert_batchnorm(objective, world.device)
    model = wrap_ddp(Trainable(student, objective), world)
    model.train()
    show = progress and world.is_main
    bar = tqdm(total=total, initial=start.step, disable=not show, desc=desc, unit="step", dynamic_ncols=True)
    t0, images, done = time.perf_counter(), 0, start.step
    scaler = grad_scaler(world.device, precision)
    if scaler.is_enabled() and start.scaler:
        scaler.load_state_dict(start.scaler)

    def payload() -> dict[str, Any]:
        for name, module in (("student", student), ("objective", objective)):
            _check_finite(name, module, done, run)
        return dict(
            student=student.state_dict(),
            objective=objective.state_dict(),
            optimizer=optimizer.state_dict(),
            train_time_s=start.earlier_s + time.perf_counter() - t0,
            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
        )

    try:
        with StopSignal() as stop:
            for step in range(start.step, total):
                lr = lr_at(step, total, base_lr, warmup_steps)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss, logs, stop_elsewhere = _train_step(
                    model, optimizer, scaler, inputs(step), step, stop, run, precision, grad_clip
                )
                images += batch_size
                done = step + 1
                if done % log_every == 0 or done == total:
                    _log_step(logger, bar, world, done, loss, logs, lr, images / max(1e-9, time.perf_counter() - t0))
                _run_callbacks(callbacks, done, total, world, logger, model)
                bar.update(1)
                stopping = stop_elsewhere if stop_elsewhere is not None else stop.requested is not None
                early = stopping or (stop_after is not None and done == stop_after and done != total)
                if (ckpt_every and done % ckpt_every == 0) or done == total or early:
                    run.save(done, payload)
                if early:
                    reason = stop.requested or ("a signal to another rank" if stopping else "stop_after")
                    log(f"\n{reason}: checkpoint saved at step {done}; continue with --resume")
                    return _result(done, True, reason, t0, start, images)
    finally:
        bar.close()
    world.barrier()
    return _result(done, False, None, t0, start, images)


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    inputs: StepInputs,
    step: int,
    stop: StopSignal,
    run: RunDir,
    precision: str,
    grad_clip: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool | None]:
    """Loss under autocast, the all-rank check, backward, clipping, the optimizer step (through the fp16 loss
    scaler, a pass-through in bf16 and fp32).

    Returns:
        The loss, the objective's logs, and whether another rank got a signal (None in one process).
    """
    with autocast(run.world.device, precision):
        loss, logs = model(inputs)
    stop_elsewhere = _check_step(loss, stop, step, run)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss, logs, stop_elsewhere


def _check_step(loss: torch.Tensor, stop: StopSignal, step: int, run: RunDir) -> bool | None:
    """One small all-reduce per step: every rank stops at the same step, for a NaN anywhere or a signal.

    Returns whether any rank got a signal (None in a single process, where the local flag is read later).
    """
    world = run.world
    flags = world.sum_(
        torch.tensor([float(not torch.isfinite(loss)), float(stop.requested is not None)], device=world.device)
    )
    if flags[0] > 0:
        raise SnsError(
            f"loss became {loss.item() if world.size == 1 else 'non-finite'} at step {step + 1}; "
            f"stopped, last good checkpoint kept in {run.ckpt_dir} (try a lower lr or warmup_steps)"
        )
    return bool(flags[1] > 0) if world.size > 1 else None


def _log_step(logger, bar, world: World, done: int, loss, logs: dict[str, Any], lr: float, rate: float) -> None:
    """One metrics line: the loss and the objective's logs averaged over ranks, lr and images per second."""
    scalars = _mean_over_ranks({"loss": loss.detach(), **logs}, world)
    logger.log(done, {"loss": scalars.pop("loss"), "lr": lr, "img_per_s": rate, **scalars})
    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")


def _run_callbacks(callbacks: Sequence[Callback], done: int, total: int, world: World, logger, model) -> None:
    """Rank 0's monitors; a monitor that evaluated (returned metrics) may have left the student in eval mode."""
    if not world.is_main:
        return
    for callback in callbacks:
        metrics = callback(done, total)
        if metrics:
            logger.log(done, metrics)
            model.train()


def _result(done: int, interrupted: bool, reason: str | None, t0: float, start: Start, images: int) -> FitResult:
    segment_s = time.perf_counter() - t0
    return FitResult(done, interrupted, reason, segment_s, start.earlier_s + segment_s, images)


def _check_finite(name: str, module: nn.Module, step: int, run: RunDir) -> None:
    """Never let non-finite weights replace the last good checkpoint (a finite loss can still give inf weights)."""
    for key, t in module.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise SnsError(
                f"{name} weight {key} became non-finite after step {step}; stopped without saving, "
                f"last good checkpoint kept in {run.ckpt_dir} (try a lower lr or warmup_steps)"
            )


def _mean_over_ranks(scalars: dict[str, Any], world: World) -> dict[str, Any]:
    """Logged scalars averaged over ranks (one all-reduce), so rank 0's log speaks for the global batch."""
    if world.size == 1:
        return dict(scalars)
    keys = list(scalars)
    vec = torch.stack([torch.as_tensor(scalars[k], dtype=torch.float32, device=world.device).reshape(()) for k in keys])
    vec = world.sum_(vec) / world.size
    return {k: v for k, v in zip(keys, vec.tolist())}
