"""Devices and precision: pick the run's device, tell native bf16 (and fp16) from emulated, decide precision=auto
(bf16 | fp16 | fp32), autocast."""

from __future__ import annotations

import inspect
import platform
from pathlib import Path

import torch

from ..errors import SnsError


def resolve_device(spec: str | None) -> torch.device:
    """'auto' -> cuda if available else cpu; an unavailable device is a clear error."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise SnsError(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SnsError(f"--device {spec} requested but no CUDA GPU is available; use --device cpu")
    return dev


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bf16_native(device: torch.device | str) -> bool:
    """Does ``device`` compute bfloat16 in hardware? CUDA: compute capability 8.0+ (Ampere); CPU: AVX-512 BF16 or AMX.

    Without them torch emulates bf16 on the CPU: on an AVX2-only AMD EPYC a training step of the fashion-cpu
    student ran 19-20x slower than in fp32 (bench/results/throughput-avx2.md), so bf16 only pays where this is True.
    On CUDA, torch 2.x's ``is_bf16_supported()`` also counts emulated bf16 (a V100 or T4) as supported: the
    emulation is left out here.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and _cuda_bf16_native(device)
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(probes):  # an older torch without these helpers: oneDNN's own bf16 check
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(bool(probe()) for probe in probes if probe is not None)


def _cuda_bf16_native(device: torch.device) -> bool:
    current = torch.cuda.current_device()
    index = device.index if device.index is not None else current
    if index == current and "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    # an older torch (or another GPU than the current one): bf16 units came with Ampere (ROCm GPUs all have them)
    return torch.version.hip is not None or torch.cuda.get_device_capability(index) >= (8, 0)


def fp16_native(device: torch.device | str) -> bool:
    """Does ``device`` compute float16 in hardware? Every CUDA GPU torch runs on; a CPU only with AVX-512 FP16 or
    AMX-FP16 (elsewhere a fp16 step of a small ResNet-18 measured ~15x slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type != "cpu":
        return False
    amx = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    return bool(amx is not None and amx()) or "avx512_fp16" in _cpu_flags()


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# what `precision` may be set to; a run resolves 'auto' when it starts and records one of the other three
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# what `teacher_precision` may be set to (the frozen teacher's forward; no fp16: nothing there needs a scaler)
TEACHER_PRECISIONS = ("auto", "bf16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

_warned_emulated: set[str] = set()


def _warn_emulated(key: str, message: str, log) -> None:
    """One warning per process and kind of device for a precision the hardware emulates."""
    if key not in _warned_emulated:
        _warned_emulated.add(key)
        log(f"warning: {message}")


def _bf16_emulated_note(device: torch.device) -> str:
    if device.type == "cuda":
        return "this GPU has no bf16 units (compute capability below 8.0): torch emulates bf16, slower than fp16"
    return (
        f"this {device.type} has no bf16 hardware (no AVX-512 BF16 / AMX): torch emulates it, "
        "19-20x slower than fp32 per step (bench/results/throughput-avx2.md)"
    )


def resolve_bf16(value: bool | str, device: torch.device | str, log=print) -> bool:
    """The ``bf16`` setting of `sns eval` and FD-ref made concrete for ``device``: 'auto' -> bf16 where the
    hardware has it.

    An explicit ``true`` is kept even where bf16 is emulated (results then match a bf16 machine's), with a
    one-time warning that it is slow there.
    """
    if isinstance(value, str) and value.lower() == "auto":
        return bf16_native(device)
    if not isinstance(value, bool):
        raise SnsError(f"bf16={value!r}: expected true, false or auto")
    device = torch.device(device)
    if value and not bf16_native(device):
        _warn_emulated(
            device.type, f"bf16=true but {_bf16_emulated_note(device)}; set bf16=auto (or false) for fp32", log
        )
    return value


def resolve_precision(value: str, device: torch.device | str, log=print) -> str:
    """The ``precision`` setting made concrete for ``device``: bf16, fp16 or fp32.

    'auto' picks bf16 where the hardware computes it (a CPU with AVX-512 BF16 or AMX, a GPU of compute capability
    8.0+), fp16 with a gradient scaler on any other CUDA GPU (a V100 or T4, where bf16 is emulated), fp32
    elsewhere. An explicit bf16 or fp16 is kept even where the hardware emulates it (results then match a machine
    that has it), with a one-time warning that it is slow there.
    """
    if value not in PRECISIONS:
        raise SnsError(f"precision={value!r}: expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if value == "auto":
        if bf16_native(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if value == "bf16" and not bf16_native(device):
        hint = "set precision=auto (fp16 with a gradient scaler)" if device.type == "cuda" else "set precision=auto"
        _warn_emulated(f"{device.type}:bf16", f"precision=bf16 but {_bf16_emulated_note(device)}; {hint}", log)
    if value == "fp16" and not fp16_native(device):
        _warn_emulated(
            f"{device.type}:fp16",
            f"precision=fp16 but this {device.type} has no fp16 hardware (no AVX-512 FP16 / AMX-FP16): torch "
            "emulates it, ~15x slower than fp32 per step; fp16 is meant for CUDA GPUs without bf16, set "
            "precision=auto",
            log,
        )
    return value


def resolve_teacher_precision(value: str, device: torch.device | str, log=print) -> str:
    """The ``teacher_precision`` setting made concrete for ``device``: 'auto' -> bf16 where the hardware computes
    it, else fp32; an explicit bf16 is kept where emulated, with a one-time warning."""
    if value not in TEACHER_PRECISIONS:
        raise SnsError(f"teacher_precision={value!r}: expected one of {', '.join(TEACHER_PRECISIONS)}")
    device = torch.device(device)
    if value == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    if value == "bf16" and not bf16_native(device):
        _warn_emulated(
            f"{device.type}:teacher-bf16",
            f"teacher_precision=bf16 but {_bf16_emulated_note(device)}; set teacher_precision=auto",
            log,
        )
    return value


def decide_precision(cfg: dict, world, log=print) -> dict:
    """``cfg`` with ``precision`` (and ``teacher_precision``, when the config has one) decided once for the whole
    run: rank 0 resolves them for its own device (auto -> bf16, fp16 or fp32, see ``resolve_precision``) and every
    rank of ``world`` takes rank 0's config, so on mixed hardware all ranks still train in the one precision that
    config.yaml records."""
    cfg = dict(cfg, precision=resolve_precision(cfg["precision"], world.device, log))
    if "teacher_precision" in cfg:
        cfg["teacher_precision"] = resolve_teacher_precision(cfg["teacher_precision"], world.device, log)
    return world.broadcast(cfg)


def autocast(device: torch.device, precision: str | bool):
    """Autocast on the run's device in ``precision`` ("bf16", "fp16"; "fp32" is a no-op), or, given a bool, in
    bf16 or not (the ``bf16`` flag of feature extraction). bf16 on a CPU with AVX-512 BF16 trains ~2.6x faster."""
    if isinstance(precision, bool):
        precision = "bf16" if precision else "fp32"
    dtype = _DTYPES.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a run: active in fp16 (whose small range would flush small gradients to zero), a
    pass-through otherwise (``scale`` returns the loss as it is, ``step`` is the optimizer's step)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
