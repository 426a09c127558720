"""What a bf16 teacher changes (issue 28 item 2): images, taps, targets after T_phi, and student accuracy.

Usage: python -m bench.teacher_precision [--teacher DIR] [--checkpoint CKPT ...] [--images 256] [--seed 0]
                                         [--out bench/results/teacher_precision.json]
(= `sns bench teacher-precision ...`)

The same latents through the teacher twice, ``teacher_precision=fp32`` and ``bf16`` (Teacher.precision), and:

- images: max / mean absolute difference in [0, 1] units and the share of uint8 pixels that change;
- taps: each tap's pooled features, relative L2 difference;
- targets after T_phi (the squeeze module, the thing the student regresses on): relative L2 difference and
  cosine of zg, for a freshly initialised T_phi (the fashion sitting config's) and for the trained T_phi of each
  ``--checkpoint`` (a `sns pretrain` checkpoint of a squeeze/sns run). For a trained checkpoint also the
  squeeze loss's invariance term (mean squared error of the trained student's prediction zf against zg) with
  fp32 and with bf16 targets, beside the squared distance between the two targets: the loss's own scale;
- accuracy: the Fashion-MNIST sitting cells with the teacher in bf16 (`sns bench fashion --mode sitting
  --teacher-precision bf16 --rows sns,squeeze --tracks full`: bench/results/fashion-sitting-teacher-bf16.json)
  against each ``--fp32-table`` of the same cells with the fp32 teacher; by default the control run with the same
  code beside them (`sns bench fashion --mode sitting --rows sns,squeeze --tracks full --results
  bench/results/fashion-sitting-teacher-fp32 --work runs/bench-fashion-sitting-teacher-fp32`) and the committed
  sitting cells (bench/results/fashion-sitting.json, an older code version); per row: seeds, mean, the
  difference and its range over seed pairs.

Writes the JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bench import common
from bench.fashion import cells, plan
from squeezespan import PRETRAIN_DEFAULTS, SnsError, build_run, load_teacher, losses
from squeezespan.engine import load_checkpoint

ROWS = ("sns", "squeeze")
FP32_TABLES = (common.RESULTS / "fashion-sitting-teacher-fp32.json", common.RESULTS / "fashion-sitting.json")
BF16_TABLE = common.RESULTS / "fashion-sitting-teacher-bf16.json"


def sample_both(teacher, z: torch.Tensor) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
    """Images and taps for the same latents with the teacher in fp32 and in bf16."""
    out = {}
    for precision in ("fp32", "bf16"):
        teacher.precision = precision
        out[precision] = teacher.run(z)
    teacher.precision = "fp32"
    return out


def pooled(taps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.mean(dim=(2, 3)) if t.ndim == 4 else t for t in taps]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 difference of b against a, over the whole batch."""
    return float(f"{((b - a).norm() / a.norm().clamp_min(1e-12)).item():.4g}")


def image_diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = (b - a).abs()
    q = lambda x: (x.clamp(0, 1) * 255).round()  # noqa: E731 - the uint8 an image file or a bank would store
    return {
        "max_abs": round(d.max().item(), 5),
        "mean_abs": float(f"{d.mean().item():.4g}"),
        "max_uint8_levels": int((q(b) - q(a)).abs().max().item()),
        "uint8_pixels_changed": round((q(b) != q(a)).float().mean().item(), 4),
    }


def target_diff(squeeze: torch.nn.Module, taps32: list[torch.Tensor], taps16: list[torch.Tensor]) -> dict[str, Any]:
    """zg = T_phi(taps) for both precisions (T_phi as in training: train mode, batch statistics; no update kept)."""
    squeeze = copy.deepcopy(squeeze).train()
    with torch.no_grad():
        z32, z16 = squeeze(taps32), squeeze(taps16)
    cos = torch.nn.functional.cosine_similarity(z32, z16, dim=1)
    spread = (z32 - z32.mean(0)).norm() / z32.norm().clamp_min(1e-12)
    return {
        "rel_l2": rel(z32, z16),
        "cosine_mean": round(cos.mean().item(), 6),
        "cosine_min": round(cos.min().item(), 6),
        # for scale: how far the targets of different images are from their mean, relative to the targets
        "rel_spread_between_images": round(spread.item(), 4),
        "z32": z32,
        "z16": z16,
    }


def run_config(path: Path) -> dict[str, Any]:
    """The resolved config of the run a checkpoint belongs to (its run directory's config.yaml)."""
    cfg_path = path.parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise SnsError(f"--checkpoint {path}: no config.yaml in its run directory {cfg_path.parent}")
    cfg = yaml.safe_load(cfg_path.read_text())
    # a run written before a setting existed has no value for it: the default (what that run did)
    return {**PRETRAIN_DEFAULTS, **{k: v for k, v in cfg.items() if k in PRETRAIN_DEFAULTS}}


def initial_squeeze(teacher_spec: str, image_shape: tuple[int, int, int], seed: int) -> torch.nn.Module:
    """T_phi as the fashion bench's sitting squeeze cell initialises it with this teacher (at step 0)."""
    cfg = plan.resolve_run_config(plan.ROW_BY_NAME["squeeze"], "full", 0.1, seed, "sitting", teacher_spec)
    cfg.update(device="cpu", knn_every=0, final_eval=False, resolution=image_shape[-1])
    # only T_phi is used: two blank images stand in for the data, which would need Fashion-MNIST on disk
    blank = torch.utils.data.TensorDataset(torch.zeros(2, *image_shape), torch.zeros(2, dtype=torch.long))
    return build_run(cfg, torch.device("cpu"), dataset=blank).objective.squeeze


def measure_checkpoint(path: Path, both: dict, aug_seed: int, teacher_sha: str) -> dict[str, Any]:
    """Trained T_phi of a checkpoint: target difference, and the invariance term with fp32 and bf16 targets."""
    cfg = run_config(path)
    trained_with = cells.teacher_identity(str(cfg.get("teacher"))).get("G_ema_sha256") if cfg.get("teacher") else None
    if trained_with != teacher_sha:
        raise SnsError(
            f"--checkpoint {path}: its run's teacher ({cfg.get('teacher')}, G_ema {trained_with}) is not --teacher "
            f"(G_ema {teacher_sha}); its T_phi was trained on another teacher's taps"
        )
    cfg.update(device="cpu", knn_every=0, final_eval=False)
    run = build_run(cfg, torch.device("cpu"))
    state = load_checkpoint(path)
    run.student.load_state_dict(state["student"])
    run.objective.load_state_dict(state["objective"])
    (x32, t32), (_x16, t16) = both["fp32"], both["bf16"]
    out = target_diff(run.objective.squeeze, t32, t16)
    z32, z16 = out.pop("z32"), out.pop("z16")
    student, projector = copy.deepcopy(run.student).train(), copy.deepcopy(run.objective.projector).train()
    torch.manual_seed(aug_seed)
    with torch.no_grad():
        xs = run.augment(x32) if getattr(run.objective, "augment_syn", True) else x32
        zf = projector(student((xs - run.mean) / run.std))
    out.update(
        checkpoint=str(path),
        method=cfg["method"],
        step=int(state["step"]),
        invariance_fp32_targets=round(losses.invariance(zf, z32).item(), 5),
        invariance_bf16_targets=round(losses.invariance(zf, z16).item(), 5),
        target_sq_distance=float(f"{losses.invariance(z16, z32).item():.4g}"),
    )
    return out


def accuracy(fp32_table: Path, bf16_table: Path) -> dict[str, Any]:
    """Per row, the full track's linear/kNN top-1 with the fp32 and the bf16 teacher, by seed; and which tables."""
    paths = {"fp32": fp32_table, "bf16": bf16_table}
    tables = {name: json.loads(p.read_text()) if p.is_file() else {"runs": []} for name, p in paths.items()}
    out: dict[str, Any] = {}
    for row in ROWS:
        entry: dict[str, Any] = {}
        for name, table in tables.items():
            runs = [
                r
                for r in table["runs"]
                if r["row"] == row and r["track"] == "full" and r.get("lr") == 0.1 and "linear_top1" in r
            ]
            entry[name] = {
                "seeds": sorted(r["seed"] for r in runs),
                "linear": {r["seed"]: round(r["linear_top1"], 2) for r in runs},
                "knn": {r["seed"]: round(r["knn_top1"], 2) for r in runs},
                "linear_stats": common.stats([r["linear_top1"] for r in runs]) if runs else None,
                "knn_stats": common.stats([r["knn_top1"] for r in runs]) if runs else None,
                "cpu": sorted({r.get("cpu", "unrecorded") for r in runs}),  # fashion's collect records it per cell
                "teacher_sha": sorted({(r.get("teacher") or {}).get("G_ema_sha256", "?") for r in runs}),
            }
        for metric in ("linear", "knn"):
            d = common.difference(entry["bf16"][f"{metric}_stats"], entry["fp32"][f"{metric}_stats"])
            if d:  # bf16 - fp32: the difference of the means and its range over seed pairs
                entry[f"{metric}_diff"] = {"mean": round(d["mean"], 2), "range": [round(x, 2) for x in d["range"]]}
        out[row] = entry
    return {"fp32_table": fp32_table.name, "bf16_table": bf16_table.name, "rows": out}


def _cell(side: dict) -> str:
    if not side["linear_stats"]:
        return "not run"
    return f"{common.mean_std(side['linear_stats'])} / {common.mean_std(side['knn_stats'])}"


def render(res: dict[str, Any]) -> str:
    im, lines = res["images"], []
    lines += [
        "# What a bf16 teacher changes (teacher_precision=bf16 against fp32)",
        "",
        f"Teacher `{res['teacher']}` (G_ema {res['teacher_sha']}), {res['n_images']} latents (seed {res['seed']}), "
        "the same latents in both precisions. Written by `sns bench teacher-precision`.",
        "",
        "| what | bf16 against fp32 |",
        "|---|---|",
        f"| images, max / mean abs difference ([0, 1] units) | {im['max_abs']:.4f} / {im['mean_abs']:.2g} |",
        f"| images, uint8 pixels changed (largest change in levels) | {100 * im['uint8_pixels_changed']:.1f}% "
        f"({im['max_uint8_levels']}) |",
    ]
    for name, r in res["taps"].items():
        lines.append(f"| tap `{name}`, pooled, relative L2 difference | {100 * r:.2f}% |")
    t = res["targets_init"]
    lines.append(
        f"| targets zg = T_phi(taps), T_phi as initialised: relative L2 / mean cosine | {100 * t['rel_l2']:.2f}% / "
        f"{t['cosine_mean']:.5f} |"
    )
    for c in res["targets_trained"]:
        lines.append(
            f"| targets zg, T_phi trained ({c['method']}, step {c['step']}): relative L2 / mean cosine | "
            f"{100 * c['rel_l2']:.2f}% / {c['cosine_mean']:.5f} |"
        )
        lines.append(
            f"| invariance term of that trained student, fp32 / bf16 targets (squared distance between the two "
            f"targets) | {c['invariance_fp32_targets']:.4f} / {c['invariance_bf16_targets']:.4f} "
            f"({c['target_sq_distance']:.2g}) |"
        )
    for acc in res["accuracy"]:
        lines += [
            "",
            f"Accuracy: Fashion-MNIST sitting cells (full track, lr 0.1, bf16 student), fp32 teacher "
            f"(`{acc['fp32_table']}`) against the teacher in bf16 (`{acc['bf16_table']}`). Linear / kNN top-1; "
            "differences: bf16 - fp32, mean and in brackets the range over seed pairs.",
            "",
            "| row | fp32 teacher: linear / kNN | bf16 teacher: linear / kNN | seeds (fp32, bf16) | linear difference "
            "| kNN difference |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row, e in acc["rows"].items():
            lin, knn = (common.diff_range(e["bf16"][f"{m}_stats"], e["fp32"][f"{m}_stats"]) for m in ("linear", "knn"))
            lines.append(
                f"| {row} | {_cell(e['fp32'])} | {_cell(e['bf16'])} | {len(e['fp32']['seeds'])}, "
                f"{len(e['bf16']['seeds'])} | {lin} | {knn} |"
            )
    cpus = sorted(
        {
            c
            for acc in res["accuracy"]
            for e in acc["rows"].values()
            for side in ("fp32", "bf16")
            for c in e[side]["cpu"]
        }
    )
    m = res["machine"]
    lines += [
        "",
        f"CPU of the accuracy cells: {', '.join(cpus) or '-'}. This measurement: {m['cpu']}, torch {m['torch']}, "
        f"commit {res['commit']}, {res['created']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m bench.teacher_precision") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(common.RESULTS / "teachers" / "fashion-full"), help="teacher spec")
    ap.add_argument(
        "--checkpoint", action="append", default=[], help="a squeeze/sns run's checkpoint (its trained T_phi)"
    )
    ap.add_argument("--images", type=int, default=256, help="latents (the batch T_phi's BatchNorm sees)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fp32-table",
        action="append",
        help="a fashion sitting table with the fp32 teacher (repeatable; default: the same-code control and the "
        "committed sitting table, those that exist)",
    )
    ap.add_argument("--bf16-table", default=str(BF16_TABLE))
    ap.add_argument("--out", default=str(common.RESULTS / "teacher_precision.json"))
    args = ap.parse_args(argv)
    if args.images < 2:
        raise SnsError(f"--images {args.images}: expected at least 2 (T_phi's BatchNorm needs a batch)")
    teacher = load_teacher(args.teacher)
    both = sample_both(teacher, teacher.draw_z(args.images, seed=args.seed))
    (x32, t32), (x16, t16) = both["fp32"], both["bf16"]
    init = target_diff(initial_squeeze(args.teacher, teacher.image_shape, args.seed), t32, t16)
    init.pop("z32"), init.pop("z16")
    sha = cells.teacher_identity(args.teacher).get("G_ema_sha256", "?")
    res = {
        "benchmark": "teacher_precision",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": common.git_commit(),
        "machine": common.machine(),
        "teacher": common.repo_relative(args.teacher),
        "teacher_sha": sha,
        "n_images": args.images,
        "seed": args.seed,
        "images": image_diff(x32, x16),
        "taps": {n: rel(a, b) for n, a, b in zip(teacher.feature_names, pooled(t32), pooled(t16))},
        "targets_init": init,
        "targets_trained": [measure_checkpoint(Path(p), both, args.seed, sha) for p in args.checkpoint],
        "accuracy": [
            accuracy(Path(t), Path(args.bf16_table))
            for t in (args.fp32_table or [str(p) for p in FP32_TABLES if p.is_file()])
        ],
    }
    out = Path(args.out)
    common.write_json(out, res)
    out.with_suffix(".md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    common.run_main(main)
