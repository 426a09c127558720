"""Teacher quality against student quality (the paper's Figure 4 at CPU scale): one student per GAN snapshot.

Usage: python bench/teacher_quality.py [--quick] [--teachers LIST] [--rows squeeze,sns] [--seeds N]
                                       [--budget-passes P] [--force] [--work DIR]   (= `sns bench teachers ...`)

Each teacher of the list (default: an untrained generator, 'random' = kimg 0, then the 20/40/60/80 kimg snapshots
of the committed Fashion-MNIST GAN run) distills one student per method row (default `squeeze`: syn_ratio 1,
no real image, so the student learns only what the teacher shows) with the Fashion-MNIST bench's run config
(`fashion-cpu` preset, lr 0.1) and a small budget of student image passes, evaluated like `sns bench fashion
--mode sitting` (kNN and linear probe on the full train/test sets). Each (teacher, row, seed) is one cached
resumable cell: bench/results/teacher_quality/runs/*.json, keyed by the teacher's G_ema checksum and the config
fingerprint. Writes bench/results/teacher_quality.{json,md} and bench/results/figures/teacher_quality.png
(accuracy against the teacher's FD-ref, log x axis). --quick: tiny budget, narrow student, evaluation subsets.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from squeezespan.errors import SnsError

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TEACHER_DIR = RESULTS / "teachers"
RANDOM = "random"
# kimg 0 (untrained, same architecture and seed as the run) and the run's snapshots in training order
DEFAULT_TEACHERS = (RANDOM, "fashion-full-kimg20", "fashion-full-kimg40", "fashion-full", "fashion-full-kimg80")
METHOD_ROWS = ("squeeze", "sns")  # rows of bench/fashion.py that use a teacher
LR = 0.1
TRACK = "full"  # all 60k real images (what sns sees; squeeze sees none)
# 30k passes: ~3-4 min of a width-0.5 ResNet-18 at one thread, i.e. the whole figure fits in one sitting.
BUDGET_PASSES = 30_000
# The preset's 100 warmup steps would be 85% of a 117-step squeeze run; cap warmup at a fifth of the run.
WARMUP_SHARE = 0.2


def _fashion():
    """bench/fashion.py as a module (its run config, training, evaluation and caching are reused as they are)."""
    from squeezespan.bench import load_script

    return load_script("fashion", HERE)


def _suffix(quick: bool) -> str:
    return "-quick" if quick else ""


# ------------------------------------------------------------------------------------------------ teachers


@dataclass
class TeacherEntry:
    spec: str  # teacher directory given to the engine
    label: str  # "kimg 20"
    kimg: float
    fd_ref: float | None
    sha: str  # G_ema sha256 (16 hex digits, as bench/fashion.py records it)
    identity: dict[str, Any]


def resolve_teacher_dir(entry: str) -> Path:
    """A --teachers entry as a teacher directory: a path, or a folder name under bench/results/teachers/."""
    for cand in (Path(entry), TEACHER_DIR / entry):
        if (cand / "teacher.json").is_file():
            return cand
        if (cand / "teacher" / "teacher.json").is_file():
            return cand / "teacher"
    raise SnsError(
        f"--teachers {entry}: no teacher.json in {entry} nor in {TEACHER_DIR / entry}; expected a "
        f"teacher directory (teacher.json + G_ema.safetensors + D.safetensors) or '{RANDOM}'"
    )


def entry_from_dir(path: Path) -> TeacherEntry:
    ident = _fashion().teacher_identity(str(path))
    if "G_ema_sha256" not in ident:
        raise SnsError(f"--teachers {path}: teacher.json found but no G_ema.safetensors next to it")
    kimg = float(ident.get("kimg", float("nan")))
    fd = ident.get("fd_ref")
    return TeacherEntry(
        str(path), f"kimg {kimg:g}", kimg, None if fd is None else float(fd), ident["G_ema_sha256"], ident
    )


def measure_fd_ref(G: torch.nn.Module, base: dict[str, Any], log: Callable = print) -> tuple[float, dict | None]:
    """FD-ref of ``G`` exactly as `sns train-gan` measured the snapshots of ``base`` (its teacher.json): the same
    cached reference net, real subset, number of generated images and sample seed."""
    from squeezespan.data import load_dataset
    from squeezespan.eval.fdref import frechet_distance, generator_stats, real_stats_cached, train_reference_net

    cfg = base["config"]
    kw = {"channels": int(cfg["channels"])} if cfg.get("channels") else {}
    ds = load_dataset(
        cfg["data"], root=cfg.get("data_root"), split=cfg["split"], resolution=int(cfg["resolution"]), **kw
    )
    with torch.random.fork_rng(devices=[]):
        ref_net = train_reference_net(ds, cache_dir=cfg.get("fd_ref_cache"), log=log)
    real = real_stats_cached(ds, ref_net, int(cfg["fd_ref_real"]))
    num = int(base.get("fd_ref_num") or cfg["fd_ref_num"])
    mu, sigma = generator_stats(G, ref_net, num, seed=int(cfg["seed"]) + 1)
    return frechet_distance(real[0], real[1], mu, sigma), getattr(ref_net, "meta", None)


def random_teacher(base_dir: Path, out: Path, log: Callable = print) -> Path:
    """kimg 0: a generator with the G_kwargs and seed of ``base_dir``'s run, built as `sns train-gan` builds it
    before its first step (never trained), saved as a teacher directory with its measured FD-ref; reused if
    already there for the same base."""
    from squeezespan.teachers.directory import build_networks, save_teacher_dir

    base = json.loads((base_dir / "teacher.json").read_text())
    if (out / "teacher.json").is_file():
        have = json.loads((out / "teacher.json").read_text())
        if (
            have.get("G_kwargs") == base["G_kwargs"]
            and have.get("fd_ref") is not None
            and have.get("random_init_of") == _fashion().teacher_identity(str(base_dir)).get("G_ema_sha256")
        ):
            return out
    seed = int(base["config"]["seed"])
    torch.manual_seed(seed)
    G, D = build_networks(base["G_kwargs"], base["D_kwargs"])
    G.eval().requires_grad_(False)
    log(f"measuring the FD-ref of an untrained generator (seed {seed}, G_kwargs of {base_dir})")
    fd, ref_meta = measure_fd_ref(G, base, log)
    if (
        base.get("fd_ref_net")
        and ref_meta
        and any(ref_meta.get(k) != base["fd_ref_net"].get(k) for k in ("val_accuracy", "steps", "init_kwargs"))
    ):
        log(
            f"warning: the FD-ref reference net differs from the one that measured {base_dir}; "
            "kimg 0's FD-ref is not comparable to the snapshots'"
        )
    meta = {
        k: base[k] for k in ("dataset", "split", "resolution", "img_channels", "mean", "std", "config") if k in base
    }
    meta.update(
        kimg=0.0,
        step=0,
        fd_ref=fd,
        fd_ref_num=base.get("fd_ref_num"),
        fd_ref_net=ref_meta,
        random_init_of=_fashion().teacher_identity(str(base_dir)).get("G_ema_sha256"),
        note="untrained generator: torch.manual_seed(config.seed) then build_networks, as train-gan starts",
    )
    save_teacher_dir(out, G, G, D, base["G_kwargs"], base["D_kwargs"], meta)
    return out


def resolve_teachers(entries: list[str], work: Path, log: Callable = print) -> list[TeacherEntry]:
    """The --teachers list in its given order; 'random' takes its architecture from the first trained teacher."""
    dirs = {e: resolve_teacher_dir(e) for e in entries if e != RANDOM}  # every bad path fails before any work
    out = []
    for e in entries:
        if e == RANDOM:
            if not dirs:
                raise SnsError(f"--teachers {RANDOM} needs a trained teacher in the list to copy its architecture from")
            base = next(iter(dirs.values()))
            out.append(entry_from_dir(random_teacher(base, work / "teachers" / "random-init", log)))
        else:
            out.append(entry_from_dir(dirs[e]))
    return out


# ------------------------------------------------------------------------------------------------ cells


def run_config(row_name: str, spec: str, seed: int, quick: bool, budget: int) -> dict[str, Any]:
    """The fashion bench's config of ``row_name`` with this teacher and seed, re-budgeted to ``budget`` passes."""
    from squeezespan.methods import method_settings

    fashion = _fashion()
    cfg = fashion.resolve_run_config(
        fashion.ROW_BY_NAME[row_name], TRACK, LR, seed, "quick" if quick else "sitting", spec
    )
    per = fashion.passes_per_step(cfg["method"], method_settings(cfg)["syn_ratio"], cfg["batch_size"])
    cfg["steps"] = steps = max(1, int(round(budget / per)))
    cfg["warmup_steps"] = min(int(cfg["warmup_steps"]), int(round(WARMUP_SHARE * steps)))
    if cfg["ckpt_every"]:
        cfg["ckpt_every"] = min(int(cfg["ckpt_every"]), max(10, steps // 4))  # a few resume points per run
    return cfg


def cell_fingerprint(row_name: str, cfg: dict[str, Any], sha: str, quick: bool, budget: int) -> str:
    fashion = _fashion()
    mode = "quick" if quick else "sitting"
    return fashion.fingerprint(
        {
            "bench": "teacher_quality",
            "budget_passes": int(budget),
            "cell": fashion.cell_fingerprint(fashion.ROW_BY_NAME[row_name], TRACK, mode, cfg, sha),
        }
    )


def result_path(results_dir: Path, row_name: str, t: TeacherEntry, seed: int) -> Path:
    return Path(results_dir) / "runs" / f"{row_name}__kimg{t.kimg:g}__{t.sha}__s{seed}.json"


def run_dir_root(work: Path, t: TeacherEntry) -> Path:
    return Path(work) / f"kimg{t.kimg:g}-{t.sha[:8]}"


def select_rows(patterns: str | None) -> list[str]:
    names = [p.strip() for p in (patterns or "squeeze").split(",") if p.strip()]
    bad = [n for n in names if n not in METHOD_ROWS]
    if bad or not names:
        given = ",".join(bad) or repr(patterns)
        raise SnsError(f"--rows {given}: expected a comma list of {', '.join(METHOD_ROWS)}")
    return [r for r in METHOD_ROWS if r in names]


def run_teacher_quality(
    quick: bool = False,
    teachers: list[str] | None = None,
    rows: str | None = None,
    seeds: int = 1,
    budget_passes: int | None = None,
    force: bool = False,
    work: str | Path | None = None,
    results_dir: str | Path | None = None,
    figure: str | Path | None = None,
    progress: bool = False,
    threads: int | None = 1,
    log: Callable = print,
) -> dict[str, Any]:
    """Run every (teacher, row, seed) cell without a valid cached result; then rewrite table, Markdown and PNG."""
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # one thread: see bench/fashion.py run_bench
    try:
        return _run(quick, teachers, rows, seeds, budget_passes, force, work, results_dir, figure, progress, log)
    finally:
        torch.set_num_threads(threads_before)


def _run(quick, teachers, rows, seeds, budget_passes, force, work, results_dir, figure, progress, log):
    fashion = _fashion()
    if int(seeds) < 1:
        raise SnsError(f"--seeds {seeds}: expected a number of seeds >= 1")
    budget = int(
        budget_passes
        if budget_passes is not None
        else (fashion.mode_settings("quick")["budget_passes"] if quick else BUDGET_PASSES)
    )
    if budget < 1:
        raise SnsError(f"--budget-passes {budget}: expected a positive number of student image passes")
    row_names = select_rows(rows)
    results_dir = Path(results_dir) if results_dir else RESULTS / f"teacher_quality{_suffix(quick)}"
    work = Path(work) if work else Path("runs") / f"bench-teacher-quality{_suffix(quick)}"
    figure = Path(figure) if figure else RESULTS / "figures" / f"teacher_quality{_suffix(quick)}.png"
    entries = resolve_teachers(list(teachers or DEFAULT_TEACHERS), work, log)
    ev = None
    stopped = False
    for t in entries:
        for row_name in row_names:
            for seed in range(int(seeds)):
                cfg = run_config(row_name, t.spec, seed, quick, budget)
                fp = cell_fingerprint(row_name, cfg, t.sha, quick, budget)
                path = result_path(results_dir, row_name, t, seed)
                if not force and fashion.load_cached(path, fp) is not None:
                    log(f"[{t.label}] {row_name} seed={seed}: cached")
                    continue
                ev = ev or fashion.eval_data("quick" if quick else "sitting")
                log(f"[{t.label}, FD-ref {_fmt(t.fd_ref)}] {row_name} seed={seed} ({cfg['steps']} steps)")
                res = fashion.run_one(
                    fashion.ROW_BY_NAME[row_name], TRACK, LR, seed, cfg, ev, run_dir_root(work, t), force, progress, log
                )
                if res is None:
                    log("interrupted: the run kept its checkpoint; re-run the same command to resume")
                    stopped = True
                    break
                fashion.write_json(
                    path,
                    {
                        "row": row_name,
                        "seed": seed,
                        "lr": LR,
                        "kimg": t.kimg,
                        "fd_ref": t.fd_ref,
                        "teacher": t.identity,
                        "fingerprint": fp,
                        "budget_passes": budget,
                        "smoke": bool(quick),
                        "config": cfg,
                        "eval": ev.settings,
                        "machine": fashion.machine(),
                        "commit": fashion.git_commit(),
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        **res,
                    },
                )
                log(f"  kNN {res['knn_top1']:.2f}  linear {res['linear_top1']:.2f}  ({res['wall_s']:.0f} s)")
            if stopped:
                break
        if stopped:
            break
    table = collect(entries, results_dir, quick, int(seeds), budget)
    table["complete"] = not stopped
    fashion.write_json(results_dir.with_suffix(".json"), table)
    results_dir.with_suffix(".md").write_text(render_markdown(table))
    plot(table, figure)
    log(f"wrote {results_dir.with_suffix('.json')}, {results_dir.with_suffix('.md')} and {figure}")
    return table


# ------------------------------------------------------------------------------------------------ tables


def collect(entries: list[TeacherEntry], results_dir: Path, quick: bool, seeds: int, budget: int) -> dict[str, Any]:
    """Per teacher (in the given order), per method row: valid cached cells of the current config, mean/std."""
    fashion = _fashion()
    teachers = []
    for t in entries:
        rows = {}
        for row_name in METHOD_ROWS:  # rows run by an earlier invocation stay in the table while valid
            runs = []
            for seed in range(seeds):
                cfg = run_config(row_name, t.spec, seed, quick, budget)
                res = fashion.load_cached(
                    result_path(results_dir, row_name, t, seed), cell_fingerprint(row_name, cfg, t.sha, quick, budget)
                )
                if res is not None:
                    runs.append(res)
            if runs:
                rows[row_name] = {
                    k: fashion._stats([float(r[k]) for r in runs]) for k in ("linear_top1", "knn_top1", "wall_s")
                }
                rows[row_name]["seeds"] = [r["seed"] for r in runs]
                rows[row_name]["steps"] = runs[0].get("steps")
        teachers.append(
            {"label": t.label, "kimg": t.kimg, "fd_ref": t.fd_ref, "spec": t.spec, "G_ema_sha256": t.sha, "rows": rows}
        )
    return {
        "benchmark": "teacher-quality (fashion-mnist)",
        "smoke": bool(quick),
        "budget_passes": budget,
        "lr": LR,
        "seeds": seeds,
        "track": TRACK,
        "warmup_share": WARMUP_SHARE,
        "evaluation": "quick subsets" if quick else "sitting (full train/test sets)",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": fashion.machine(),
        "commit": fashion.git_commit(),
        "teachers": teachers,
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(table: dict[str, Any]) -> str:
    fashion = _fashion()
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
                f"| {t['kimg']:g} | {_fmt(t['fd_ref'])} | {name} | {fashion._cell(r.get('linear_top1'))} | "
                f"{fashion._cell(r.get('knn_top1'))} | {fashion._cell(r.get('wall_s'), 1 / 60, 1)} | "
                f"{r.get('steps', '-')} | {len(r.get('seeds', []))} | {t['G_ema_sha256']} |"
            )
    lines.append("")
    m = table.get("machine", {})
    lines.append(
        f"Machine: {m.get('platform')}, {m.get('cpus')} CPUs, torch {m.get('torch')}, load average at write "
        f"time {m.get('loadavg')}; commit {table.get('commit')}; written {table.get('created')}."
    )
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> Path:
    """Linear and kNN top-1 against the teacher's FD-ref (log x), one line per method, points labelled by kimg."""
    import matplotlib.ticker  # noqa: F401 - the axis formatter below

    from squeezespan.report.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for ax, key, name in zip(axes, ("linear_top1", "knn_top1"), ("linear probe", "kNN")):
        for i, row_name in enumerate(METHOD_ROWS):
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


# ------------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser(prog: str = "python bench/teacher_quality.py") -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke version: tiny budget, width 0.25, eval subsets")
    ap.add_argument(
        "--teachers",
        help=f"comma list of teacher directories (or folder names under "
        f"bench/results/teachers/) and '{RANDOM}' (untrained generator, kimg 0); default: "
        f"{','.join(DEFAULT_TEACHERS)}",
    )
    ap.add_argument("--rows", default="squeeze", help=f"comma list of {', '.join(METHOD_ROWS)} (default squeeze)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    ap.add_argument(
        "--budget-passes",
        type=int,
        help=f"student image passes per run (default {BUDGET_PASSES}; --quick: the fashion bench's quick budget)",
    )
    ap.add_argument("--force", action="store_true", help="redo the selected cells even if cached")
    ap.add_argument("--work", help="where run directories go (default runs/bench-teacher-quality[-quick])")
    ap.add_argument("--results", help="results folder (default bench/results/teacher_quality[-quick])")
    ap.add_argument("--figure", help="PNG path (default bench/results/figures/teacher_quality[-quick].png)")
    ap.add_argument("--progress", action="store_true", help="progress bars during training")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's default)")
    return ap


def main(argv: list[str] | None = None, prog: str = "python bench/teacher_quality.py") -> int:
    args = build_parser(prog).parse_args(argv)
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()] if args.teachers else None
    if args.teachers is not None and not teachers:
        raise SnsError("--teachers is empty; give a comma list of teacher directories or 'random'")
    run_teacher_quality(
        quick=args.quick,
        teachers=teachers,
        rows=args.rows,
        seeds=args.seeds,
        budget_passes=args.budget_passes,
        force=args.force,
        work=args.work,
        results_dir=args.results,
        figure=args.figure,
        progress=args.progress,
        threads=args.threads or None,
    )
    return 0


if __name__ == "__main__":
    from squeezespan.bench import run_script

    run_script(main)
