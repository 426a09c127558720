"""The demo's report: Markdown table plus PNGs (teacher samples, kNN-vs-step curves, accuracy bars)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..engine.logging import read_metrics
from ..teachers.load import load_teacher
from .grid import save_image_grid
from .plots import plot_bars, plot_curves


def _teacher_grid(teacher: str, out: Path) -> Path | None:
    """A fresh 8x8 grid of teacher samples (fixed seed), so the report shows what the student distilled."""
    try:
        t = load_teacher(teacher)
        images, _ = t.sample(64, seed=0)
        return save_image_grid(images, out, nrow=8)
    except Exception as e:  # noqa: BLE001 - a missing picture must not sink the report
        print(f"warning: no teacher sample grid ({e})")
        return None


def write_demo_report(
    run_dir: Path,
    teacher: str,
    methods: list[str],
    rows: list[dict[str, Any]],
    timings: dict[str, float],
    total_s: float,
) -> Path:
    run_dir = Path(run_dir)
    grid = _teacher_grid(teacher, run_dir / "teacher_samples.png")
    curves = {}
    for m in methods:
        pts = [(r["step"], r["knn_top1"]) for r in read_metrics(run_dir / m) if "knn_top1" in r]
        curves[m] = pts
    curve_png = plot_curves(curves, run_dir / "knn_curves.png")
    bars = {r["name"].split(" (")[0]: r["linear"]["top1"] for r in rows}
    bar_png = plot_bars(bars, run_dir / "accuracy.png", title="digits test set, linear probe")
    lines = [
        "# squeezespan demo: digits",
        "",
        "Teacher: a StyleGAN2 trained by `sns train-gan` on the digits train split; students: the same "
        "ResNet-18 (CIFAR variant) and the same budget for every method.",
        "",
        "| backbone | linear top-1 | linear top-5 | kNN top-1 | kNN top-5 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        knn = r.get("knn", {})
        lines.append(
            f"| {r['name']} | {r['linear']['top1']:.2f} | {r['linear']['top5']:.2f} | "
            f"{knn.get('top1', float('nan')):.2f} | {knn.get('top5', float('nan')):.2f} |"
        )
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()) + f"; total {total_s:.0f}", ""]
    if grid:
        lines += ["## Teacher samples", "", f"![teacher samples]({grid.name})", ""]
    lines += [
        "## kNN accuracy during pretraining",
        "",
        f"![kNN curves]({curve_png.name})",
        "",
        "## Linear probe",
        "",
        f"![accuracy]({bar_png.name})",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    (run_dir / "results.json").write_text(
        json.dumps({"rows": rows, "timings": timings, "total_s": round(total_s, 1)}, indent=2)
    )
    print("\n".join(lines[4 : 4 + len(rows) + 2]))
    return path
