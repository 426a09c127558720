"""The Fashion-MNIST bench's Markdown: one section per track (core rows first), the lr sweeps, the targets, and
the summary table with both tracks side by side. A pure function of the collected table (its JSON): re-rendering
a committed table gives its committed Markdown byte for byte (tests/test_bench_results.py)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bench.common import diff_range, mean_std

from .plan import RHO_ROWS, SCARCE_IMAGES, split_mode, teacher_bf16

TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Core", ("sns", "vicreg-real", "simsiam-real", "squeeze")),
    ("References", ("supervised", "random-init", "raw-pixels")),
    (
        "Pretraining data of the SSL baselines (real / synthetic / mixed)",
        ("vicreg-real", "vicreg-syn", "vicreg-mixed", "simsiam-real", "simsiam-syn", "simsiam-mixed", "sns"),
    ),
    (
        "Table 5 ablation (a-f), BatchNorm passes and per-batch augmentation",
        ("kd-noaug", "kd-aug", "squeeze-novarcov", "squeeze-var", "squeeze", "sns", "sns-sharedbn", "sns-perbatch"),
    ),
    ("Synthetic share rho (syn_ratio) of SnS: 0 = VICReg-real, 1 = Squeeze", RHO_ROWS),
    ("Live teacher vs a teacher feature bank", ("squeeze", "squeeze-bank", "sns", "sns-bank")),
)
# The summary table: these rows (the ones with a result on some track), both tracks side by side.
SUMMARY_ROWS = (
    "sns",
    "vicreg-real",
    "simsiam-real",
    "squeeze",
    "squeeze-bank",
    "sns-bank",
    "supervised",
    "random-init",
    "raw-pixels",
)
# The targets: SnS linear top-1 this many points above both VICReg-real and SimSiam-real.
TARGETS = {"full": 1.5, "scarce": 3.0}

# What each mode's Markdown table says about itself (under its heading).
MODE_TEXT = {
    "sitting": (
        "one-sitting budget (--mode sitting)",
        "The full student, data, teachers and evaluation, but one epoch-equivalent of student passes per run, "
        "lr 0.1 (rows whose sweep a later sitting widened with --lrs: see their sweep table) and 2 seeds: "
        "what separates the methods at that budget, no more.",
    ),
    "long": (
        "three epoch-equivalents (--mode long)",
        "The full student, data, teachers and evaluation, three times the sitting budget, one learning rate and "
        "one seed (compare with the sitting's seed spread), kNN every 150 steps: how the methods move with "
        "budget, no more.",
    ),
    "full": (
        "the issue's protocol (--mode full)",
        "Ten epoch-equivalents per run, the lr sweep at seed 0, then 3 seeds at the chosen lr. At one CPU thread "
        "a cell takes 2-3 hours, so the table is built across sittings (re-run to resume); a row says "
        "'partial' until its sweep and seeds are all done, and a verdict on partial rows is provisional.",
    ),
}
FP32_TEXT = (
    " Trained and evaluated in fp32 (--precision fp32, for CPUs without bf16 hardware): the same protocol "
    "as the bf16 table, measured separately; compare its cells with that table's, do not pool them."
)
TEACHER_BF16_TEXT = (
    " The teacher samples under bf16 autocast (--teacher-precision bf16, `teacher_precision=bf16`): issue 28's "
    "measurement of what bf16 teacher images and taps change; compare with the fp32-teacher sitting table "
    "(fashion-sitting.md), same cells otherwise."
)
TRACK_TITLES = {
    "full": "Full track: all 60,000 real images",
    "scarce": f"Scarce track: pretraining sees {SCARCE_IMAGES} real images (teacher trained on them)",
}


def wall_cell(stat: dict | None) -> str:
    """Minutes; over seeds a range, not mean ± std: a row's seeds may run in different sittings on machines of
    different speed (1.9x apart here), where a spread says nothing about the method. Tables collected before
    walls were ranges (fashion-sitting.json) hold no min/max: mean ± std, as they were written."""
    if not stat or stat["n"] < 2 or "min" not in stat:
        return mean_std(stat, 1 / 60, 1)
    return f"{stat['min'] / 60:.1f}-{stat['max'] / 60:.1f}"


def wall_ranges(table: dict[str, Any]) -> bool:
    """Whether the table's walls over seeds are ranges (every table but those collected before they were)."""
    return all("min" in r["wall_s"] for rows in table["rows"].values() for r in rows if r.get("wall_s"))


def render_markdown(table: dict[str, Any]) -> str:
    """The Markdown tables of a collected result (one section per track, core rows first)."""
    lines = heading(table)
    s = table.get("settings") or {}
    if s:
        lrs = list(s.get("lrs", []))
        lr_text = (
            f"lr {lrs[0]:g} x B/256 for every row unless --lrs widened its sweep"
            if len(lrs) == 1
            else f"lr sweep {lrs} (base lr x B/256, chosen by kNN on {s.get('val_images')} held-out train images)"
        )
        lines.append(
            f"Budget per run: {s.get('budget_passes')} student image passes; {lr_text}; "
            f"up to {s.get('seeds')} seeds for core rows. Linear probe: fast protocol (L-BFGS on frozen "
            "features); kNN: k=200, t=0.1; both on the test set. "
            f"Wall time: training + evaluation (over seeds: {'min-max' if wall_ranges(table) else 'mean ± std'})."
        )
        lines.append("")
    if table.get("rows"):
        lines += ["## Summary: both tracks", "", *render_summary(table), ""]
    for track, rows in table["rows"].items():
        by = {r["row"]: r for r in rows}
        lines += [f"## {TRACK_TITLES.get(track, track)}", ""]
        for name, members in TABLES:
            lines += [
                f"### {name}",
                "",
                "| row | linear top-1 | kNN top-1 | wall (min) | lr | seeds | status | note |",
                "|---|---:|---:|---:|---:|---:|---|---|",
            ]
            for m in members:
                r = by.get(m, {"row": m})
                lines.append(
                    f"| {m} | {mean_std(r.get('linear_top1'))} | {mean_std(r.get('knn_top1'))} | "
                    f"{wall_cell(r.get('wall_s'))} | {'-' if r.get('lr') is None else format(r['lr'], 'g')} | "
                    f"{len(r.get('seeds', []))} | {r.get('status', '-')} | {r.get('note', '')} |"
                )
            lines.append("")
        lines += render_sweeps(rows)
    lines += render_targets(table)
    lines += render_teachers(table)
    lines += render_cpus(table)
    m = table.get("machine", {})
    lines.append(
        f"Machine: {m.get('platform')}, {m.get('cpus')} CPUs, torch {m.get('torch')}, load average at "
        f"write time {m.get('loadavg')}; commit {table.get('commit')}; written {table.get('created')}."
    )
    return "\n".join(lines) + "\n"


def render_cpus(table: dict[str, Any]) -> list[str]:
    """One line: the CPU models the table's cells were measured on, with how many cells each (none if no cells)."""
    counts = Counter(r.get("cpu", "unrecorded") for r in table.get("runs", []))
    if not counts:
        return []
    parts = [f"{cpu}: {n} cell{'s' if n > 1 else ''}" for cpu, n in sorted(counts.items()) if cpu != "unrecorded"]
    if "unrecorded" in counts:
        parts.append(f"unrecorded: {counts['unrecorded']} (cells run before result files recorded the CPU model)")
    return [f"CPU model of the cells (each cell's result file records it): {'; '.join(parts)}.", ""]


def heading(table: dict[str, Any]) -> list[str]:
    """The title and what the mode measures (a smoke run says it is one)."""
    if table.get("smoke"):
        return [
            "# Fashion-MNIST bench: SMOKE RUN (--quick), NOT THE BENCHMARK",
            "",
            "Tiny budgets and evaluation subsets: these numbers only show that every row runs end to end. "
            "They say nothing about the methods.",
            "",
        ]
    base, fp32 = split_mode(str(table.get("mode")))
    tbf16 = teacher_bf16(str(table.get("mode")))
    if base not in MODE_TEXT:
        return ["# Fashion-MNIST bench", ""]
    title, text = MODE_TEXT[base]
    return [
        f"# Fashion-MNIST bench: {title}{' in fp32' if fp32 else ''}{', teacher in bf16' if tbf16 else ''}",
        "",
        text
        + ("" if base == "full" else " The issue's budget (10 epochs, lr sweep, 3 seeds) is `--mode full`.")
        + (FP32_TEXT if fp32 else "")
        + (TEACHER_BF16_TEXT if tbf16 else ""),
        "",
    ]


def render_teachers(table: dict[str, Any]) -> list[str]:
    """The teacher of each track, and a note for a track whose cells used more than one."""
    lines = []
    t = table.get("teachers") or {}
    if t:
        lines += ["Teachers: " + "; ".join(f"{k}: {json.dumps(v)}" for k, v in t.items()), ""]
    for track, entries in (table.get("teacher_rows") or {}).items():
        lines += [
            f"Note: the {track} track's cells used {len(entries)} different teachers: "
            + "; ".join(
                f"{e['teacher'].get('spec')} (G_ema {e['teacher'].get('G_ema_sha256', '?')}, FD-ref "
                f"{e['teacher'].get('fd_ref', '?')}) for {', '.join(e['rows'])}"
                for e in entries
            )
            + ".",
            "",
        ]
    return lines


def render_sweeps(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: each row swept over more than one lr, its seed-0 held-out kNN (what picks the lr) and,
    for reading only, its seed-0 test linear top-1 at every lr."""
    swept = [r for r in rows if len(r.get("sweep") or {}) > 1]
    if not swept:
        return []
    lrs = sorted({float(lr) for r in swept for lr in r["sweep"]})
    lines = [
        "### Learning-rate sweeps (seed 0): held-out kNN top-1 (picks the lr) / test linear top-1",
        "",
        "| row | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
        "|---|" + "---:|" * len(lrs) + "---:|",
    ]
    for r in swept:
        cells = []
        for lr in lrs:
            key = f"{lr:g}"
            val, lin = r["sweep"].get(key), (r.get("sweep_linear") or {}).get(key)
            cell = "-" if val is None else f"{val:.2f}" + ("" if lin is None else f" / {lin:.2f}")
            cells.append(f"**{cell}**" if val is not None and lr == r.get("lr") else cell)
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['lr']:g} |")
    return lines + [""]


def target_verdict(track: str, rows: list[dict[str, Any]]) -> tuple[list[str], str, bool] | None:
    """A track's SnS minus VICReg-real and SimSiam-real (linear top-1: the difference of the means over seeds and,
    in brackets, its range over seed pairs, [SnS min - baseline max, SnS max - baseline min]; '-' for a baseline
    not run), whether both meet the track's target ('yes', 'no', or '-' without both baselines) and whether that
    verdict rests on a partial row; None without SnS."""
    by = {r["row"]: r for r in rows}
    sns = (by.get("sns") or {}).get("linear_top1")
    if not sns:
        return None
    deltas, cells = [], []
    for base in ("vicreg-real", "simsiam-real"):
        b = (by.get(base) or {}).get("linear_top1")
        deltas.append(None if not b else sns["mean"] - b["mean"])
        cells.append(diff_range(sns, b))
    target = TARGETS.get(track)
    met = "-" if None in deltas or target is None else ("yes" if min(deltas) >= target else "no")
    partial = met != "-" and any(
        str((by.get(n) or {}).get("status", "")).startswith("partial") for n in ("sns", "vicreg-real", "simsiam-real")
    )
    return cells, met, partial


def render_targets(table: dict[str, Any]) -> list[str]:
    """Markdown lines: SnS minus each real-data SSL baseline (linear top-1, means over seeds) against the target."""
    lines = [
        "## Targets: SnS linear top-1 minus the real-data SSL baselines",
        "",
        "Difference of the means over seeds; in brackets its range over seed pairs (no bracket: one seed each).",
        "",
        "| track | target | SnS - VICReg-real | SnS - SimSiam-real | met |",
        "|---|---:|---:|---:|---|",
    ]
    any_row = False
    for track, rows in table["rows"].items():
        verdict = target_verdict(track, rows)
        if verdict is None:
            continue
        cells, met, partial = verdict
        lines.append(
            f"| {track} | +{TARGETS.get(track):g} | {cells[0]} | {cells[1]} | {met}"
            f"{' (partial rows)' if partial else ''} |"
        )
        any_row = True
    return lines + [""] if any_row else []


def render_summary(table: dict[str, Any]) -> list[str]:
    """Markdown lines: one table with the tracks side by side, for the summary rows that have a result:
    linear / kNN top-1 (mean ± std over seeds), lr and seed count per track, then the targets row."""
    tracks = list(table["rows"])
    by = {t: {r["row"]: r for r in table["rows"][t]} for t in tracks}
    title = {"full": "full track (60k real)", "scarce": f"scarce track ({SCARCE_IMAGES // 1000}k real)"}
    lines = [
        "| row | " + " | ".join(f"{title.get(t, t)}: linear / kNN | lr | seeds" for t in tracks) + " |",
        "|---|" + "---:|---:|---:|" * len(tracks),
    ]
    for name in SUMMARY_ROWS:
        cells = [by[t].get(name) or {} for t in tracks]
        if not any(c.get("linear_top1") for c in cells):
            continue
        out = []
        for c in cells:
            lin, knn = c.get("linear_top1"), c.get("knn_top1")
            out += (
                ["-", "", ""]
                if not lin
                else [
                    f"{mean_std(lin)} / {mean_std(knn)}",
                    "-" if c.get("lr") is None else f"{c['lr']:g}",
                    str(lin["n"]),
                ]
            )
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    verdicts = [target_verdict(t, table["rows"][t]) for t in tracks]
    if any(verdicts):
        out = []
        for t, v in zip(tracks, verdicts):
            if v is None:
                out += ["-", "", ""]
                continue
            (vicreg, simsiam), met, partial = v
            word = {"yes": "met", "no": "not met"}.get(met, "no verdict") + ("; partial rows" if partial else "")
            out += [f"**{vicreg} / {simsiam}** (target +{TARGETS.get(t):g}: {word})", "", ""]
        lines.append("| **SnS - VICReg-real / SnS - SimSiam-real** | " + " | ".join(out) + " |")
    return lines
