"""Live teacher vs teacher_bank, side by side: same preset, seeds and budget; kNN + linear probe of each student.

Usage: python bench/bank_accuracy.py [--teacher DIR] [--preset digits] [--methods squeeze,sns] [--banks 2048]
                                     [--seeds 0] [--steps 0] [--out bench/results/bank.json] [--runs runs/bench-bank]

Each (method, seed) is trained with the live teacher (fresh latents every step) and with each bank size
(teacher_bank=N: N images sampled once, every step draws from them); nothing else differs. Finished runs are
reused (their summary.json), so an interrupted bench continues where it stopped. Run it niced: the load
average before/after each run is recorded because other jobs share the CPU (it changes times, not accuracies).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from squeezespan import PRETRAIN_DEFAULTS, SnsError, evaluate, load_backbone, load_dataset, pretrain, resolve_config
from squeezespan.cliutil import ArgumentParser
from squeezespan.config import load_preset

RESULTS = Path(__file__).resolve().parent / "results"
# `sns train-gan --preset gan-digits` (22.9 kimg, FD-ref 9.4), committed so a clean clone measures the same teacher
DEFAULT_TEACHER = str(RESULTS / "teachers" / "digits")


def teacher_sha(spec: str) -> str:
    p = Path(spec)
    p = p / "teacher" if (p / "teacher" / "G_ema.safetensors").exists() else p
    return hashlib.sha256((p / "G_ema.safetensors").read_bytes()).hexdigest()[:16]


def run_one(preset: str, method: str, teacher: str, bank: int, seed: int, steps: int, run_dir: Path) -> dict[str, Any]:
    done = run_dir / "bank_bench.json"
    if done.exists():
        return json.loads(done.read_text())
    over = [
        f"method={method}",
        f"teacher={teacher}",
        f"teacher_bank={bank}",
        f"seed={seed}",
        "knn_every=0",
        "final_eval=false",
        "device=cpu",
    ] + ([f"steps={steps}"] if steps else [])
    cfg = resolve_config(PRETRAIN_DEFAULTS, "pretrain", preset, None, over, None)
    load_before = list(os.getloadavg())
    t0 = time.time()
    summary = pretrain(cfg, run_dir, resume=(run_dir / "checkpoints").is_dir(), progress=False, log=print)
    train_s = time.time() - t0
    train = load_dataset(cfg["data"], root=cfg["data_root"], split="train", resolution=cfg["resolution"])
    test = load_dataset(cfg["data"], root=cfg["data_root"], split="test", resolution=cfg["resolution"])
    backbone = load_backbone(run_dir / "backbone.safetensors", device="cpu")
    ev = evaluate(backbone, train, test, protocol="fast", normalize=False, seed=seed, k=cfg["knn_k"], t=cfg["knn_t"])
    row = {
        "method": method,
        "teacher_bank": bank,
        "mode": "live" if not bank else f"bank {bank}",
        "seed": seed,
        "steps": summary.get("steps"),
        "batch_size": cfg["batch_size"],
        "knn_top1": round(ev["knn"]["top1"], 2),
        "linear_top1": round(ev["linear"]["top1"], 2),
        "wall_s": round(train_s, 1),
        "img_per_s": summary.get("img_per_s"),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
    }
    done.write_text(json.dumps(row, indent=2) + "\n")
    return row


def render(res: dict[str, Any]) -> str:
    lines = [
        "# Live teacher vs teacher bank: accuracy",
        "",
        f"Preset `{res['preset']}` ({res['data']}, {res['steps']} steps x batch {res['batch_size']}), teacher "
        f"`{res['teacher']}` (G_ema sha256 {res['teacher_sha']}). Same seeds and budget; kNN (k=200, t=0.1) and "
        "the fast linear probe (squeezespan.eval, protocol fast) on the test split. Load average "
        f"before/after: {res['loadavg_start']} / {res['loadavg_end']} (other jobs shared the 2 CPUs: this "
        "changes the wall times, not the accuracies).",
        "",
        "| method | teacher | seed | kNN top-1 | linear top-1 | wall (s) | img/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['seed']} | {r['knn_top1']:.2f} | {r['linear_top1']:.2f} | "
            f"{r['wall_s']:.0f} | {r['img_per_s']} |"
        )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in res["runs"]:
        groups.setdefault((r["method"], r["mode"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        lines += [
            "",
            "Mean (min-max) over seeds:",
            "",
            "| method | teacher | seeds | kNN top-1 | linear top-1 |",
            "|---|---|---:|---:|---:|",
        ]
        for (method, mode), g in groups.items():
            cells = []
            for key in ("knn_top1", "linear_top1"):
                v = [r[key] for r in g]
                cells.append(f"{sum(v) / len(v):.2f} ({min(v):.2f}-{max(v):.2f})")
            lines.append(f"| {method} | {mode} | {len(g)} | {cells[0]} | {cells[1]} |")
    if res.get("notes"):
        lines += ["", *[f"- {n}" for n in res["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python bench/bank_accuracy.py", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=DEFAULT_TEACHER)
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--methods", default="squeeze,sns")
    ap.add_argument("--banks", default="2048", help="comma-separated teacher_bank sizes (the live run is always made)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=0, help="0: the preset's steps")
    ap.add_argument("--runs", default="runs/bench-bank")
    ap.add_argument("--out", default=str(RESULTS / "bank.json"))
    ap.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    preset = load_preset(args.preset, "pretrain")
    banks = [0] + [int(b) for b in args.banks.split(",") if b.strip()]
    out = Path(args.out)
    res = {
        "benchmark": "bank_accuracy",
        "preset": args.preset,
        "data": preset.get("data"),
        "steps": args.steps or preset.get("steps"),
        "batch_size": preset.get("batch_size"),
        "teacher": args.teacher,
        "teacher_sha": teacher_sha(args.teacher),
        "loadavg_start": list(os.getloadavg()),
        "runs": [],
        "notes": list(args.note),
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            for bank in banks:
                name = f"{method}-{'live' if not bank else f'bank{bank}'}-s{seed}"
                print(f"== {name}", flush=True)
                res["runs"].append(
                    run_one(args.preset, method, args.teacher, bank, seed, args.steps, Path(args.runs) / name)
                )
                res["loadavg_end"] = list(os.getloadavg())
                res["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(res, indent=2) + "\n")  # after every run: a partial result is kept
                out.with_suffix(".md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    try:  # run by path (a script beside the bench package): a bad input is one `error:` line
        sys.exit(main())
    except SnsError as e:
        sys.exit(f"error: {e}")
