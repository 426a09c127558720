"""Run logging: metrics as JSON lines plus TensorBoard scalars, written by rank 0 only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Append ``{"step": s, "time": t, **metrics}`` lines to ``metrics.jsonl`` and mirror scalars to TensorBoard.

    On resume the JSONL is truncated to lines with step <= the resumed step, so the file reads as one
    uninterrupted run.
    """

    def __init__(
        self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and _step_of(ln) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a")
        if tensorboard:
            try:  # optional: tensorboard may be missing, and importing it is slow, so only here
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step)
            except Exception:  # noqa: BLE001 - TensorBoard is a convenience; JSONL is the record
                self._tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if hasattr(v, "item") or isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        self._f.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()


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
