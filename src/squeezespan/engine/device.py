"""Devices and precision: pick the run's device, tell native bf16 from emulated, decide bf16=auto, autocast."""

from __future__ import annotations

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
    """Does ``device`` compute bfloat16 in hardware? CUDA: torch's check; CPU: AVX-512 BF16 or AMX.

    Without them torch emulates bf16 on the CPU: on an AVX2-only AMD EPYC a training step of the fashion-cpu
    student ran 19-20x slower than in fp32 (bench/results/throughput-avx2.md), so bf16 only pays where this is True.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(probes):  # an older torch without these helpers: oneDNN's own bf16 check
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(bool(probe()) for probe in probes if probe is not None)


_warned_emulated: set[str] = set()


def resolve_bf16(value: bool | str, device: torch.device | str, log=print) -> bool:
    """The ``bf16`` setting made concrete for ``device``: 'auto' -> bf16 where the hardware has it.

    An explicit ``true`` is kept even where bf16 is emulated (results then match a bf16 machine's), with a
    one-time warning that it is slow there.
    """
    if isinstance(value, str) and value.lower() == "auto":
        return bf16_native(device)
    if not isinstance(value, bool):
        raise SnsError(f"bf16={value!r}: expected true, false or auto")
    kind = torch.device(device).type
    if value and not bf16_native(device) and kind not in _warned_emulated:
        _warned_emulated.add(kind)
        log(
            f"warning: bf16=true but this {kind} has no bf16 hardware (no AVX-512 BF16 / AMX): torch emulates it, "
            "19-20x slower than fp32 per step (bench/results/throughput-avx2.md); set bf16=auto (or false) for fp32"
        )
    return value


def decide_bf16(cfg: dict, world, log=print) -> dict:
    """``cfg`` with bf16 decided once for the whole run: rank 0 resolves it for its own device (auto -> bf16 where
    native) and every rank of ``world`` takes rank 0's config, so on mixed hardware all ranks still train in the
    one precision that config.yaml records."""
    return world.broadcast(dict(cfg, bf16=resolve_bf16(cfg["bf16"], world.device, log)))


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on the run's device (CPU with AVX-512 BF16 trains ~2.6x faster), or a no-op."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(bf16))
