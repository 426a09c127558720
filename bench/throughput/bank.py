"""Feature bank (teacher_bank=N) against the live teacher: sns and squeeze steps both ways, for the Fashion-MNIST
teacher and a paper-size 512-channel StyleGAN2 (random weights: speed only), the one-time cost of sampling the
bank, and what storing bank images as uint8 does to one step's loss and gradient."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from squeezespan.engine import autocast
from squeezespan.engine.bank import build_bank, quantize
from squeezespan.teachers import Discriminator, Generator
from squeezespan.teachers.directory import save_teacher_dir

from .steps import Case, matmul_peak, step_inputs, student_flops

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
    run = case.run
    inputs = step_inputs(
        case.cfg, 10_000, case.stream, run.teacher, case.n_syn, torch.device("cpu"), run.augment, case.encode
    )
    x_float = inputs.syn
    x_uint8 = quantize(x_float).float().div_(255)
    params = [p for g in run.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def loss_grad(x, aug_seed, bf16):
        torch.manual_seed(aug_seed)
        inputs.syn = x
        with autocast(torch.device("cpu"), bf16):
            loss, _ = run.objective(inputs)
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
                bank = build_bank(live.run.teacher, n, seed=0)
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
