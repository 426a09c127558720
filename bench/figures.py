"""Figures of the Fashion-MNIST bench: UMAP of SnS and VICReg test features by class, kNN accuracy during training.

Usage: python -m bench.figures [--quick | --mode quick|sitting|long|full] [--precision bf16|fp32|auto]
                               [--results DIR] [--tracks full,scarce] [--umap-images 5000] [--only knn,umap,rho]
(= `sns bench figures ...`). Reads the cached runs of `sns bench fashion` (their run directories must still
exist for the UMAP, which needs the exported backbones) and writes PNGs into <results>/figures/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bench import common
from bench.fashion import cells, plan
from squeezespan import SnsError, extract_features, load_backbone, load_dataset
from squeezespan.cliutil import ArgumentParser
from squeezespan.methods import method_settings
from squeezespan.report.plots import plt, save_figure

FIGURES = ("knn", "umap", "rho")  # kNN curves per track, UMAP per track, the rho sweep
UMAP_ROWS = ("sns", "vicreg-real", "squeeze-bank")  # SnS and VICReg (Figure 2), and the bench's best row


def chosen_runs(table: dict[str, Any], track: str) -> dict[str, dict]:
    """Per row, the cached seed-0 run at the row's chosen lr (the one its table cell reports)."""
    rows = {r["row"]: r for r in table["rows"].get(track, [])}
    out = {}
    for r in table["runs"]:
        agg = rows.get(r["row"])
        if r["track"] != track or agg is None or r.get("seed") != 0 or not r.get("run_dir"):
            continue
        if agg.get("lr") is not None and abs(r["lr"] - agg["lr"]) > 1e-12:
            continue
        out[r["row"]] = r
    return out


def backbone_runs(table: dict[str, Any], track: str) -> dict[str, dict]:
    """Per row, a run at the row's chosen lr whose exported backbone is on this machine, the lowest seed first:
    run directories do not travel with a clean clone, so a later sitting draws its UMAP from the seeds it ran."""
    rows = {r["row"]: r for r in table["rows"].get(track, [])}
    out: dict[str, dict] = {}
    for r in sorted(table["runs"], key=lambda r: r.get("seed", 0)):
        agg = rows.get(r["row"])
        if r["track"] != track or agg is None or r["row"] in out or not r.get("run_dir"):
            continue
        if agg.get("lr") is not None and abs(r["lr"] - agg["lr"]) > 1e-12:
            continue
        if (Path(r["run_dir"]) / "backbone.safetensors").exists():
            out[r["row"]] = r
    return out


def knn_curve(run: dict, passes_per_step: int) -> tuple[list[tuple[float, float]], tuple[float, float] | None]:
    """From a run: the in-training kNN monitor as (student image passes, top-1) points (kept in the result, or
    read from its run directory), and the bench's final test kNN as one more point; the two use different
    banks, so they are drawn apart."""
    monitor = run.get("knn_monitor")
    if monitor is None:
        monitor = cells.monitor_curve(run["run_dir"]) if run.get("run_dir") else []
    pts = [(step * passes_per_step, top1) for step, top1 in monitor]
    final = (run["steps"] * passes_per_step, float(run["knn_top1"])) if run.get("steps") else None
    return pts, final


FINAL_MARKERS = ("*", "D", "P", "X", "s", "^", "v", "h")
FINAL_DODGE = 0.012  # sideways step between rows' final markers, as a share of their x


def plot_knn_curves(curves: dict[str, tuple], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    colors = plt.get_cmap("tab20").colors
    for i, (name, (pts, final)) in enumerate(sorted(curves.items())):
        color, style = colors[i % len(colors)], ("-", "--", ":")[i % 3]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, marker="o", ms=3, color=color, label=name)
        if final:  # one shape per row, dodged sideways: rows ending at the same accuracy stay told apart
            shape = FINAL_MARKERS[i % len(FINAL_MARKERS)]
            x = final[0] * (1 + FINAL_DODGE * (i - (len(curves) - 1) / 2))
            ax.plot(
                x,
                final[1],
                marker=shape,
                ms=8,
                color=color,
                markeredgecolor="black",
                markeredgewidth=0.5,
                linestyle="none",
                label=None if pts else name,
            )
    ax.set_xlabel("student image passes")
    ax.set_ylabel("kNN top-1 on test (%)")
    ax.set_title(
        title + "\nlines: in-training monitor (knn_bank train images, whole test set); "
        "large markers: final bench evaluation (spread sideways)",
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def rho_points(table: dict[str, Any], track: str, mode: str) -> dict[str, list[tuple]]:
    """The rho-sweep table's finished rows of a track as (syn_ratio, mean, std, row, lr) per metric, rho ascending;
    rho is read from each row's resolved config (vicreg-real 0, sns-syn25 0.25, sns 0.5, ..., squeeze 1).

    All points at one lr when every row ran at it (the lr with the most runs among those; mean and std over its
    seeds from the table's runs): a rho curve should vary rho only. Otherwise each row at the lr the table chose
    for it (its lr sweep was widened), and the plot labels the lrs."""
    rows = {r["row"]: r for r in table["rows"].get(track, [])}
    names = [n for n in plan.RHO_ROWS if isinstance((rows.get(n) or {}).get("linear_top1"), dict)]
    runs = [r for r in table.get("runs", []) if r.get("track") == track and r.get("row") in names]
    lrs_of = [{r["lr"] for r in runs if r["row"] == n} for n in names]
    shared = set.intersection(*lrs_of) if lrs_of else set()
    lr = max(shared, key=lambda x: (sum(r["lr"] == x for r in runs), -x)) if shared else None
    out: dict[str, list] = {"linear_top1": [], "knn_top1": []}
    for name in names:
        cfg = plan.resolve_run_config(plan.ROW_BY_NAME[name], track, 0.1, 0, mode, "T")
        rho = method_settings(cfg)["syn_ratio"]
        for metric in out:
            if lr is None:
                m, at = rows[name][metric], rows[name].get("lr")
            else:
                m, at = common.stats([float(r[metric]) for r in runs if r["row"] == name and r["lr"] == lr]), lr
            out[metric].append((rho, m["mean"], m.get("std") or 0.0, name, at))
    for metric in out:
        out[metric].sort()
    return out


def rho_sweeps(table: dict[str, Any], tracks, mode: str) -> dict[str, dict[str, list]]:
    """The tracks whose rho curve is a sweep: at least 3 points, so some rho between VICReg-real, SnS and Squeeze
    (two rows, e.g. a table holding only SnS and VICReg-real, make no curve worth a figure)."""
    return {t: pts for t in tracks if len((pts := rho_points(table, t, mode))["linear_top1"]) >= 3}


def plot_rho(per_track: dict[str, dict[str, list]], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=120, sharex=True)
    for ax, (metric, label) in zip(axes, (("linear_top1", "linear probe"), ("knn_top1", "kNN"))):
        for track, pts in per_track.items():
            if not pts[metric]:
                continue
            rho, mean, std, _, point_lrs = zip(*pts[metric])
            line = ax.errorbar(rho, mean, yerr=std, marker="o", capsize=3, label=f"{track} track")
            if len(set(point_lrs)) > 1:  # no lr common to all rows: say which points ran at which lr
                for x, y, lr in zip(rho, mean, point_lrs):
                    ax.annotate(
                        "lr -" if lr is None else f"lr {lr:g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, -10),
                        fontsize=6,
                        color=line[0].get_color(),
                    )
        ax.set_xlabel("rho = syn_ratio (0: VICReg-real, 0.5: SnS, 1: Squeeze)")
        ax.set_ylabel(f"{label} top-1 on test (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure_lrs = {p[4] for pts in per_track.values() for p in pts["linear_top1"]}
    at = f"; all at lr {next(iter(figure_lrs)):g}" if len(figure_lrs) == 1 and None not in figure_lrs else ""
    fig.suptitle(title + f"\nmean and std over seeds; one budget of student image passes per point{at}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _umap():
    try:
        import umap
    except ImportError:
        raise SnsError("the UMAP figure needs umap-learn: pip install -e '.[umap]'") from None
    return umap


def umap_embed(features: torch.Tensor, seed: int = 0):
    return _umap().UMAP(n_neighbors=15, min_dist=0.1, random_state=seed).fit_transform(features.numpy())


def plot_umaps(panels: list[tuple[str, Any, Any]], classes: list[str], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), dpi=120, squeeze=False)
    for ax, (name, xy, labels) in zip(axes[0], panels):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), fraction=0.03)
    cb.ax.set_yticklabels(classes, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, bbox_inches="tight")


def knn_figure(runs: dict[str, dict], results: Path, track: str, path: Path, smoke: str) -> Path:
    """The in-training kNN curves of one track's chosen runs, on a common axis of student image passes."""
    curves = {}
    for name, run in runs.items():
        cfg = run.get("config") or json.loads(
            (results / "runs" / f"{track}__{name}__lr{run['lr']:g}__s0.json").read_text()
        ).get("config")
        if not cfg or cfg.get("method") == "supervised":
            per = cfg["batch_size"] if cfg else 1
        else:
            per = plan.passes_per_step(cfg["method"], method_settings(cfg)["syn_ratio"], cfg["batch_size"])
        curves[name] = knn_curve(run, per)
    return plot_knn_curves(curves, path, f"Fashion-MNIST {track} track: kNN top-1 during training{smoke}")


def umap_figure(table: dict[str, Any], track: str, path: Path, smoke: str, umap_images: int, log) -> list[Path]:
    """The UMAP panels of ``UMAP_ROWS`` whose backbones are on this machine ([] if none is: no file written)."""
    panels = []
    test = None
    with_backbone = backbone_runs(table, track)
    if any(name in with_backbone for name in UMAP_ROWS):
        _umap()  # before minutes of feature extraction, not after
    for name in UMAP_ROWS:
        run = with_backbone.get(name)
        if run is None:
            log(f"{track}: no exported backbone for {name} on this machine; UMAP panel skipped")
            continue
        backbone_path = Path(run["run_dir"]) / "backbone.safetensors"
        if test is None:
            test = load_dataset("fashion-mnist", split="test", resolution=32)
            idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:umap_images]
            test = test.subset(idx)
        f, y = extract_features(load_backbone(backbone_path), test, device="cpu", normalize=False)
        panels.append(
            (
                f"{name} seed {run['seed']} (kNN {run['knn_top1']:.1f}%, linear {run['linear_top1']:.1f}%)",
                umap_embed(f),
                y.numpy(),
            )
        )
    if not panels:
        return []
    title = f"UMAP of {len(test)} Fashion-MNIST test images, {track} track{smoke}"
    return [plot_umaps(panels, test.classes, path, title)]


def make_figures(
    mode: str = "full",
    results: str | Path | None = None,
    tracks=("full", "scarce"),
    umap_images: int = 5000,
    log=print,
    kinds=FIGURES,
) -> list[Path]:
    """Figures of the bench mode ``mode``'s results (quick | sitting | long | full, or one of the -fp32).

    ``kinds`` picks which of ``FIGURES`` to redraw; the others' files are left as they are (e.g. the kNN curves
    of a clean clone, whose UMAP would lose the panels of rows whose backbones are not on this machine)."""
    unknown = sorted(set(kinds) - set(FIGURES))
    if unknown or not kinds:
        raise SnsError(f"--only: expected some of {', '.join(FIGURES)}, got {', '.join(unknown) or 'nothing'}")
    results = Path(results) if results else common.RESULTS / f"fashion{plan.suffix(mode)}"
    table_path = results.with_suffix(".json")
    if not table_path.exists():
        base, fp32 = plan.split_mode(mode)
        flags = f"--mode {base}" + (" --precision fp32" if fp32 else "")
        raise SnsError(f"{table_path} does not exist; run `sns bench fashion {flags}` first")
    table = json.loads(table_path.read_text())
    fig_dir = results / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    smoke = " (SMOKE RUN, not the benchmark)" if table.get("smoke") else ""
    written = []
    for track in tracks:
        runs = chosen_runs(table, track)
        if not runs:
            log(f"{track}: no finished runs, no figures")
            continue
        if "knn" in kinds:
            written.append(knn_figure(runs, results, track, fig_dir / f"knn_curves_{track}.png", smoke))
        if "umap" in kinds:
            written += umap_figure(table, track, fig_dir / f"umap_{track}.png", smoke, umap_images, log)
    rho = rho_sweeps(table, tracks, mode) if "rho" in kinds else {}
    if rho:
        written.append(
            plot_rho(rho, fig_dir / "rho_sweep.png", f"Fashion-MNIST: share of teacher images in the SnS batch{smoke}")
        )
    for p in written:
        log(f"wrote {p}")
    return written


def main(argv: list[str] | None = None, prog: str = "python -m bench.figures") -> int:
    ap = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="figures of the --quick (smoke) results")
    ap.add_argument("--mode", choices=plan.BASE_MODES, help="figures of this bench mode's results")
    ap.add_argument(
        "--precision",
        choices=plan.PRECISIONS,
        help="figures of the bf16 (default) or fp32 table of that mode (auto: as `sns bench fashion`)",
    )
    ap.add_argument("--results", help="results folder (default bench/results/fashion[-quick|-sitting|-long][-fp32])")
    ap.add_argument("--tracks", default="full,scarce")
    ap.add_argument("--umap-images", type=int, default=5000, help="test images in the UMAP")
    ap.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures to redraw, of {', '.join(FIGURES)} (default all); the others are kept",
    )
    args = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in args.only.split(",") if k.strip())
    tracks = tuple(t.strip() for t in args.tracks.split(",") if t.strip())
    if args.quick and args.mode not in (None, "quick"):
        raise SnsError(f"--quick and --mode {args.mode} contradict each other; give one")
    mode = plan.with_precision("quick" if args.quick else (args.mode or "full"), args.precision)
    make_figures(mode, args.results, tracks, args.umap_images, kinds=kinds)
    return 0


if __name__ == "__main__":
    common.run_main(main)
