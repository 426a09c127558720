"""Plots for reports: kNN accuracy against step per method, and accuracy bars (from zero, one bar per probe)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure", "plot_curves", "plot_bars"]

COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


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
    xlabel: str = "pretraining step",
) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _spread(value: float | Sequence[float]) -> tuple[float, float, float, list[float]]:
    """(mean, mean - min, max - mean, values) of one bar: a number, or one value per seed."""
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, 0.0, 0.0, []
    mean = sum(values) / len(values)
    return mean, mean - min(values), max(values) - mean, values


def plot_bars(
    values: dict[str, float | Sequence[float] | dict[str, float | Sequence[float]]],
    path: str | Path,
    ylabel: str = "top-1 accuracy (%)",
    title: str = "",
    xlabel: str = "backbone",
    ymax: float = 100.0,
) -> Path:
    """Accuracy bars from a zero baseline, so a one-point gap looks like one point.

    ``values`` maps each group (a backbone) to a number, to one number per seed, or to ``{series: number or
    numbers}`` (e.g. ``{"linear": 96.4, "kNN": 94.1}``: the series stand side by side, one colour each). Several
    numbers make the bar their mean with a min-max whisker and every seed as a dot; every bar is labelled.
    """
    groups = list(values)
    nested = {g: (v if isinstance(v, dict) else {"": v}) for g, v in values.items()}
    series = list(dict.fromkeys(s for g in groups for s in nested[g]))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(groups) * max(1, len(series)) + 2), 3.8), dpi=120)
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        xs, means, lo, hi, dots = [], [], [], [], []
        for i, g in enumerate(groups):
            if s not in nested[g]:
                continue
            mean, down, up, vals = _spread(nested[g][s])
            if math.isnan(mean):
                continue
            x = i + (j - (len(series) - 1) / 2) * width
            xs.append(x)
            means.append(mean)
            lo.append(down)
            hi.append(up)
            dots += [(x, v) for v in vals] if len(vals) > 1 else []
        colour = COLOURS[j % len(COLOURS)] if len(series) > 1 else [COLOURS[i % len(COLOURS)] for i in range(len(xs))]
        bars = ax.bar(xs, means, width=width * 0.95, color=colour, label=s or None)
        spread = [k for k in range(len(xs)) if lo[k] or hi[k]]  # whiskers only where seeds differ
        if spread:
            ax.errorbar(
                [xs[k] for k in spread],
                [means[k] for k in spread],
                yerr=[[lo[k] for k in spread], [hi[k] for k in spread]],
                fmt="none",
                ecolor="black",
                capsize=3,
                lw=1,
            )
        if dots:
            ax.scatter(*zip(*dots), s=8, color="black", zorder=3)
        for b, m, up in zip(bars, means, hi):
            ax.text(b.get_x() + b.get_width() / 2, m + up + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylim(0, ymax * 1.2)  # headroom above the tallest bar for the labels and the legend
    ax.set_yticks([v for v in range(0, int(ymax) + 1, 20)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if any(series):
        ax.legend(loc="upper center", ncol=len(series), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
