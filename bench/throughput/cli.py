"""Training-step throughput of every method on the fashion-cpu student.

Precision, memory format, compile, teacher share.

Usage: python -m bench.throughput [--methods sns,squeeze,kd,vicreg,simsiam] [--batch 256] [--steps 4] [--warmup 1]
                                  [--threads 1] [--no-compile] [--teacher SPEC] [--out bench/results/throughput.json]
                                  [--bank-only | --no-bank] [--bank-steps 3]
                                  [--paper-only | --no-paper] [--paper-batches 32,128] [--paper-steps 5]
                                  [--paper-threads 2] [--paper-bank-images 256] [--paper-no-compile]
                                  [--paper-out bench/results/throughput-paper.json]
(= `sns bench throughput ...`)

Every case (method x variant) is built first, then timed one step at a time in interleaved rounds, so load from
other jobs on the machine hits all cases alike; medians are reported. A step is what the engine does: real
batch + teacher sampling (`step_inputs`), the objective's forward under autocast, backward, SGD step.
Also measured: the matmul peak (GFLOP/s) and the student's FLOPs per image pass, which give the FLOP-bound
limit of image passes per second and the fraction of it each case reaches.

Feature bank (teacher_bank=N): sns and squeeze steps with the live teacher against the same steps drawing
from a bank (engine/bank.py), for the Fashion-MNIST teacher and a paper-size 512-channel StyleGAN2 at 32 px
(random weights: speed only), plus the one-time cost of sampling the bank and the effect of storing bank
images as uint8 on one step's loss and gradient. --bank-only measures just that and updates the JSON's
"feature_bank" entry of an earlier full run.

Paper-size section (throughput.paper; --paper-only runs just it, --no-paper skips it): sns steps with the paper's
teacher (StyleGAN2-ADA 'cifar' config, random weights, 3 channels, 32 px) and a full-width ResNet-18, live (fp32;
bf16; bf16 + teacher_compile) and from a bank, at B = 32 and 128 and 2 threads; the teacher's images/s, the bank's
one-time cost for 50k images, the student's fraction of the bf16 FLOP bound, and issue 28's targets. Written to
--paper-out (JSON + Markdown).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, machine
from squeezespan import SnsError
from squeezespan.cliutil import ArgumentParser
from squeezespan.engine import bf16_native

from .bank import bank_compare, render_bank
from .paper import PaperSettings, measure_paper, render_paper
from .steps import VARIANTS, Case, matmul_peak, student_flops, uptime

METHODS = ("sns", "squeeze", "kd", "vicreg", "simsiam")
COMPILE_METHODS = ("sns", "vicreg")  # compiling on a CPU takes minutes per model: two representative methods


def find_teacher() -> str | None:
    """A fashion teacher: the committed one, else one the fashion bench trained, else one in /work/runs."""
    candidates = [
        RESULTS / "teachers" / "fashion-full",
        Path("runs/bench-fashion/teachers/fashion-full"),
        Path("runs/bench-fashion-quick/teachers/fashion-full-quick"),
        Path("/work/runs/bench-fashion-teacher-full-quick"),
    ]
    for c in candidates:
        if (c / "teacher.json").exists() or (c / "teacher" / "teacher.json").exists():
            return str(c)
    return None


def render_markdown(res: dict[str, Any]) -> str:
    """The Markdown of a result: the cases' table and the feature-bank section (only the latter when a --bank-only
    run had no cases to add it to); the paper-size section's own page for its result."""
    if res.get("benchmark") == "throughput-paper":
        return render_paper(res)
    if not res.get("cases"):
        return "\n".join(render_bank(res.get("feature_bank"))) + "\n"
    lines = [
        "# Training-step throughput (fashion-cpu student)",
        "",
        f"Machine: {res['machine']['platform']}, {res['machine'].get('cpu', 'CPU not recorded')}, "
        f"{res['machine']['cpus']} CPUs, torch {res['machine']['torch']}, bf16 hardware: "
        f"{ {True: 'yes', False: 'no (bf16 is emulated)'}.get(res['machine'].get('bf16_native'), 'not recorded') }, "
        f"{res['threads']} thread(s). Load before: `{res['uptime_before']}`; after: `{res['uptime_after']}`. "
        "Other jobs shared the CPU: compare rows with each other (they were timed interleaved), not with "
        "another machine.",
        "",
        f"Student: ResNet-18 CIFAR variant x{res['student']['width']:g}, 32 px, 1 channel: "
        f"{res['flops']['forward'] / 1e6:.1f} MFLOP forward, {res['flops']['train'] / 1e6:.1f} MFLOP forward+backward "
        f"per image; {res['flops']['params'] / 1e6:.2f} M parameters. Matmul peak ({res['peak']['n']}^3): "
        f"fp32 {res['peak']['fp32']} GFLOP/s, bf16 {res['peak']['bf16']} GFLOP/s. "
        "FLOP-bound limit = peak / (forward+backward FLOPs per image pass).",
        "",
        "| method | variant | batch (syn) | step (s) | images/s | student passes/s | teacher share | "
        "FLOP-bound passes/s | fraction |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["cases"]:
        lines.append(
            f"| {r['method']} | {r['variant']} | {r['batch']} ({r['syn']}) | {r['step_s_median']:.3f} | "
            f"{r['images_per_s']:.0f} | {r['student_passes_per_s']:.0f} | {100 * r['teacher_share']:.1f}% | "
            f"{r['flop_bound_passes_per_s']:.0f} | {100 * r['fraction_of_flop_bound']:.1f}% |"
        )
    lines += render_bank(res.get("feature_bank"))
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def measure_bank(args, teacher: str) -> dict[str, Any]:
    before = uptime()
    # banks: enough for the timed steps; the 512-channel teacher costs ~0.3 s per image on one core
    res = bank_compare(
        args.batch,
        args.bank_steps,
        args.warmup,
        teacher,
        {"fashion-full": 1024, "stylegan2-512 (random)": 256},
        Path(args.bank_cache),
    )
    res.update(
        uptime_before=before,
        uptime_after=uptime(),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        threads=torch.get_num_threads(),
    )
    return res


def main(argv: list[str] | None = None, prog: str = "python -m bench.throughput") -> int:
    ap = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per case (interleaved rounds)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    ap.add_argument("--teacher", help="teacher spec (default: a committed or bench-trained fashion teacher)")
    ap.add_argument("--out", default=str(RESULTS / "throughput.json"))
    ap.add_argument("--no-bank", action="store_true", help="skip the live-teacher vs teacher_bank comparison")
    ap.add_argument(
        "--bank-only",
        action="store_true",
        help="only the teacher_bank comparison; updates the feature_bank entry of an existing --out",
    )
    ap.add_argument("--bank-steps", type=int, default=3, help="timed steps per bank/live case")
    ap.add_argument(
        "--bank-cache",
        default="runs/bench-throughput-bank",
        help="where the 512-channel random teacher is written once",
    )
    ap.add_argument("--no-paper", action="store_true", help="skip the paper-size-teacher section")
    ap.add_argument("--paper-only", action="store_true", help="only the paper-size-teacher section")
    ap.add_argument("--paper-batches", default="32,128", help="batch sizes of the paper-size section")
    ap.add_argument("--paper-steps", type=int, default=5, help="timed steps per paper-size row (interleaved)")
    ap.add_argument("--paper-threads", type=int, default=2, help="torch threads for the paper-size section")
    ap.add_argument(
        "--paper-bank-images", type=int, default=256, help="images per teacher variant to time the bank build"
    )
    ap.add_argument(
        "--paper-no-compile", action="store_true", help="skip the paper-size teacher_compile row and bank build"
    )
    ap.add_argument(
        "--paper-tiny",
        action="store_true",
        help="a tiny teacher and student in the paper-size section (a smoke test; its numbers mean nothing)",
    )
    ap.add_argument("--paper-out", default=str(RESULTS / "throughput-paper.json"))
    args = ap.parse_args(argv)
    if args.paper_only and (args.no_paper or args.bank_only):
        raise SnsError("--paper-only runs only the paper-size section: drop --no-paper / --bank-only")
    paper = None if args.no_paper or args.bank_only else paper_settings(args)  # checked before any measuring
    if args.paper_only:
        run_paper(args, paper)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SnsError(f"--methods {','.join(bad)}: unknown; choose from {', '.join(METHODS)}")
    teacher = args.teacher or find_teacher()
    if teacher is None and any(m in ("sns", "squeeze", "kd") for m in methods):
        raise SnsError(
            "no fashion teacher found; pass --teacher (a `sns train-gan` run dir) or run "
            "`sns bench fashion --rows sns` once to train one"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bank_only:
        if teacher is None:
            raise SnsError("--bank-only needs a fashion teacher; pass --teacher")
        out = Path(args.out)
        res = json.loads(out.read_text()) if out.exists() else {"benchmark": "throughput", "cases": [], "notes": []}
        res["feature_bank"] = measure_bank(args, teacher)
        out.with_suffix(".md").write_text(render_markdown(res))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print("\n".join(render_bank(res["feature_bank"])))
        return 0
    notes = [
        "The compile rows compile the student's forward, as the engine's `compile=true` does.",
        "Teacher images are generated in fp32 in every variant (the engine samples outside autocast).",
    ]
    if not bf16_native("cpu"):
        notes.append(
            "This CPU has no bf16 hardware (no AVX-512 BF16 / AMX): torch emulates bf16, so the bf16 rows "
            "show the emulation's cost (what `bf16: auto` avoids). Their 'fraction' divides by an emulated "
            "matmul peak and says nothing about the hardware's limit."
        )
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
    here = machine()
    res = {
        "benchmark": "throughput",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": torch.get_num_threads(),
        "uptime_before": before,
        "uptime_after": after,
        "loadavg_after": list(os.getloadavg()),
        "machine": {k: here[k] for k in ("platform", "cpus", "torch", "cpu", "bf16_native")},
        "teacher": teacher,
        "student": {k: cases[0].cfg[k] for k in ("arch", "variant", "width", "resolution")},
        "peak": peak,
        "flops": flops,
        "cases": results,
        "notes": notes,
    }
    if not args.no_bank and teacher is not None:
        res["feature_bank"] = measure_bank(args, teacher)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(res))
    print(render_markdown(res))
    if paper is not None:
        run_paper(args, paper)
    return 0


def paper_settings(args) -> PaperSettings:
    """The paper-size section's settings from the command line, checked."""
    try:
        batches = tuple(int(b) for b in args.paper_batches.split(",") if b.strip())
    except ValueError:
        raise SnsError(f"--paper-batches {args.paper_batches}: expected batch sizes like 32,128") from None
    if not batches or any(b < 8 or b % 2 for b in batches):
        raise SnsError(f"--paper-batches {args.paper_batches}: each batch must be even and >= 8 (half teacher images)")
    for flag, value, low in (
        ("--paper-steps", args.paper_steps, 1),
        ("--paper-threads", args.paper_threads, 0),
        ("--paper-bank-images", args.paper_bank_images, 1),
    ):
        if value < low:
            raise SnsError(f"{flag} {value}: must be >= {low}")
    return PaperSettings(
        batches=batches,
        steps=args.paper_steps,
        warmup=args.warmup,
        bank_images=args.paper_bank_images,
        threads=args.paper_threads,
        compile=not args.paper_no_compile,
        tiny=args.paper_tiny,
    )


def run_paper(args, settings: PaperSettings) -> dict[str, Any]:
    """Measure the paper-size section and write --paper-out (JSON) and its Markdown beside it."""
    res = measure_paper(settings)
    out = Path(args.paper_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(res))
    print(render_markdown(res))
    return res
