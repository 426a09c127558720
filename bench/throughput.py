"""Training-step throughput of every method on the fashion-cpu student.

Precision, memory format, compile, teacher share.

Usage: python bench/throughput.py [--methods sns,squeeze,kd,vicreg,simsiam] [--batch 256] [--steps 4] [--warmup 1]
                                  [--threads 1] [--no-compile] [--teacher SPEC] [--out bench/results/throughput.json]
                                  [--bank-only | --no-bank] [--bank-steps 3]
(= `sns bench throughput ...`)

Every case (method x variant) is built first, then timed one step at a time in interleaved rounds, so load from
other jobs on the machine hits all cases alike; medians are reported. A step is what the engine does: real
batch + teacher sampling (`_step_inputs`), the objective's forward under autocast, backward, SGD step.
Also measured: the matmul peak (GFLOP/s) and the student's FLOPs per image pass, which give the FLOP-bound
limit of image passes per second and the fraction of it each case reaches.

Feature bank (teacher_bank=N): sns and squeeze steps with the live teacher against the same steps drawing
from a bank (engine/bank.py), for the Fashion-MNIST teacher and a paper-size 512-channel StyleGAN2 at 32 px
(random weights: speed only), plus the one-time cost of sampling the bank and the effect of storing bank
images as uint8 on one step's loss and gradient. --bank-only measures just that and updates the JSON's
"feature_bank" entry of an earlier full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from squeezespan.engine.rundir import bf16_native, cpu_name
from squeezespan.errors import SnsError

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("sns", "squeeze", "kd", "vicreg", "simsiam")
# (label, bf16, channels_last, compile)
VARIANTS = (
    ("fp32", False, False, False),
    ("bf16", True, False, False),
    ("bf16+channels_last", True, True, False),
    ("bf16+compile", True, False, True),
)
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
        out[name] = round(2 * n**3 / best / 1e9, 1)
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
        m(x)
    fwd = fc.get_total_flops() / 8
    with FlopCounterMode(display=False) as fc:
        m(x).sum().backward()
    return {"forward": fwd, "train": fc.get_total_flops() / 8, "params": sum(p.numel() for p in m.parameters())}


class Case:
    """One method x variant: its own student, objective and optimizer, stepped exactly like the engine does."""

    def __init__(self, method: str, variant: tuple, batch: int, teacher: str | None, bank=None, name: str = ""):
        from squeezespan.config import resolve_config
        from squeezespan.engine.trainer import PRETRAIN_DEFAULTS, RealStream, build_run

        self.method, (self.label, bf16, cl, comp) = method, variant
        self.bank, self.name = bank, name  # a TeacherBank replaces the live teacher (teacher_bank=N)
        overrides = [
            f"method={method}",
            f"batch_size={batch}",
            f"bf16={str(bf16).lower()}",
            f"channels_last={str(cl).lower()}",
            "knn_every=0",
            "device=cpu",
        ]
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
        mean, std, _res = run["mean"], run["std"], cfg["resolution"]

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
        source, attr = (self.bank, "batch") if self.bank is not None else (teacher, "run")
        if source is not None:
            # time the teacher's share inside the engine's own input builder by wrapping its run()
            original = getattr(source, attr)

            def timed(*a, **k):
                nonlocal t_teacher
                t = time.perf_counter()
                out = original(*a, **k)
                t_teacher += time.perf_counter() - t
                return out

            setattr(source, attr, timed)
        t0 = time.perf_counter()
        try:
            inputs = _step_inputs(
                cfg,
                self.step,
                self.stream,
                teacher,
                self.n_syn,
                torch.device("cpu"),
                run["augment"],
                self.encode,
                bank=self.bank,
            )
        finally:
            if source is not None:
                delattr(source, attr)  # the instance attribute hid the method: removing it restores it
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
        return {
            "method": self.method,
            "variant": self.label,
            "batch": self.cfg["batch_size"],
            "syn": self.n_syn,
            "student_passes_per_step": self.passes,
            "step_s_median": round(med, 4),
            "step_s_min": round(min(self.times), 4),
            "images_per_s": round(self.cfg["batch_size"] / med, 1),
            "student_passes_per_s": round(passes_per_s, 1),
            "teacher_s_median": round(teach, 4),
            "teacher_share": round(teach / med, 3),
            "flop_bound_passes_per_s": round(limit, 1),
            "fraction_of_flop_bound": round(passes_per_s / limit, 3),
            "steps_timed": len(self.times),
            **(
                {"teacher_name": self.name, "mode": "live" if self.bank is None else f"bank {len(self.bank)}"}
                if self.name
                else {}
            ),
        }


# The paper's CIFAR teachers (StyleGAN2-ADA 'cifar' config): 512 channels at every block of a 32 px generator.
PAPER_G_KWARGS = dict(
    z_dim=512,
    c_dim=0,
    w_dim=512,
    img_resolution=32,
    img_channels=1,
    mapping_kwargs=dict(num_layers=2, lr_multiplier=0.01),
    synthesis_kwargs=dict(channel_base=16384, channel_max=512, conv_clamp=None, architecture="skip"),
)


def paper_teacher_dir(root: Path) -> Path:
    """A teacher directory holding a randomly initialised 512-channel StyleGAN2 at 32 px (1 channel, to match the
    fashion-cpu student): the paper's teacher size for timing; its images mean nothing."""
    from squeezespan.teachers.directory import save_teacher_dir
    from squeezespan.teachers.stylegan2 import Discriminator, Generator

    path = root / "stylegan2-512-random"
    if (path / "teacher.json").exists():
        return path
    torch.manual_seed(0)
    D_kwargs = dict(
        c_dim=0,
        img_resolution=32,
        img_channels=1,
        architecture="resnet",
        channel_base=16384,
        channel_max=512,
        conv_clamp=None,
        epilogue_kwargs=dict(mbstd_group_size=4),
    )
    G = Generator(**PAPER_G_KWARGS)
    return save_teacher_dir(
        path,
        G,
        G,
        Discriminator(**D_kwargs),
        PAPER_G_KWARGS,
        D_kwargs,
        {"note": "random weights: throughput benchmark only"},
    )


def quantisation_effect(case: Case) -> dict[str, Any]:
    """What storing bank images as uint8 does to one step: loss and gradient with the live teacher's float images
    against the same images rounded to 8 bits (same augmentation draw), next to two augmentation draws of the
    float images (the step-to-step noise SGD sees anyway)."""
    from squeezespan.engine.bank import quantize
    from squeezespan.engine.rundir import autocast
    from squeezespan.engine.trainer import _step_inputs

    run = case.run
    inputs = _step_inputs(
        case.cfg, 10_000, case.stream, run["teacher"], case.n_syn, torch.device("cpu"), run["augment"], case.encode
    )
    x_float = inputs.syn
    x_uint8 = quantize(x_float).float().div_(255)
    params = [p for g in run["optimizer"].param_groups for p in g["params"] if p.requires_grad]

    def loss_grad(x, aug_seed, bf16):
        torch.manual_seed(aug_seed)
        inputs.syn = x
        with autocast(torch.device("cpu"), bf16):
            loss, _ = run["objective"](inputs)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss.item(), torch.cat([g.reshape(-1) for g in grads if g is not None]).float()

    def cos(a, b):
        return round(torch.nn.functional.cosine_similarity(a, b, dim=0).item(), 6)

    out = {
        "method": case.method,
        "images": case.n_syn,
        "max_pixel_change": round((x_uint8 - x_float).abs().max().item(), 6),
    }
    grads_f = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        l_f, g_f = loss_grad(x_float, 1, bf16)
        grads_f[label] = g_f
        l_q, g_q = loss_grad(x_uint8, 1, bf16)
        l_o, g_o = loss_grad(x_float, 2, bf16)
        out[label] = {
            "loss_float": round(l_f, 5),
            "loss_uint8": round(l_q, 5),
            "loss_rel_change_uint8": float(f"{abs(l_q - l_f) / abs(l_f):.3g}"),
            "grad_cosine_uint8_vs_float": cos(g_f, g_q),
            "grad_cosine_other_augmentation": cos(g_f, g_o),
            "loss_rel_change_other_augmentation": float(f"{abs(l_o - l_f) / abs(l_f):.3g}"),
        }
    out["grad_cosine_bf16_vs_fp32"] = cos(grads_f["fp32"], grads_f["bf16"])  # same images, same draw
    return out


def bank_compare(
    batch: int, steps: int, warmup: int, fashion_teacher: str, bank_sizes: dict[str, int], cache: Path
) -> dict[str, Any]:
    """Measured: sns and squeeze steps, live teacher vs teacher_bank, for the fashion and a 512-channel teacher."""
    from squeezespan.engine.bank import build_bank

    variant = ("bf16+channels_last", True, True, False)  # the fashion-cpu preset's own setting
    teachers = [("fashion-full", fashion_teacher), ("stylegan2-512 (random)", str(paper_teacher_dir(cache)))]
    cases, builds = [], []
    for name, spec in teachers:
        for method in ("sns", "squeeze"):
            live = Case(method, variant, batch, spec, name=name)
            if not any(b["teacher_name"] == name for b in builds):
                n = bank_sizes[name]
                print(f"sampling a bank of {n} images from {name}", flush=True)
                t = time.perf_counter()
                bank = build_bank(live.run["teacher"], n, seed=0)
                dt = time.perf_counter() - t
                builds.append(
                    {
                        "teacher_name": name,
                        "teacher": spec,
                        "bank_images": n,
                        "build_s": round(dt, 2),
                        "build_s_per_image": round(dt / n, 5),
                        "build_s_for_50k": round(50_000 * dt / n, 0),
                        "bytes_per_image": bank.images[0].numel() + 4 * sum(t.shape[1] for t in bank.taps),
                        "tap_channels": [t.shape[1] for t in bank.taps],
                    }
                )
            banked = Case(method, variant, batch, spec, bank=bank, name=name)
            cases += [live, banked]
    for c in cases:
        for _ in range(max(1, warmup)):
            c.one_step(record=False)
    for r in range(steps):
        for c in cases:
            c.one_step(record=True)
        print(f"bank round {r + 1}/{steps} done", flush=True)
    flops = student_flops(cases[0].cfg)
    peak = dict(matmul_peak(), n=1024)
    rows = [c.result(flops, peak) for c in cases]
    pairs = []
    for live, banked in zip(rows[::2], rows[1::2]):
        pairs.append(
            {
                "teacher_name": live["teacher_name"],
                "method": live["method"],
                "batch": live["batch"],
                "syn": live["syn"],
                "live_step_s": live["step_s_median"],
                "bank_step_s": banked["step_s_median"],
                "live_images_per_s": live["images_per_s"],
                "bank_images_per_s": banked["images_per_s"],
                "speedup": round(live["step_s_median"] / banked["step_s_median"], 2),
                "live_teacher_s": live["teacher_s_median"],
                "bank_gather_s": banked["teacher_s_median"],
                "live_teacher_share": live["teacher_share"],
            }
        )
    quant = quantisation_effect(next(c for c in cases if c.bank is None and c.method == "sns"))
    return {
        "variant": variant[0],
        "steps_timed": steps,
        "pairs": pairs,
        "builds": builds,
        "quantisation": quant,
        "cases": rows,
        "loadavg": list(os.getloadavg()),
    }


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


def render_bank(b: dict[str, Any] | None) -> list[str]:
    if not b or "pairs" not in b:
        return []
    lines = [
        "",
        "## Feature bank: live teacher vs teacher_bank (measured)",
        "",
        f"Same student, {b['variant']}, batch {b['pairs'][0]['batch']}, median of {b['steps_timed']} interleaved "
        f"steps; load average during the bank cases: {', '.join(f'{x:.2f}' for x in b['loadavg'])} "
        "(other jobs shared the 2 CPUs). The bank step gathers uint8 images + pooled taps instead of running G "
        "(its teacher column is the gather).",
        "",
        "| teacher | method | batch (syn) | live step (s) | bank step (s) | speed-up | live img/s | bank img/s | "
        "teacher / gather (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in b["pairs"]:
        lines.append(
            f"| {p['teacher_name']} | {p['method']} | {p['batch']} ({p['syn']}) | {p['live_step_s']:.3f} | "
            f"{p['bank_step_s']:.3f} | {p['speedup']:.2f}x | {p['live_images_per_s']:.0f} | "
            f"{p['bank_images_per_s']:.0f} | {p['live_teacher_s']:.3f} / {p['bank_gather_s'] * 1000:.2f} ms |"
        )
    lines += ["", "One-time bank sampling (fp32 teacher forward, outside autocast, as the live path):", ""]
    for bd in b["builds"]:
        lines.append(
            f"- {bd['teacher_name']}: {bd['bank_images']} images in {bd['build_s']:.1f} s "
            f"({1000 * bd['build_s_per_image']:.1f} ms/image, about {bd['build_s_for_50k'] / 60:.0f} min for "
            f"a 50k bank); {bd['bytes_per_image']} bytes/image (uint8 image + float32 pooled taps "
            f"{bd['tap_channels']})."
        )
    q = b.get("quantisation")
    if q:
        lines += [
            "",
            f"uint8 bank images vs the live float images ({q['method']}, {q['images']} synthetic images, "
            f"max pixel change {q['max_pixel_change']:.4f}), one step's loss and gradient, same augmentation "
            "draw; next to it, the same images under another augmentation draw:",
            "",
        ]
        for label in ("fp32", "bf16"):
            e = q[label]
            lines.append(
                f"- {label}: loss change {e['loss_rel_change_uint8']:.2g} (relative), gradient cosine "
                f"{e['grad_cosine_uint8_vs_float']:.4f}; another augmentation draw: loss change "
                f"{e['loss_rel_change_other_augmentation']:.2g}, gradient cosine "
                f"{e['grad_cosine_other_augmentation']:.4f}."
            )
        lines.append(
            f"- for scale: the same float images and draw in bf16 vs fp32 give gradient cosine "
            f"{q['grad_cosine_bf16_vs_fp32']:.4f}."
        )
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _bank(args, teacher: str) -> dict[str, Any]:
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
    args = ap.parse_args(argv)
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
        res["feature_bank"] = _bank(args, teacher)
        if not res.get("cases"):  # nothing else measured: write only the bank part
            out.with_suffix(".md").write_text("\n".join(render_bank(res["feature_bank"])) + "\n")
        else:
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
    res = {
        "benchmark": "throughput",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": torch.get_num_threads(),
        "uptime_before": before,
        "uptime_after": after,
        "loadavg_after": list(os.getloadavg()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cpu": cpu_name(),
            "bf16_native": bf16_native("cpu"),
        },
        "teacher": teacher,
        "student": {k: cases[0].cfg[k] for k in ("arch", "variant", "width", "resolution")},
        "peak": peak,
        "flops": flops,
        "cases": results,
        "notes": notes,
    }
    if not args.no_bank and teacher is not None:
        res["feature_bank"] = _bank(args, teacher)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(res))
    print(render_markdown(res))
    return 0


if __name__ == "__main__":
    from squeezespan.bench import run_script

    run_script(main)
