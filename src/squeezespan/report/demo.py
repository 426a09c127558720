"""The demo's report: Markdown table plus PNGs (teacher samples, accuracy bars, kNN-vs-step curves) and what made it:
the teacher's kimg and FD-ref, the students' budget and precision, and every run's wall time per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..engine.logging import read_metrics
from ..files import atomic_write_text, write_json
from ..teachers.load import load_teacher
from .grid import save_image_grid
from .plots import plot_bars, plot_curves

GRID_SCALE = 3  # a 32 px sample is drawn 96 px wide: digits readable at a glance
GRID_SAMPLES = 64  # 8 x 8


def _teacher_grid(teacher: str, out: Path, log=print) -> tuple[Path | None, int]:
    """A fresh 8x8 grid of teacher samples (fixed seed), so the report shows what the student distilled."""
    try:
        t = load_teacher(teacher)
        images, _ = t.sample(GRID_SAMPLES, seed=0)
        return save_image_grid(images, out, nrow=8, scale=GRID_SCALE), int(images.shape[-1])
    except Exception as e:  # noqa: BLE001 - a missing picture must not sink the report
        log(f"warning: no teacher sample grid ({e})")
        return None, 0


def _read(path: Path, kind: str = "json") -> dict[str, Any]:
    try:
        text = path.read_text()
        data = json.loads(text) if kind == "json" else yaml.safe_load(text)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def teacher_info(teacher: str) -> dict[str, Any]:
    """kimg, FD-ref, precision and how training ended, for a `sns train-gan` run dir (or its teacher/ folder)."""
    root = Path(teacher)
    meta = _read(root / "teacher" / "teacher.json") or _read(root / "teacher.json")
    summary = _read(root / "summary.json")
    cfg = meta.get("config") or {}
    return {
        "path": teacher,
        "kimg": meta.get("kimg", summary.get("kimg")),
        "fd_ref": meta.get("fd_ref"),
        "precision": _precision(cfg),
        "stopped_by_time": bool(summary.get("stopped_by_time")),
        "max_minutes": cfg.get("max_minutes"),
    }


def _precision(cfg: dict[str, Any]) -> str:
    """The precision a run's config records (runs from before the precision key: its bf16 flag)."""
    if cfg.get("precision") in ("bf16", "fp16", "fp32"):
        return cfg["precision"]
    return {True: "bf16", False: "fp32"}.get(cfg.get("bf16"), "unknown precision")


def _teacher_line(info: dict[str, Any]) -> str:
    kimg = info["kimg"]
    text = "Teacher: a StyleGAN2 trained by `sns train-gan` on the digits train split"
    if kimg is not None:
        text += f" for **{float(kimg):g} kimg** ({float(kimg) * 1000:.0f} images)"
    if info["stopped_by_time"]:
        text += f", stopped by its time limit (max_minutes {info['max_minutes']}) before its kimg"
    else:
        text += ", a fixed budget (no time limit)"
    if info["fd_ref"] is not None:
        fd = float(info["fd_ref"])
        text += f"; FD-ref **{fd:.1f}** (Fréchet distance in a small digits classifier's features, lower is better)"
    else:
        text += "; FD-ref not measured"
    return text + f"; {info['precision']}."


def _student_line(run_dir: Path, methods: list[str]) -> str:
    cfgs = {m: _read(run_dir / m / "config.yaml", "yaml") for m in methods}
    c = next((c for c in cfgs.values() if c), {})
    if not c:
        return "Students: the same network and budget for every method."
    precisions = sorted({_precision(x) for x in cfgs.values() if x})
    return (
        f"Students: the same {c.get('arch', '?')} ({c.get('variant', '?')} variant, width {c.get('width', '?')}) and "
        f"the same budget for every method: {c.get('steps', '?')} steps of batch {c.get('batch_size', '?')}, seed "
        f"{c.get('seed', '?')}; {', '.join(precisions)}."
    )


def _fmt_s(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds:.0f} s ({int(seconds // 60)} min {seconds % 60:02.0f} s)"


def timing_table(runs: list[dict[str, Any]], labels: dict[str, str] | None = None) -> list[str]:
    """Markdown: one row per stage, one column per `sns demo` run (the first run's numbers stay as they were)."""
    labels = labels or {}
    stages = list(dict.fromkeys(s for r in runs for s in r.get("stages", {})))
    head = [f"run {r.get('run', i + 1)} ({r.get('started', '?')})" for i, r in enumerate(runs)]
    lines = ["| stage | " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    for s in stages:
        cells = []
        for r in runs:
            st = r.get("stages", {}).get(s)
            if st is None:
                cells.append("-")
            elif st["status"] == "reused":
                cells.append("reused")
            else:
                note = "" if st["status"] == "ran" else f" ({st['status']})"
                cells.append(_fmt_s(st["seconds"]) + note)
        lines.append(f"| {labels.get(s, s)} | " + " | ".join(cells) + " |")
    totals = [_fmt_s(r["total_s"]) if r.get("total_s") is not None else "unfinished" for r in runs]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return lines


def _knn_note(rows: list[dict[str, Any]]) -> str:
    knn = next((r["knn"] for r in rows if r.get("knn")), None)
    if not knn or "k" not in knn:
        return ""
    text = f"kNN: k={knn['k']}, t={knn.get('t')}"
    if knn.get("knn_k") not in (None, knn["k"]):
        text += f" (k={knn['knn_k']} capped: {knn.get('rule') or 'by the smallest class'})"
    return text + "; linear: the fast probe on frozen features."


def write_demo_report(
    run_dir: Path,
    teacher: str,
    methods: list[str],
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    log=print,
) -> Path:
    """Write <run_dir>/report.md (+ PNGs, results.json); ``runs`` is every demo run's timings (timings.json)."""
    run_dir = Path(run_dir)
    info = teacher_info(teacher)
    grid, px = _teacher_grid(teacher, run_dir / "teacher_samples.png", log=log)
    curves = {}
    for m in methods:
        curves[m] = [(r["step"], r["knn_top1"]) for r in read_metrics(run_dir / m) if "knn_top1" in r]
    curve_png = plot_curves(curves, run_dir / "knn_curves.png")
    bars = {}
    for r in rows:
        series = {"linear probe": r["linear"]["top1"]}
        if r.get("knn"):
            series["kNN"] = r["knn"]["top1"]
        bars[r["name"].split(" (")[0]] = series
    bar_png = plot_bars(bars, run_dir / "accuracy.png", title="digits test set: top-1 accuracy")
    table = [
        "| backbone | linear top-1 | linear top-5 | kNN top-1 | kNN top-5 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        knn = r.get("knn") or {}
        table.append(
            f"| {r['name']} | {r['linear']['top1']:.2f} | {r['linear']['top5']:.2f} | "
            f"{knn.get('top1', float('nan')):.2f} | {knn.get('top5', float('nan')):.2f} |"
        )
    kimg = f"{float(info['kimg']):g} kimg" if info["kimg"] is not None else "reused"
    labels = {"teacher": f"teacher (StyleGAN2, {kimg})", "probes": "probes (raw pixels + students)"}
    lines = [
        "# squeezespan demo: digits",
        "",
        _teacher_line(info),
        _student_line(run_dir, methods),
        "",
        *table,
        "",
        _knn_note(rows),
        "",
        "## Wall time",
        "",
        "Each `sns demo` run adds a column; a stage a rerun found finished says `reused` (the first run's time "
        "stays in its column). Installing the environment is not included.",
        "",
        *timing_table(runs, labels),
        "",
    ]
    if grid:
        lines += [
            "## Teacher samples",
            "",
            f"{GRID_SAMPLES} samples of the teacher's G_ema (seed 0), each {px} px drawn {px * GRID_SCALE} px wide:",
            "",
            f"![teacher samples]({grid.name})",
            "",
        ]
    lines += [
        "## Accuracy",
        "",
        f"![top-1 accuracy, linear probe and kNN]({bar_png.name})",
        "",
        "## kNN accuracy during pretraining",
        "",
        "Each student's own kNN monitor during pretraining; points before the last are computed "
        "in bf16 where the run trains in bf16, else in fp32.",
        "",
        f"![kNN curves]({curve_png.name})",
        "",
    ]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    write_json(run_dir / "results.json", {"teacher": info, "rows": rows, "timings": runs})
    log("\n".join(table))
    return path
