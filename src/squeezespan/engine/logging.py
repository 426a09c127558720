"""Run logging, by rank 0 only: metrics as JSON lines (metrics.jsonl), TensorBoard scalars (tb/) and the
experiment trackers of engine.trackers (MLflow, Weights & Biases), as the run's ``loggers`` key lists them."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .trackers import Tracker, open_trackers


class MetricsLogger:
    """Append ``{"step": s, "time": t, **metrics}`` lines to ``metrics.jsonl``, mirror scalars to TensorBoard and
    send them to the trackers (MLflow, W&B) that ``loggers`` names.

    On resume the JSONL is truncated to lines with step <= the resumed step, so the file reads as one
    uninterrupted run, and the trackers reopen the tracker runs of trackers.json.

    Args:
        run_dir: the run directory.
        enabled: False on every rank but 0: nothing is written or opened.
        tensorboard: with ``loggers`` None, whether TensorBoard mirrors metrics.jsonl.
        resume_step: the resumed checkpoint's step (None: a new run).
        loggers: names from ``trackers.LOGGERS``; None = jsonl (+ tensorboard).
        config: the resolved config, the trackers' params.
        kind: the command, a tag of the tracker runs (``pretrain``, ``train-gan``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
        loggers: Sequence[str] | None = None,
        config: dict[str, Any] | None = None,
        kind: str = "run",
    ):
        names = list(loggers) if loggers is not None else ["jsonl"] + (["tensorboard"] if tensorboard else [])
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = self._f = None
        self._trackers: list[Tracker] = []
        self._closed = False
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and _step_of(ln) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if "jsonl" in names:
            self._f = open(self.path, "a")
        self._trackers = open_trackers(names, Path(run_dir), dict(config or {}), resume_step, kind)
        if "tensorboard" in names:
            try:  # optional: tensorboard may be missing, and importing it is slow, so only here
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step)
            except Exception:  # noqa: BLE001 - TensorBoard is a convenience; JSONL is the record
                self._tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if hasattr(v, "item") or isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        now = round(time.time(), 3)
        if self._f is not None:
            self._f.write(json.dumps({"step": int(step), "time": now, **clean}) + "\n")
            self._f.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        numbers = {k: v for k, v in clean.items() if isinstance(v, float)}
        for t in list(self._trackers):
            self._guard(t, "log", t.log, int(step), numbers, now)

    def log_artifact(self, name: str, paths: Sequence[str | Path]) -> None:
        """Give the trackers the run's product (files or folders) as the artifact ``name``; jsonl and tb have none."""
        if not self.enabled:
            return
        for t in list(self._trackers):
            self._guard(t, "artifact", t.artifact, name, [Path(p) for p in paths])

    def _guard(self, tracker: Tracker, what: str, fn, *args) -> None:
        """A tracker failing mid-run (a server gone) is dropped with a warning: the run and metrics.jsonl go on."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - any tracker error; opening errors are raised before training
            self._trackers.remove(tracker)
            print(
                f"warning: {tracker.name} {what} failed ({type(e).__name__}: {e}); not logging to it any more",
                file=sys.stderr,
            )

    def close(self, status: str = "finished") -> None:
        """Close the files and end the tracker runs as ``finished``, ``interrupted`` or ``failed`` (idempotent)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._f is not None:
            self._f.close()
        if self._tb is not None:
            self._tb.close()
        for t in list(self._trackers):
            self._guard(t, "close", t.close, status)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except Exception:  # noqa: BLE001 - a torn last line from a killed run is dropped
        return 1 << 62


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for ln in path.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return out
