"""The paper-size section of `sns bench throughput` (issue 28 item 4): Squeeze and Span steps with the paper's teacher
(StyleGAN2-ADA 'cifar' config, random weights: speed only, 3 channels, 32 px) and a full-width ResNet-18 student
(CIFAR stem, 3-channel 32 px input), live and from a teacher bank, at B = 32 and 128, 2 threads; the one-time cost
of a bank; the student's fraction of the FLOP bound from a matmul peak measured in the same run; and a targets
block against the authors' step (issue 28's reference numbers), saying for each missed target by how much and why.

The real images are a synthetic in-memory dataset of the right shape (only speed matters). Steps are timed like
the rest of the bench (``steps.Case``: the engine's input builder, the objective under autocast, backward, SGD
step), interleaved in rounds over every row and batch, medians reported.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine
from bench.official_parity import CONFIGS
from squeezespan import Generator, as_image_dataset, load_teacher
from squeezespan.engine.bank import CHUNK, build_bank

from .steps import Case, matmul_peak, student_flops, uptime

# issue 28: the authors' training step beside `sns pretrain` on this 2-core AVX-512 BF16 CPU, same pickle, same
# ResNet-18 student, B = 32 (16 teacher images + 16 real images x 2 views), 2 threads, median of 5 interleaved steps
REFERENCE = {
    "batch": 32,
    "step_s": 4.03,
    "images_per_s": 7.9,
    "what": "the authors' training step, fp32 teacher (issue 28)",
}
TARGETS = {  # issue 28 item 5
    "live_images_per_s": 16.0,  # 2x the reference's images/s, live teacher, B = 32
    "bank_build_50k_s": 3600.0,  # a 50k-image bank in under an hour
    "bank_images_per_s": 80.0,  # 10x the reference, bank step, B = 32
    "student_fraction": 0.70,  # of the bf16 FLOP bound
}
BANK_FOR_50K = 50_000
TEACHER_SPEC = "bench.throughput.paper:paper_generator"
TINY_TEACHER_SPEC = "bench.throughput.paper:tiny_generator"

# rows: (key, what, student bf16, student channels_last, teacher_precision, teacher_compile, from a bank)
ROWS = (
    ("live-fp32", "live teacher fp32, student fp32 (the old default)", False, False, "fp32", False, False),
    ("live-bf16", "live teacher bf16, student bf16 + channels_last", True, True, "bf16", False, False),
    (
        "live-bf16-compile",
        "live teacher bf16 + teacher_compile, student bf16 + channels_last",
        True,
        True,
        "bf16",
        True,
        False,
    ),
    ("bank", "teacher bank, student bf16 + channels_last", True, True, "bf16", False, True),
)
# the one-time bank build, per teacher variant: (teacher_precision, teacher_compile)
BUILDS = (("fp32", False), ("bf16", False), ("bf16", True))


def paper_generator() -> Generator:
    """The paper's CIFAR teacher architecture: StyleGAN2-ADA train.py --cfg=cifar (512 channels at every block,
    2 mapping layers, conv_clamp 256), 3 channels, 32 px, seeded random weights (speed only)."""
    cfg = copy.deepcopy(CONFIGS["cifar"])
    torch.manual_seed(0)
    return Generator(c_dim=cfg["c_dim"], img_resolution=cfg["res"], img_channels=3, **cfg["G"])


def tiny_generator() -> Generator:
    """A 16-channel StyleGAN2 of the same layout (3 channels, 32 px): the smoke test's teacher."""
    torch.manual_seed(0)
    return Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=32,
        img_channels=3,
        mapping_kwargs=dict(num_layers=1),
        synthesis_kwargs=dict(channel_base=256, channel_max=16, conv_clamp=256),
    )


@dataclass
class PaperSettings:
    batches: tuple[int, ...] = (32, 128)
    steps: int = 5  # timed steps per row (interleaved rounds)
    warmup: int = 1
    bank_images: int = 256  # images per teacher variant to time the bank build (CHUNK at a time)
    threads: int = 2
    compile: bool = True  # the teacher_compile row and build
    tiny: bool = False  # a tiny teacher and student: checks the section runs, its numbers mean nothing
    real_images: int = 1024  # the synthetic real dataset


class RandomImages(torch.utils.data.Dataset):
    """Seeded uint8 noise images with labels: the real part of a step, where only the shapes matter."""

    def __init__(self, n: int, channels: int = 3, resolution: int = 32):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, channels, resolution, resolution), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(i) % 10


def teacher_flops(spec: str) -> dict[str, float]:
    """FLOPs per image of the teacher's sampling forward (FlopCounterMode, the frozen teacher's own form)."""
    teacher = load_teacher(spec)
    z = teacher.draw_z(4, seed=0)
    with FlopCounterMode(display=False) as fc:
        teacher.run(z)
    return {
        "per_image": fc.get_total_flops() / 4,
        "params": sum(p.numel() for p in teacher.generator.parameters()),
    }


def _timed_builds(spec: str, settings: PaperSettings) -> tuple[list[dict[str, Any]], Any]:
    """Each teacher variant samples bank chunks (build_bank, CHUNK images each), interleaved, after one warm-up
    chunk (which compiles a teacher_compile variant); also returns a small bf16 bank for the bank rows."""
    chunk = min(CHUNK, settings.bank_images)
    rounds = max(1, settings.bank_images // chunk)
    variants = [(p, c) for p, c in BUILDS if settings.compile or not c]
    teachers = {v: load_teacher(spec, precision=v[0], compile=v[1]) for v in variants}
    first, times = {}, {v: [] for v in variants}
    for v, t in teachers.items():
        print(f"bank build warm-up: teacher {v[0]}{' + compile' if v[1] else ''}", flush=True)
        start = time.perf_counter()
        build_bank(t, chunk, seed=1)
        first[v] = time.perf_counter() - start
    for r in range(rounds):
        for v, t in teachers.items():
            start = time.perf_counter()
            build_bank(t, chunk, seed=100 + r)
            times[v].append(time.perf_counter() - start)
        print(f"bank build round {r + 1}/{rounds} done", flush=True)
    builds = []
    for (precision, compiled), ts in times.items():
        per_image = statistics.median(ts) / chunk
        builds.append(
            {
                "teacher_precision": precision,
                "teacher_compile": compiled,
                "images_timed": chunk * rounds,
                "chunk": chunk,
                "first_chunk_s": round(first[(precision, compiled)], 2),
                "images_per_s": round(1 / per_image, 2),
                "s_per_image": round(per_image, 5),
                "s_for_50k": round(BANK_FOR_50K * per_image, 0),
            }
        )
    n_syn = max(b // 2 for b in settings.batches)
    bank = build_bank(teachers[("bf16", False)], max(2 * n_syn, chunk), seed=0)
    return builds, bank


def _overrides(settings: PaperSettings, precision: str, compiled: bool) -> tuple[str, ...]:
    size = ("width=0.125", "proj_hidden=32", "proj_dim=32", "squeeze_hidden=32") if settings.tiny else ("width=1",)
    return (
        "arch=resnet18",
        "variant=cifar",
        "resolution=32",
        "final_eval=false",
        f"teacher_precision={precision}",
        f"teacher_compile={str(compiled).lower()}",
        *size,
    )


def _row(case: Case, key: str, what: str, precision: str, compiled: bool, flops: dict, peak: dict) -> dict:
    """What a row reports, from its timed steps: the step, the teacher (or bank gather) inside it, the student."""
    step = statistics.median(case.times)
    teach = statistics.median(case.teacher_times)
    student = statistics.median([t - te for t, te in zip(case.times, case.teacher_times)])
    batch = case.cfg["batch_size"]
    prec = case.cfg["precision"]
    bound = peak[prec] * 1e9 / flops["train"]  # student image passes per second at the matmul peak
    return {
        "row": key,
        "what": what,
        "batch": batch,
        "syn": case.n_syn,
        "mode": "bank" if case.bank is not None else "live",
        "student_precision": prec,
        "student_channels_last": bool(case.cfg["channels_last"]),
        "teacher_precision": precision,
        "teacher_compile": compiled,
        "student_passes_per_step": case.passes,
        "step_s_median": round(step, 4),
        "step_s_min": round(min(case.times), 4),
        "images_per_s": round(batch / step, 2),
        "vs_reference": round(batch / step / REFERENCE["images_per_s"], 2),
        "student_passes_per_s": round(case.passes / step, 1),
        "teacher_s_median": round(teach, 4),
        # a bank row's teacher time is the gather from the bank: no teacher images/s
        "teacher_images_per_s": round(case.n_syn / teach, 2) if teach > 0 and case.bank is None else None,
        "teacher_share": round(teach / step, 3),
        "student_s_median": round(student, 4),
        "flop_bound_passes_per_s": round(bound, 1),
        "student_fraction_of_flop_bound": round(case.passes / student / bound, 3),
        "step_fraction_of_flop_bound": round(case.passes / step / bound, 3),
        "first_step_s": round(case.first_step_s, 2),
        "steps_timed": len(case.times),
    }


def measure_paper(settings: PaperSettings) -> dict[str, Any]:
    """Run the section: peak, FLOPs, bank builds, then every row x batch in interleaved rounds."""
    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _measure(settings)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(settings: PaperSettings) -> dict[str, Any]:
    spec = TINY_TEACHER_SPEC if settings.tiny else TEACHER_SPEC
    before = uptime()
    started = time.perf_counter()
    peak = dict(matmul_peak(), n=1024)
    t_flops = teacher_flops(spec)
    dataset = as_image_dataset(RandomImages(settings.real_images), 32)
    builds, bank = _timed_builds(spec, settings)
    rows = [r for r in ROWS if settings.compile or not r[5]]
    cases = []
    for batch in settings.batches:
        for key, what, bf16, cl, precision, compiled, banked in rows:
            print(f"building B={batch} {key}", flush=True)
            case = Case(
                "sns",
                (key, bf16, cl, False),
                batch,
                spec,
                bank=bank if banked else None,
                name=key,
                preset=None,
                overrides=_overrides(settings, precision, compiled),
                dataset=dataset,
            )
            cases.append((case, key, what, precision, compiled))
    for case, *_ in cases:  # warm-up (and the teacher's compilation) before any timing
        start = time.perf_counter()
        case.one_step(record=False)
        case.first_step_s = time.perf_counter() - start
        for _ in range(max(0, settings.warmup - 1)):
            case.one_step(record=False)
    for r in range(settings.steps):
        for case, *_ in cases:
            case.one_step(record=True)
        print(f"paper round {r + 1}/{settings.steps} done", flush=True)
    s_flops = student_flops(cases[0][0].cfg, in_channels=3)
    results = [_row(case, key, what, p, c, s_flops, peak) for case, key, what, p, c in cases]
    cfg = cases[0][0].cfg
    res = {
        "benchmark": "throughput-paper",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tiny": settings.tiny,
        "settings": asdict(settings),
        "threads": torch.get_num_threads(),
        "uptime_before": before,
        "uptime_after": uptime(),
        "loadavg_after": list(os.getloadavg()),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {k: machine()[k] for k in ("platform", "cpus", "torch", "cpu", "bf16_native")},
        "teacher": {
            "spec": spec,
            "config": "tiny (smoke test)" if settings.tiny else "StyleGAN2-ADA cifar, random weights",
            "channels": 3,
            "resolution": 32,
            "flops_per_image": t_flops["per_image"],
            "params": t_flops["params"],
        },
        "student": {
            **{k: cfg[k] for k in ("arch", "variant", "width", "resolution")},
            "in_channels": 3,
            "flops": s_flops,
        },
        "peak": peak,
        "builds": builds,
        "rows": results,
        "reference": REFERENCE,
    }
    res["targets"] = compute_targets(res)
    return res


def _best(rows: list[dict], key: str, **match: Any) -> dict | None:
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return max(hits, key=lambda r: r[key]) if hits else None


def compute_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 28's targets against the measured rows and builds: measured value, met or not, by how much, and why
    (the FLOP bound each one has at the matmul peak measured in the same run)."""
    rows, peak = res["rows"], res["peak"]["bf16"] * 1e9
    t_flops = res["teacher"]["flops_per_image"]
    s_flops = res["student"]["flops"]["train"]
    batches = sorted({r["batch"] for r in rows})
    ref_batch = REFERENCE["batch"] if REFERENCE["batch"] in batches else batches[0]
    out = []

    live = _best(rows, "images_per_s", batch=ref_batch, mode="live")
    if live is not None:
        need = TARGETS["live_images_per_s"]
        step_flops = live["syn"] * t_flops + live["student_passes_per_step"] * s_flops
        bound = ref_batch * peak / step_flops
        why = (
            f"the teacher takes {live['teacher_share']:.0%} of the step and samples {live['teacher_images_per_s']:.1f} "
            f"images/s; its {t_flops / 1e9:.2f} GFLOP per image allow {peak / t_flops:.1f} images/s at the measured "
            f"bf16 matmul peak ({peak / 1e9:.0f} GFLOP/s); at that peak the whole step (teacher + student FLOPs) "
            f"could reach {bound:.1f} images/s"
        )
        if bound < need:
            why += ", below the target: no form of this computation reaches it at this matmul rate"
        out.append(_target("live", f"live step, B = {ref_batch}", need, live["images_per_s"], "images/s", why, live))

    builds = res["builds"]
    if builds:
        best = min(builds, key=lambda b: b["s_for_50k"])
        need = TARGETS["bank_build_50k_s"]
        bound = BANK_FOR_50K * t_flops / peak
        variant = f"teacher {best['teacher_precision']}{' + teacher_compile' if best['teacher_compile'] else ''}"
        why = (
            f"{variant} samples {best['images_per_s']:.1f} images/s; at the bf16 matmul peak the teacher's "
            f"{t_flops / 1e9:.2f} GFLOP per image bound a 50k build to {bound / 60:.0f} min"
        )
        if bound > need:
            why += ", above the target: no form of this computation reaches it at this matmul rate"
        out.append(
            _target(
                "bank_build", "bank build, 50k images", need, best["s_for_50k"], "s", why, best, lower_is_better=True
            )
        )

    bank = _best(rows, "images_per_s", batch=ref_batch, mode="bank")
    if bank is not None:
        need = TARGETS["bank_images_per_s"]
        bound = ref_batch * peak / (bank["student_passes_per_step"] * s_flops)
        why = (
            f"{bank['student_passes_per_step']} student passes of {s_flops / 1e9:.2f} GFLOP (forward + backward) per "
            f"step bound a B = {ref_batch} step to {bound:.1f} images/s at the bf16 matmul peak; the student runs at "
            f"{bank['student_fraction_of_flop_bound']:.0%} of that bound"
        )
        if bound < need:
            why += ", and the bound itself is below the target"
        out.append(
            _target("bank_step", f"bank step, B = {ref_batch}", need, bank["images_per_s"], "images/s", why, bank)
        )

    big = max(batches)
    student = _best(rows, "student_fraction_of_flop_bound", batch=big, mode="bank") or _best(
        rows, "student_fraction_of_flop_bound", batch=big, student_precision="bf16"
    )
    if student is not None:
        need = TARGETS["student_fraction"]
        flop_s = student["student_passes_per_step"] * s_flops / peak
        rest = student["student_s_median"] - flop_s
        why = (
            f"the student's part of the step takes {student['student_s_median']:.3f} s against {flop_s:.3f} s of "
            f"FLOPs at the bf16 matmul peak; the other {max(rest, 0):.3f} s go to what FLOP counting leaves out "
            "(BatchNorm, activations, the augmentation, the SGD update) and to convolutions running below the "
            "1024^3 matmul's rate (not timed apart here)"
        )
        out.append(
            _target(
                "student_fraction",
                f"student, fraction of the bf16 FLOP bound, B = {big} ({student['row']})",
                need,
                student["student_fraction_of_flop_bound"],
                "",
                why,
                student,
            )
        )
    return out


def _target(
    key: str, what: str, need: float, got: float, unit: str, why: str, source: dict, lower_is_better: bool = False
) -> dict[str, Any]:
    met = got <= need if lower_is_better else got >= need
    ratio = (need / got if lower_is_better else got / need) if got else 0.0
    return {
        "target": key,
        "what": what,
        "need": need,
        "measured": got,
        "unit": unit,
        "lower_is_better": lower_is_better,
        "met": met,
        "ratio": round(ratio, 3),  # measured as a fraction of the target (>= 1: met)
        "why": None if met else why,
        "from": source.get("row", f"build {source.get('teacher_precision')}"),
    }


# ---- Markdown


def _fmt_target(t: dict[str, Any]) -> str:
    def value(v):
        if t["unit"] == "s":
            return f"{v / 60:.0f} min"
        if not t["unit"]:
            return f"{v:.0%}"
        return f"{v:.1f} {t['unit']}"

    sign = "<=" if t["lower_is_better"] else ">="
    head = f"- **{t['what']}**: target {sign} {value(t['need'])}, measured {value(t['measured'])}: "
    if t["met"]:
        return head + f"met ({t['ratio']:.2f}x the target)."
    short = (
        f"{t['measured'] / t['need']:.1f}x the target time"
        if t["lower_is_better"]
        else f"{t['ratio']:.0%} of the target, {t['need'] / t['measured']:.1f}x short"
        if t["measured"]
        else "nothing measured"
    )
    return head + f"**missed** ({short}): {t['why']}."


def render_paper(res: dict[str, Any]) -> str:
    m, ref = res["machine"], res["reference"]
    t, s, peak = res["teacher"], res["student"], res["peak"]
    lines = [
        "# Training-step throughput with the paper-size teacher",
        "",
    ]
    if res.get("tiny"):
        lines += [
            "**Tiny smoke-test setting: a 16-channel teacher and a 1/8-width student; the numbers mean nothing.**",
            "",
        ]
    lines += [
        f"Machine: {m['platform']}, {m.get('cpu', 'CPU not recorded')}, {m['cpus']} CPUs, torch {m['torch']}, bf16 "
        f"hardware: {'yes' if m.get('bf16_native') else 'no (bf16 is emulated)'}, {res['threads']} thread(s). "
        f"Load before: `{res['uptime_before']}`; after: `{res['uptime_after']}`. The whole section took "
        f"{res['wall_s'] / 60:.1f} min.",
        "",
        f"Teacher: {t['config']} ({t['spec']}), {t['channels']} channels, {t['resolution']} px, "
        f"{t['params'] / 1e6:.1f} M parameters, {t['flops_per_image'] / 1e9:.2f} GFLOP per image (sampling forward). "
        f"Student: {s['arch']} {s['variant']} x{s['width']:g}, {s['in_channels']} channels, {s['resolution']} px: "
        f"{s['flops']['forward'] / 1e9:.2f} GFLOP forward, {s['flops']['train'] / 1e9:.2f} GFLOP forward + backward "
        f"per image pass. Method sns (half the batch teacher images, one pass each; half real images, two views). "
        f"Matmul peak ({peak['n']}^3, same run, same threads): fp32 {peak['fp32']} GFLOP/s, bf16 {peak['bf16']} "
        "GFLOP/s.",
        "",
        f"Median of {res['settings']['steps']} interleaved steps per row. Reference: {ref['what']}, "
        f"{ref['step_s']} s per step, {ref['images_per_s']} images/s at B = {ref['batch']}.",
        "",
        "| B | row | step (s) | images/s | vs reference | student passes/s | teacher images/s | teacher share | "
        "student fraction of FLOP bound |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        teacher = (
            f"{r['teacher_images_per_s']:.1f}"
            if r["mode"] == "live" and r["teacher_images_per_s"]
            else f"gather {1000 * r['teacher_s_median']:.1f} ms"
        )
        lines.append(
            f"| {r['batch']} | {r['what']} | {r['step_s_median']:.3f} | {r['images_per_s']:.1f} | "
            f"{r['vs_reference']:.2f}x | {r['student_passes_per_s']:.0f} | {teacher} | {r['teacher_share']:.0%} | "
            f"{r['student_fraction_of_flop_bound']:.0%} ({r['student_precision']}) |"
        )
    lines += [
        "",
        "One-time bank build (the teacher alone, `build_bank`, chunks of "
        f"{res['builds'][0]['chunk'] if res['builds'] else '-'} images, median over interleaved chunks after a "
        "warm-up chunk):",
        "",
        "| teacher | images timed | images/s | ms per image | 50k images | first chunk (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b in res["builds"]:
        lines.append(
            f"| {b['teacher_precision']}{' + teacher_compile' if b['teacher_compile'] else ''} | {b['images_timed']} | "
            f"{b['images_per_s']:.1f} | {1000 * b['s_per_image']:.1f} | {b['s_for_50k'] / 60:.0f} min | "
            f"{b['first_chunk_s']:.1f} |"
        )
    lines += ["", f"## Targets (issue 28: this kind of CPU at 2 threads; measured here at {res['threads']})", ""]
    batches = sorted({r["batch"] for r in res["rows"]})
    if ref["batch"] not in batches:
        lines += [f"B = {ref['batch']} (the reference's batch) was not measured: the targets use B = {batches[0]}.", ""]
    lines += [_fmt_target(x) for x in res["targets"]]
    lines += [
        "",
        "Columns: step = one sns training step (real batch + teacher images, the objective under autocast, backward, "
        "SGD); images/s = B / step; student passes/s = (teacher images + 2 x real images) / step; teacher images/s = "
        "teacher images per step / the teacher's time inside the step (a bank row gathers instead); student fraction "
        "= student passes per second of the step without the teacher's time, over the FLOP-bound limit (matmul peak "
        "in the student's precision / forward + backward FLOPs per pass). The first step of a teacher_compile row "
        "includes compiling the teacher (first_step_s in the JSON).",
    ]
    return "\n".join(lines) + "\n"
