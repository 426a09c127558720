"""Training-step throughput of every method on the fashion-cpu student: precision, memory format, compile, teacher share.

Usage: python bench/throughput.py [--methods sns,squeeze,kd,vicreg,simsiam] [--batch 256] [--steps 4] [--warmup 1]
                                  [--threads 1] [--no-compile] [--teacher SPEC] [--out bench/results/throughput.json]
(= `sns bench throughput ...`)

Every case (method x variant) is built first, then timed one step at a time in interleaved rounds, so load from
other jobs on the machine hits all cases alike; medians are reported. A step is what the engine does: real
batch + teacher sampling (`_step_inputs`), the objective's forward under autocast, backward, SGD step.
Also measured: the matmul peak (GFLOP/s) and the student's FLOPs per image pass, which give the FLOP-bound
limit of image passes per second and the fraction of it each case reaches. The engine has no feature-bank
mode (precomputed teacher images + taps); the teacher's share of the step and the cost of gathering from
an in-memory bank give what one would save.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from squeezespan.errors import SnsError

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("sns", "squeeze", "kd", "vicreg", "simsiam")
# (label, bf16, channels_last, compile)
VARIANTS = (("fp32", False, False, False), ("bf16", True, False, False), ("bf16+channels_last", True, True, False),
            ("bf16+compile", True, False, True))
COMPILE_METHODS = ("sns", "vicreg")  # compiling on a CPU takes minutes per model: two representative methods


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - provenance only
        return f"loadavg {os.getloadavg()}"


def matmul_peak(n: int = 1024, reps: int = 5) -> dict[str, float]:
    """Best-of-``reps`` GFLOP/s of an n x n matmul in fp32 and bf16 at the current thread count."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        best = min(_time(lambda: torch.mm(a, b)) for _ in range(reps))
        out[name] = round(2 * n ** 3 / best / 1e9, 1)
    return out


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def student_flops(cfg: dict[str, Any]) -> dict[str, float]:
    """FLOPs of one image through the student: forward, and forward + backward (what a training pass costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from squeezespan.models import build_student

    m = build_student(cfg["arch"], cfg["variant"], cfg["width"], in_channels=1)
    x = torch.randn(8, 1, cfg["resolution"], cfg["resolution"])
    with FlopCounterMode(display=False) as fc:
        y = m(x)
    fwd = fc.get_total_flops() / 8
    with FlopCounterMode(display=False) as fc:
        m(x).sum().backward()
    return {"forward": fwd, "train": fc.get_total_flops() / 8, "params": sum(p.numel() for p in m.parameters())}


class Case:
    """One method x variant: its own student, objective and optimizer, stepped exactly like the engine does."""

    def __init__(self, method: str, variant: tuple, batch: int, teacher: str | None):
        from squeezespan.config import resolve_config
        from squeezespan.engine.trainer import PRETRAIN_DEFAULTS, RealStream, build_run

        self.method, (self.label, bf16, cl, comp) = method, variant
        overrides = [f"method={method}", f"batch_size={batch}", f"bf16={str(bf16).lower()}",
                     f"channels_last={str(cl).lower()}", "knn_every=0", "device=cpu"]
        cfg = resolve_config(PRETRAIN_DEFAULTS, "pretrain", "fashion-cpu", None, overrides, None)
        cfg["teacher"] = teacher
        self.cfg = cfg
        run = build_run(cfg, torch.device("cpu"))
        self.run = run
        self.n_syn = int(round(run["settings"]["syn_ratio"] * batch))
        n_real = batch - self.n_syn
        self.stream = RealStream(run["train"], n_real, 0) if n_real else None
        student = run["student"]
        self.forward_student = torch.compile(student) if comp else student
        self.compiled = comp
        mean, std, res = run["mean"], run["std"], cfg["resolution"]

        def encode(x):
            x = (x - mean) / std
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.forward_student(x)

        self.encode = encode
        syn_views = 2 if method in ("vicreg", "simsiam") else 1
        self.passes = self.n_syn * syn_views + n_real * 2
        self.times: list[float] = []
        self.teacher_times: list[float] = []
        self.step = 0
        run["student"].train()
        run["objective"].train()

    def one_step(self, record: bool) -> None:
        from squeezespan.engine.rundir import autocast
        from squeezespan.engine.trainer import _step_inputs

        run, cfg = self.run, self.cfg
        teacher = run["teacher"]
        t_teacher = 0.0
        if teacher is not None:
            # time the teacher's share inside the engine's own input builder by wrapping its run()
            original = teacher.run

            def timed(*a, **k):
                nonlocal t_teacher
                t = time.perf_counter()
                out = original(*a, **k)
                t_teacher += time.perf_counter() - t
                return out

            teacher.run = timed
        t0 = time.perf_counter()
        try:
            inputs = _step_inputs(cfg, self.step, self.stream, teacher, self.n_syn, torch.device("cpu"),
                                  run["augment"], self.encode)
        finally:
            if teacher is not None:
                teacher.run = original
        with autocast(torch.device("cpu"), cfg["bf16"]):
            loss, _ = run["objective"](inputs)
        run["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        run["optimizer"].step()
        dt = time.perf_counter() - t0
        self.step += 1
        if record:
            self.times.append(dt)
            self.teacher_times.append(t_teacher)

    def result(self, flops: dict, peak: dict) -> dict[str, Any]:
        med = statistics.median(self.times)
        teach = statistics.median(self.teacher_times)
        passes_per_s = self.passes / med
        prec = "bf16" if self.cfg["bf16"] else "fp32"
        limit = peak[prec] * 1e9 / flops["train"]
        return {"method": self.method, "variant": self.label, "batch": self.cfg["batch_size"], "syn": self.n_syn,
                "student_passes_per_step": self.passes, "step_s_median": round(med, 4),
                "step_s_min": round(min(self.times), 4), "images_per_s": round(self.cfg["batch_size"] / med, 1),
                "student_passes_per_s": round(passes_per_s, 1), "teacher_s_median": round(teach, 4),
                "teacher_share": round(teach / med, 3), "flop_bound_passes_per_s": round(limit, 1),
                "fraction_of_flop_bound": round(passes_per_s / limit, 3), "steps_timed": len(self.times)}


def bank_gather_cost(n_bank: int, n: int, tap_channels: list[int], reps: int = 20) -> float:
    """Seconds to gather ``n`` synthetic images (uint8) and their pooled taps from an in-memory bank."""
    images = torch.randint(0, 256, (n_bank, 1, 32, 32), dtype=torch.uint8)
    pooled = torch.randn(n_bank, sum(tap_channels))
    g = torch.Generator().manual_seed(0)

    def gather():
        idx = torch.randint(0, n_bank, (n,), generator=g)
        return images[idx].float().div_(255), pooled[idx]

    gather()
    return statistics.median(_time(gather) for _ in range(reps))


def find_teacher() -> str | None:
    """A fashion teacher: the committed one, else one the fashion bench trained, else one in /work/runs."""
    candidates = [RESULTS / "teachers" / "fashion-full", Path("runs/bench-fashion/teachers/fashion-full"),
                  Path("runs/bench-fashion-quick/teachers/fashion-full-quick"),
                  Path("/work/runs/bench-fashion-teacher-full-quick")]
    for c in candidates:
        if (c / "teacher.json").exists() or (c / "teacher" / "teacher.json").exists():
            return str(c)
    return None


def render_markdown(res: dict[str, Any]) -> str:
    lines = ["# Training-step throughput (fashion-cpu student)", "",
             f"Machine: {res['machine']['platform']}, {res['machine']['cpus']} CPUs, torch {res['machine']['torch']}, "
             f"{res['threads']} thread(s). Load before: `{res['uptime_before']}`; after: `{res['uptime_after']}`. "
             "Other jobs shared the CPU: compare rows with each other (they were timed interleaved), not with "
             "another machine.", "",
             f"Student: ResNet-18 CIFAR variant x{res['student']['width']:g}, 32 px, 1 channel: "
             f"{res['flops']['forward'] / 1e6:.1f} MFLOP forward, {res['flops']['train'] / 1e6:.1f} MFLOP forward+backward "
             f"per image; {res['flops']['params'] / 1e6:.2f} M parameters. Matmul peak ({res['peak']['n']}^3): "
             f"fp32 {res['peak']['fp32']} GFLOP/s, bf16 {res['peak']['bf16']} GFLOP/s. "
             "FLOP-bound limit = peak / (forward+backward FLOPs per image pass).", "",
             "| method | variant | batch (syn) | step (s) | images/s | student passes/s | teacher share | "
             "FLOP-bound passes/s | fraction |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["cases"]:
        lines.append(f"| {r['method']} | {r['variant']} | {r['batch']} ({r['syn']}) | {r['step_s_median']:.3f} | "
                     f"{r['images_per_s']:.0f} | {r['student_passes_per_s']:.0f} | {100 * r['teacher_share']:.1f}% | "
                     f"{r['flop_bound_passes_per_s']:.0f} | {100 * r['fraction_of_flop_bound']:.1f}% |")
    b = res.get("feature_bank")
    if b:
        lines += ["", "## Feature bank (estimate; the engine has no bank mode)", "",
                  f"A bank of {b['bank_images']} precomputed teacher images + pooled taps would replace the teacher's "
                  f"forward pass ({b['teacher_s']:.3f} s for {b['syn_per_step']} images in the bf16 sns step) by a "
                  f"gather ({b['gather_s'] * 1000:.2f} ms): sns step {b['step_s']:.3f} s -> about "
                  f"{b['step_s_with_bank']:.3f} s ({b['saving_pct']:.1f}% less). The price: a finite synthetic "
                  "set instead of fresh latents every step.", ""]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def main(argv: list[str] | None = None, prog: str = "python bench/throughput.py") -> int:
    ap = _Parser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per case (interleaved rounds)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    ap.add_argument("--teacher", help="teacher spec (default: a committed or bench-trained fashion teacher)")
    ap.add_argument("--out", default=str(RESULTS / "throughput.json"))
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SnsError(f"--methods {','.join(bad)}: unknown; choose from {', '.join(METHODS)}")
    teacher = args.teacher or find_teacher()
    if teacher is None and any(m in ("sns", "squeeze", "kd") for m in methods):
        raise SnsError("no fashion teacher found; pass --teacher (a `sns train-gan` run dir) or run "
                       "`sns bench fashion --rows sns` once to train one")
    if args.threads:
        torch.set_num_threads(args.threads)
    notes = ["The engine's `compile` config key is accepted but not applied (engine/trainer.py has no "
             "torch.compile call); the compile rows compile the student here, in the bench.",
             "Teacher images are generated in fp32 in every variant (the engine samples outside autocast)."]
    before = uptime()
    peak = dict(matmul_peak(), n=1024)
    cases = []
    for m in methods:
        for v in VARIANTS:
            if v[3] and (args.no_compile or m not in COMPILE_METHODS):
                continue
            print(f"building {m} {v[0]}", flush=True)
            cases.append(Case(m, v, args.batch, teacher))
    flops = student_flops(cases[0].cfg)
    for c in cases:  # warmup (and compilation) before any timing
        for _ in range(max(1, args.warmup) + (2 if c.compiled else 0)):
            c.one_step(record=False)
    for r in range(args.steps):
        for c in cases:
            c.one_step(record=True)
        print(f"round {r + 1}/{args.steps} done", flush=True)
    results = [c.result(flops, peak) for c in cases]
    after = uptime()
    res = {"benchmark": "throughput", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(),
           "uptime_before": before, "uptime_after": after, "loadavg_after": list(os.getloadavg()),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
           "teacher": teacher, "student": {k: cases[0].cfg[k] for k in ("arch", "variant", "width", "resolution")},
           "peak": peak, "flops": flops, "cases": results, "notes": notes}
    sns = next((r for r, c in zip(results, cases) if c.method == "sns" and c.label == "bf16"), None)
    sns_case = next((c for c in cases if c.method == "sns" and c.label == "bf16"), None)
    if sns is not None:
        gather = bank_gather_cost(10000, sns["syn"], sns_case.run["teacher"].feature_channels)
        with_bank = sns["step_s_median"] - sns["teacher_s_median"] + gather
        res["feature_bank"] = {"bank_images": 10000, "syn_per_step": sns["syn"], "teacher_s": sns["teacher_s_median"],
                               "gather_s": round(gather, 5), "step_s": sns["step_s_median"],
                               "step_s_with_bank": round(with_bank, 4),
                               "saving_pct": round(100 * (1 - with_bank / sns["step_s_median"]), 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(res))
    print(render_markdown(res))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SnsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
