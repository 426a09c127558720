"""The run object shared by every training loop (pretrain and train-gan): one run directory's checkpoints,
resume, per-rank RNG states, config.yaml and the SIGINT/SIGTERM stop flag.

A loop uses it like this::

    run = RunDir(run_dir, world, keep=cfg["keep_ckpts"], log=log)
    run.prepare()                                    # checkpoints/ exists, half-written files are gone
    found = run.load_latest() if resume else None    # every rank gets rank 0's newest good checkpoint
    if found is not None:
        state, path = found
        model.load_state_dict(state["model"])
        run.restore_rng(state, reseed=seed + step)   # exact, or reseeded with a warning
    run.write_config(cfg)                            # the resolved config that runs
    with StopSignal() as stop:
        for step in ...:
            ...
            run.save(step, {"model": model.state_dict()})  # collective: every rank calls it

Only rank 0 touches the disk; the other ranks take part in the collectives (gathering their RNG states,
receiving the checkpoint), so no shared file system is needed.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import SnsError
from ..files import atomic_write_bytes
from .checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from .distributed import World

__all__ = [
    "RunDir",
    "StopSignal",
    "prepare_run_dir",
    "rank_rng_state",
    "save_config",
    "set_rank_rng_state",
]


def prepare_run_dir(out: str | os.PathLike, resume: bool = False, force: bool = False) -> Path:
    """Create ``out``; a non-empty one is refused unless resuming (keep it) or forcing (reuse it)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SnsError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (resume or force):
        raise SnsError(f"--out {path} is not empty; pass --resume to continue that run or --force to start over in it")
    if resume and not (path.is_dir() and any(path.iterdir())):
        raise SnsError(f"--resume given but --out {path} holds no run to resume")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SnsError(f"--out {path} is not writable: {e.strerror}") from None
    return path


def save_config(run_dir: str | os.PathLike, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write ``cfg`` atomically as YAML into ``run_dir/name`` (keys in the config's order)."""
    p = Path(run_dir) / name
    atomic_write_bytes(p, yaml.safe_dump(cfg, sort_keys=False).encode())
    return p


def rank_rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every RNG this process draws from: torch's CPU generator, Python's, and ``device``'s CUDA generator.

    Args:
        device: the process's training device; its CUDA generator is saved when it is a GPU.

    Returns:
        A dict of plain tensors and tuples (``torch.load(weights_only=True)`` can read it back).
    """
    device = torch.device(device)
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rank_rng_state(state: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore what ``rank_rng_state`` saved (also reads the older formats of pretrain and train-gan checkpoints).

    Args:
        state: one rank's RNG state.
        device: the process's training device; its CUDA generator is restored when the state has one.
    """
    if "rng" in state:  # train-gan's older per-rank entry: {"rng": {...}, "cuda_rng": tensor | None}
        state = {**state["rng"], "cuda": state.get("cuda_rng")}
    device = torch.device(device)
    torch.set_rng_state(state["torch"])
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):  # older pretrain checkpoints saved every visible GPU's state
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda, device)


class StopSignal:
    """SIGINT/SIGTERM set ``requested`` (the signal's name); the loop checkpoints and exits at the end of the step.

    A second signal raises KeyboardInterrupt at once. Outside the main thread no handler can be installed and
    ``requested`` stays None. Use as a context manager: the previous handlers come back on exit.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class RunDir:
    """A run directory as the training loops see it: ``checkpoints/ckpt-<step>.pt``, ``config.yaml``, resume.

    A checkpoint is the loop's payload (any dict of tensors, numbers, strings, nested dicts/lists) plus
    ``step``, ``world_size``, ``rng`` (rank 0's RNG state) and, with several processes, ``rng_ranks`` (every
    rank's, in rank order). Writes are atomic and checksummed (engine.checkpoint), and only the newest
    ``keep`` checkpoints stay.

    Args:
        path: the run directory (created by ``prepare`` on rank 0 if missing).
        world: this process's place in the run (``World()`` for a single process).
        keep: checkpoints kept after each save (at least 1 always stays).
        log: where rank 0's messages go (warnings about corrupt checkpoints, reseeded RNGs).
    """

    def __init__(self, path: str | os.PathLike, world: World, keep: int = 2, log: Callable[[str], Any] = print):
        self.path = Path(path)
        self.world = world
        self.keep = int(keep)
        self.log = log

    @property
    def ckpt_dir(self) -> Path:
        """``<path>/checkpoints``."""
        return self.path / "checkpoints"

    def prepare(self) -> None:
        """Rank 0 creates the checkpoints folder and deletes half-written temporaries of a killed run."""
        if self.world.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.ckpt_dir)

    def write_config(self, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
        """Rank 0 writes ``cfg`` (the resolved config that runs) atomically as YAML.

        Args:
            cfg: plain values only (YAML safe_dump).
            name: file name inside the run directory.

        Returns:
            The path of the file (also on ranks that did not write it).
        """
        if self.world.is_main:
            return save_config(self.path, cfg, name)
        return self.path / name

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that verifies, read by rank 0 and broadcast to every rank (collective).

        Corrupted newer checkpoints are reported through ``log`` and skipped.

        Returns:
            ``(state, path)``, or None when no checkpoint was written yet (resuming is then starting over,
            which gives the same run).

        Raises:
            SnsError: checkpoints exist but every one is corrupted or truncated.
        """
        found, error = None, None
        if self.world.is_main:
            found = load_latest(self.ckpt_dir, map_location="cpu", warn=self.log)
            if found is None and list_checkpoints(self.ckpt_dir):
                error = f"--resume: no usable checkpoint in {self.ckpt_dir} (every one is corrupted or truncated)"
            elif found is None:
                self.log(f"--resume: no checkpoint in {self.ckpt_dir} yet; starting from step 0")
        box = self.world.broadcast({"found": found, "error": error})
        if box["error"]:
            raise SnsError(box["error"])
        return box["found"]

    def restore_rng(self, state: dict[str, Any], reseed: int) -> bool:
        """This rank's RNG state from ``state``, or a fresh ``torch.manual_seed(reseed)`` with a warning.

        A run resumed on another number of processes continues its weights, optimizer and data order exactly;
        only the per-rank random streams (augmentation, noise) cannot be, so they are reseeded.

        Args:
            state: a checkpoint written by ``save``.
            reseed: this rank's seed when the world size changed (the caller mixes in step and rank).

        Returns:
            True when the saved state was restored (the resumed run is bit-identical), False when reseeded.
        """
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.world.size:
            set_rank_rng_state(ranks[self.world.rank], self.world.device)
            return True
        self.log(
            f"warning: checkpoint was written by {len(ranks)} process(es), this run has {self.world.size}: "
            "random streams (augmentation, noise) are reseeded, so the run is not bit-identical to an "
            "uninterrupted one"
        )
        torch.manual_seed(reseed)
        return False

    def save(self, step: int, payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> Path | None:
        """Checkpoint ``step`` (collective: every rank calls it at the same steps, to gather the RNG states).

        Args:
            step: the number of steps done; names the file ``ckpt-<step>.pt``.
            payload: the loop's state, or a function returning it, called on rank 0 only and after the
                gather (so it may check the state and raise without writing anything).

        Returns:
            The checkpoint's path on rank 0, None on the other ranks.
        """
        rngs = self.world.gather(rank_rng_state(self.world.device))
        if not self.world.is_main:
            return None
        state = dict(payload() if callable(payload) else payload)
        state.update(step=int(step), rng=rngs[0], world_size=self.world.size)
        if self.world.size > 1:
            state["rng_ranks"] = rngs
        path = save_checkpoint(checkpoint_path(self.ckpt_dir, step), state)
        prune_checkpoints(self.ckpt_dir, self.keep)
        return path
