"""One throughput case: a method x variant (precision, memory format, compile) with its own student, objective and
optimizer, stepped exactly like the engine steps; plus the machine's matmul peak and the student's FLOPs."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from squeezespan import PRETRAIN_DEFAULTS, RealStream, build_run, build_student, resolve_config
from squeezespan.engine import autocast, step_inputs

# (label, bf16, channels_last, compile)
VARIANTS = (
    ("fp32", False, False, False),
    ("bf16", True, False, False),
    ("bf16+channels_last", True, True, False),
    ("bf16+compile", True, False, True),
)


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
        best = min(seconds(lambda: torch.mm(a, b)) for _ in range(reps))
        out[name] = round(2 * n**3 / best / 1e9, 1)
    return out


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def student_flops(cfg: dict[str, Any], in_channels: int = 1) -> dict[str, float]:
    """FLOPs of one image through the student: forward, and forward + backward (what a training pass costs)."""
    m = build_student(cfg["arch"], cfg["variant"], cfg["width"], in_channels=in_channels)
    x = torch.randn(8, in_channels, cfg["resolution"], cfg["resolution"])
    with FlopCounterMode(display=False) as fc:
        m(x)
    fwd = fc.get_total_flops() / 8
    with FlopCounterMode(display=False) as fc:
        m(x).sum().backward()
    return {"forward": fwd, "train": fc.get_total_flops() / 8, "params": sum(p.numel() for p in m.parameters())}


class Case:
    """One method x variant: its own student, objective and optimizer, stepped exactly like the engine does.

    ``preset`` and ``overrides`` (key=value, after the variant's) make the config; ``dataset`` replaces the preset's
    data (``build_run(dataset=)``)."""

    def __init__(
        self,
        method: str,
        variant: tuple,
        batch: int,
        teacher: str | None,
        bank=None,
        name: str = "",
        preset: str | None = "fashion-cpu",
        overrides: tuple[str, ...] = (),
        dataset=None,
    ):
        self.method, (self.label, bf16, cl, comp) = method, variant
        self.bank, self.name = bank, name  # a TeacherBank replaces the live teacher (teacher_bank=N)
        keys = [
            f"method={method}",
            f"batch_size={batch}",
            f"bf16={str(bf16).lower()}",
            f"channels_last={str(cl).lower()}",
            "knn_every=0",
            "device=cpu",
            *overrides,
        ]
        cfg = resolve_config(PRETRAIN_DEFAULTS, "pretrain", preset, None, keys, None)
        cfg["teacher"] = teacher
        self.cfg = cfg
        run = build_run(cfg, torch.device("cpu"), dataset=dataset)
        self.run = run
        self.n_syn = int(round(run.settings["syn_ratio"] * batch))
        n_real = batch - self.n_syn
        self.stream = RealStream(run.train, n_real, 0) if n_real else None
        student = run.student
        self.forward_student = torch.compile(student) if comp else student
        self.compiled = comp
        mean, std, _res = run.mean, run.std, cfg["resolution"]

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
        run.student.train()
        run.objective.train()

    def one_step(self, record: bool) -> None:
        run, cfg = self.run, self.cfg
        teacher = run.teacher
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
            inputs = step_inputs(
                cfg,
                self.step,
                self.stream,
                teacher,
                self.n_syn,
                torch.device("cpu"),
                run.augment,
                self.encode,
                bank=self.bank,
            )
        finally:
            if source is not None:
                delattr(source, attr)  # the instance attribute hid the method: removing it restores it
        with autocast(torch.device("cpu"), cfg["precision"]):
            loss, _ = run.objective(inputs)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        dt = time.perf_counter() - t0
        self.step += 1
        if record:
            self.times.append(dt)
            self.teacher_times.append(t_teacher)

    def result(self, flops: dict, peak: dict) -> dict[str, Any]:
        med = statistics.median(self.times)
        teach = statistics.median(self.teacher_times)
        passes_per_s = self.passes / med
        prec = self.cfg["precision"]
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
