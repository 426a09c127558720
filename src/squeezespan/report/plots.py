"""Plots for reports: kNN accuracy against step per method, and accuracy bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure", "plot_curves", "plot_bars"]


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Write ``fig`` to ``path`` (parent folders made) and free it; pyplot keeps every open figure otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **savefig_kwargs)
    plt.close(fig)
    return path


def plot_curves(
    curves: dict[str, Sequence[tuple[int, float]]],
    path: str | Path,
    ylabel: str = "kNN top-1 (%)",
    title: str = "kNN accuracy during pretraining",
) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bars(
    values: dict[str, float], path: str | Path, ylabel: str = "linear probe top-1 (%)", title: str = ""
) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color=["#4C72B0", "#DD8452", "#55A868", "#C44E52"][: len(names)])
    for b, n in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{values[n]:.1f}", ha="center", va="bottom")
    lo = min(values.values())
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
