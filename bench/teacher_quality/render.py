"""The teacher-quality bench's Markdown table and its figure (accuracy against the teacher's FD-ref)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.ticker

from bench.common import mean_std
from squeezespan.report.plots import plt, save_figure


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(table: dict[str, Any]) -> str:
    lines = []
    if table.get("smoke"):
        lines += [
            "# Teacher quality vs student quality: SMOKE RUN (--quick), NOT A RESULT",
            "",
            "Tiny budget, narrow student and evaluation subsets: these numbers only show that the cells run.",
            "",
        ]
    else:
        lines += ["# Teacher quality vs student quality (Fashion-MNIST; the paper's Figure 4 at CPU scale)", ""]
    lines += [
        f"One student per teacher snapshot of one GAN training, trained with the `fashion-cpu` preset (lr "
        f"{table['lr']:g}, seeds {table['seeds']}) for {table['budget_passes']} student image passes "
        f"(warmup capped at {table['warmup_share']:.0%} of the steps); evaluation: {table['evaluation']}, "
        "kNN k=200 t=0.1 and the fast linear probe, both on the test set. FD-ref: the teacher's Frechet "
        "distance in our reference CNN's features (5,000 generated vs 10,000 real images; lower is better; "
        "not FID). `squeeze` sees no real image: what it learns comes from the teacher alone.",
        "",
        "| kimg | FD-ref | row | linear top-1 | kNN top-1 | wall (min) | steps | seeds | G_ema sha256 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in table["teachers"]:
        rows = t["rows"] or {"-": {}}
        for name, r in rows.items():
            lines.append(
                f"| {t['kimg']:g} | {fmt(t['fd_ref'])} | {name} | {mean_std(r.get('linear_top1'))} | "
                f"{mean_std(r.get('knn_top1'))} | {mean_std(r.get('wall_s'), 1 / 60, 1)} | "
                f"{r.get('steps', '-')} | {len(r.get('seeds', []))} | {t['G_ema_sha256']} |"
            )
    lines.append("")
    m = table.get("machine", {})
    lines.append(
        f"Machine: {m.get('platform')}, {m.get('cpus')} CPUs, torch {m.get('torch')}, load average at write "
        f"time {m.get('loadavg')}; commit {table.get('commit')}; written {table.get('created')}."
    )
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path, rows: tuple[str, ...]) -> Path:
    """Linear and kNN top-1 against the teacher's FD-ref (log x), one line per method row (in ``rows``' order,
    which sets each line's style), points labelled by kimg."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for ax, key, name in zip(axes, ("linear_top1", "knn_top1"), ("linear probe", "kNN")):
        for i, row_name in enumerate(rows):
            pts = sorted(
                (
                    (t["fd_ref"], t["rows"][row_name][key], t["kimg"])
                    for t in table["teachers"]
                    if row_name in t["rows"] and t["fd_ref"] is not None and t["fd_ref"] > 0
                ),
                key=lambda p: p[0],
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["mean"] for p in pts]
            es = [p[1]["std"] for p in pts]
            ax.errorbar(
                xs,
                ys,
                yerr=es if any(es) else None,
                marker="o",
                ms=4,
                capsize=3,
                label=row_name,
                linestyle=("-", "--")[i % 2],
            )
            for x, y, p in zip(xs, ys, pts if i == 0 else ()):  # label each teacher once
                ax.annotate(f"{p[2]:g} kimg", (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.margins(x=0.12, y=0.12)  # room for the kimg labels at the ends
        ax.set_xlabel("teacher FD-ref (log scale; lower = better generator)")
        ax.set_ylabel(f"{name} top-1 on test (%)")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    smoke = " (SMOKE RUN, not a result)" if table.get("smoke") else ""
    fig.suptitle(
        f"Fashion-MNIST: student accuracy vs teacher quality, {table['budget_passes']} student passes{smoke}",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)
