"""What every bench shares: where results go, the machine and commit a result was measured on, JSON writing,
mean/std over seeds and their table cells, and the ``__main__`` wrapper of a bench's ``main``."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from squeezespan import SnsError
from squeezespan.engine import bf16_native, cpu_name
from squeezespan.files import write_json

__all__ = [
    "REPO",
    "RESULTS",
    "diff_range",
    "difference",
    "git_commit",
    "machine",
    "mean_std",
    "repo_relative",
    "run_main",
    "stats",
    "write_json",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    """What a result records about where it was measured (CPU model and bf16 hardware: cells measured on different
    machines stay tellable apart; the load average: other jobs shared the CPU)."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "bf16_native": bf16_native("cpu"),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str | None:
    """The short commit of the checkout the bench runs from (None outside git): provenance only."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def repo_relative(spec: str) -> str:
    """An absolute path inside the repository as a repo-relative one (committed results name no machine path)."""
    path = Path(spec)
    if not path.is_absolute():
        return str(spec)
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(spec)


def stats(values: list[float]) -> dict[str, float | int]:
    """Mean, sample std (0 for one value), count, min and max of a metric over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "min": min(values),
        "max": max(values),
    }


def mean_std(stat: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    """A table cell: 'mean ± std' over seeds, the value alone for one seed, '-' for none."""
    if not stat:
        return "-"
    m = stat["mean"] * scale
    return f"{m:.{digits}f} ± {stat['std'] * scale:.{digits}f}" if stat["n"] > 1 else f"{m:.{digits}f}"


def difference(a: dict | None, b: dict | None) -> dict | None:
    """``a - b`` over seeds (two ``stats``): the difference of the means and its range over seed pairs
    [min a - max b, max a - min b] (None without min/max recorded); None when either is missing."""
    if not a or not b:
        return None
    spread = all(k in st for st in (a, b) for k in ("min", "max"))
    return {"mean": a["mean"] - b["mean"], "range": [a["min"] - b["max"], a["max"] - b["min"]] if spread else None}


def diff_range(a: dict | None, b: dict | None) -> str:
    """A table cell of ``difference(a, b)``: the mean and, in brackets, its range over seed pairs; no bracket when
    both have one seed (or no min/max recorded), '-' when either is missing."""
    d = difference(a, b)
    if d is None:
        return "-"
    if d["range"] is None or (a.get("n", 1) < 2 and b.get("n", 1) < 2):
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['range'][0]:+.2f}, {d['range'][1]:+.2f}]"


def run_main(main: Callable[[list[str]], int | None]) -> None:
    """A bench's ``__main__``: exit with main(argv)'s code; a bad input is one `error:` line (exit 2)."""
    try:
        sys.exit(main(sys.argv[1:]))
    except SnsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
