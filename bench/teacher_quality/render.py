"""The teacher-quality bench's Markdown table and its figure (accuracy against the teacher's FD-ref)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.ticker

from bench.common import diff_range, mean_std
from squeezespan.report.plots import plt, save_figure


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


RHO = {"squeeze": 1.0, "sns": 0.5, "vicreg-real": 0.0}  # each row's synthetic share of the batch


def render_span(table: dict[str, Any]) -> list[str]:
    """The --sitting table: per teacher, rho = 1 (squeeze) and rho = 0.5 (sns) and what span changes; rho = 0."""
    refs = table.get("references", {})
    ref = refs.get("vicreg-real", {})
    full = table.get("span_mode") == "full"
    budget, mode = ("ten epoch-equivalents", "full") if full else ("one sitting", "sitting")
    lines = [
        f"# When does span pay? Squeeze vs Squeeze and Span against teacher quality (Fashion-MNIST, {budget})",
        "",
        f"The fashion bench's {mode} cells (`sns bench fashion --mode {mode}`: {table['budget_passes']} student "
        f"image passes, lr {table['lr']:g}, the same warmup, bf16, full track) with each snapshot of one GAN "
        "training as the teacher. rho is the synthetic share of the batch: 1 = `squeeze` (no real image), "
        f"0.5 = `sns`, 0 = `vicreg-real` (no teacher: one row for all). Evaluation: {mode} (full train/test "
        "sets), kNN k=200 t=0.1 and the fast linear probe on the test set. FD-ref: the teacher's Frechet "
        "distance in our reference CNN's features (lower is better; not FID). A cell that the fashion bench "
        "already ran with the same config and teacher is the same run and is reused. Differences: mean, and "
        "in brackets the range over seed pairs.",
        "",
    ]
    done = sum(len(r.get("seeds", [])) for t in table["teachers"] for r in t["rows"].values())
    done += sum(len(r.get("seeds", [])) for r in refs.values())
    planned = int(table.get("seeds", 1)) * (2 * len(table["teachers"]) + 1)
    if done < planned:
        lines += [f"**Incomplete: {done} of {planned} cells so far.** Re-run the command to continue.", ""]
    lines += [
        "| kimg | FD-ref | rho = 1 (squeeze): linear / kNN | rho = 0.5 (sns): linear / kNN | span pays? sns - squeeze "
        "(linear) | sns - vicreg-real (linear) | seeds | G_ema sha256 |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in table["teachers"]:
        sq, sn = t["rows"].get("squeeze", {}), t["rows"].get("sns", {})
        seeds = "/".join(str(len(r.get("seeds", []))) for r in (sq, sn))
        lines.append(
            f"| {t['kimg']:g} | {fmt(t['fd_ref'])} | {mean_std(sq.get('linear_top1'))} / "
            f"{mean_std(sq.get('knn_top1'))} | {mean_std(sn.get('linear_top1'))} / {mean_std(sn.get('knn_top1'))} "
            f"| {diff_range(sn.get('linear_top1'), sq.get('linear_top1'))} | "
            f"{diff_range(sn.get('linear_top1'), ref.get('linear_top1'))} | {seeds} | {t['G_ema_sha256']} |"
        )
    lines += [
        "",
        f"rho = 0 (vicreg-real, real images only, no teacher; lr {table['lr']:g}): linear "
        f"{mean_std(ref.get('linear_top1'))}, kNN {mean_std(ref.get('knn_top1'))} "
        f"({len(ref.get('seeds', []))} seed{'' if len(ref.get('seeds', [])) == 1 else 's'}).",
        "",
        "| row | rho | teacher kimg | wall (min) | steps | CPU of its cells |",
        "|---|---:|---:|---:|---:|---|",
    ]
    cells = [(n, t["kimg"], r) for t in table["teachers"] for n, r in t["rows"].items()]
    cells += [(n, None, r) for n, r in refs.items()]
    for name, kimg, r in cells:
        lines.append(
            f"| {name} | {RHO.get(name, float('nan')):g} | {'-' if kimg is None else f'{kimg:g}'} | "
            f"{mean_std(r.get('wall_s'), 1 / 60, 1)} | {r.get('steps', '-')} | {'; '.join(r.get('cpus', []))} |"
        )
    return lines


def render_markdown(table: dict[str, Any]) -> str:
    if table.get("sitting"):
        return "\n".join(render_span(table) + ["", machine_line(table)]) + "\n"
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
    lines += ["", machine_line(table)]
    return "\n".join(lines) + "\n"


def machine_line(table: dict[str, Any]) -> str:
    m = table.get("machine", {})
    return (
        f"Machine: {m.get('platform')}, {m.get('cpus')} CPUs, torch {m.get('torch')}, load average at write "
        f"time {m.get('loadavg')}; commit {table.get('commit')}; written {table.get('created')}."
    )


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
                label=f"{row_name} (rho {RHO[row_name]:g})" if table.get("sitting") else row_name,
                linestyle=("-", "--")[i % 2],
            )
            for x, y, p in zip(xs, ys, pts if i == 0 else ()):  # label each teacher once
                ax.annotate(f"{p[2]:g} kimg", (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7)
        for ref_name, ref in table.get("references", {}).items():  # rows without a teacher: level lines
            st = ref[key]
            ax.axhline(st["mean"], color="0.35", linestyle=":", label=f"{ref_name} (rho {RHO[ref_name]:g}, no teacher)")
            if st["n"] > 1:
                ax.axhspan(st["min"], st["max"], color="0.5", alpha=0.15, lw=0)
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
    title = "when does span pay?" if table.get("sitting") else "student accuracy vs teacher quality"
    fig.suptitle(f"Fashion-MNIST: {title}, {table['budget_passes']} student passes{smoke}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
