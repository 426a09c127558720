"""The teacher feature bank (teacher_bank=N): N teacher images and pooled taps, sampled once, drawn each step."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..errors import SnsError
from ..files import atomic_write_bytes, safetensors_bytes
from ..models.heads import pool_tap

BANK_FILE = "bank.safetensors"
FORMAT = "squeezespan-bank/1"
# Latents are drawn chunk by chunk from one generator; the chunk size is part of what the bank is (it orders
# the z / c draws of a conditional teacher), so it is recorded in the metadata. 64: a 512-channel 32 px
# StyleGAN2 holds 64 x 512 x 32 x 32 floats (128 MB) per activation; at 256 its CPU forward pass was
# measured 1.6x slower per image than at the live step's 64.
CHUNK = 64
# The bank's latents come from their own stream: the live path seeds step s with seed * 1_000_003 + s.
_LATENT_OFFSET = 2**61
_ORDER_OFFSET = 2**40


def latent_generator(seed: int) -> torch.Generator:
    """The RNG the bank's latents are drawn from, a pure function of the run's seed."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + _LATENT_OFFSET) % (2**63))


def teacher_checksum(teacher) -> str:
    """sha256 over the generator's state_dict (names, dtypes, shapes, bytes): which weights made the bank."""
    h = hashlib.sha256()
    for name, t in sorted(teacher.generator.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def bank_spec(cfg: dict[str, Any], teacher) -> dict[str, str]:
    """Everything the bank's contents depend on; a saved bank is reused only when all of it matches (the teacher's
    precision only when not fp32, so banks saved before teacher_precision existed are still reused)."""
    sampling = {
        "psi": teacher.truncation_psi,
        "cutoff": teacher.truncation_cutoff,
        "noise_mode": teacher.noise_mode,
        "range": list(teacher.output_range),
    }
    if getattr(teacher, "precision", "fp32") != "fp32":
        sampling["precision"] = teacher.precision
    return {
        "format": FORMAT,
        "n": str(int(cfg["teacher_bank"])),
        "seed": str(int(cfg["seed"])),
        "chunk": str(CHUNK),
        "images": "uint8",
        "teacher": str(cfg["teacher"]),
        "teacher_sha256": teacher_checksum(teacher),
        "taps": json.dumps(teacher.feature_names),
        "sampling": json.dumps(sampling),
    }


def check_bank_size(bank: int, n_syn: int) -> None:
    """A bank must hold at least one step's synthetic images (else an epoch of it has no step)."""
    if bank < n_syn:
        raise SnsError(
            f"teacher_bank={bank} holds fewer images than the {n_syn} synthetic images of one step; "
            f"set teacher_bank >= {n_syn}"
        )


class TeacherBank:
    """uint8 images (N, C, H, W) and float32 pooled taps [(N, C_i)] on the CPU; each step gathers its share.

    Why uint8: the student sees real images at 8 bits (datasets keep uint8) and the live teacher's floats
    differ from their 8-bit rounding by at most 1/510, far below what the colour jitter of the augmentation
    moves; it keeps a 50k-image CIFAR-size bank at 150 MB instead of 600 MB (float32). The target side is
    exact: the taps are pooled from the un-quantised forward pass, as the live squeeze module pools them.
    Measured (bench/results/throughput.md, one fp32 sns step): gradient cosine 0.997 between uint8 and float
    images, against 0.06 between two augmentation draws of the same float images.
    """

    def __init__(self, images: torch.Tensor, taps: list[torch.Tensor], seed: int, spec: dict[str, str] | None = None):
        self.images, self.taps, self.seed, self.spec = images, taps, int(seed), spec or {}
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.images.shape[0]

    def indices(self, step: int, n: int) -> torch.Tensor:
        """The ``n`` bank indices of ``step``, a pure function of (seed, step): an epoch of the bank is one
        seeded permutation, so every image is used once before any is used twice (and resume is exact); the
        N mod n images left over at an epoch's end wait for the next permutation, like drop_last."""
        N = len(self)
        check_bank_size(N, n)
        epoch, i = divmod(step, N // n)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed((self.seed * 100003 + epoch + _ORDER_OFFSET) % (2**63))
            self._perm, self._perm_epoch = torch.randperm(N, generator=g), epoch
        return self._perm[i * n : (i + 1) * n]

    def batch(self, step: int, n: int, device, part: slice = slice(None)) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Images in [0, 1] and pooled taps of ``step`` on ``device``; ``part`` is this rank's contiguous shard."""
        idx = self.indices(step, n)[part]
        images = self.images[idx].to(device, non_blocking=True).float().div_(255)
        return images, [t[idx].to(device, non_blocking=True) for t in self.taps]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"images": self.images.contiguous()}
        out.update({f"tap{i}": t.contiguous() for i, t in enumerate(self.taps)})
        return out


def quantize(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded to the nearest level (what an 8-bit image file of them would hold)."""
    return images01.mul(255).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def build_bank(teacher, n: int, seed: int, spec: dict[str, str] | None = None) -> TeacherBank:
    """Sample ``n`` teacher images with their pooled taps, CHUNK at a time on the teacher's device.

    Same handling as the live path: the forward pass in the teacher's precision (fp32 unless teacher_precision).
    Global RNGs are left untouched, so a run that builds its bank draws exactly what a run that loads it draws.
    """
    g = latent_generator(seed)
    images, taps = [], None
    with torch.random.fork_rng(devices=[]):
        for start in range(0, n, CHUNK):
            k = min(CHUNK, n - start)
            z, c = teacher.draw_z(k, generator=g), teacher.draw_c(k, g)
            x, feats = teacher.run(z, c)
            images.append(quantize(x).cpu())
            pooled = [pool_tap(f.float()).cpu() for f in feats]
            taps = [[p] for p in pooled] if taps is None else [t + [p] for t, p in zip(taps, pooled)]
    return TeacherBank(torch.cat(images), [torch.cat(t) for t in taps or []], seed, spec)


def save_bank(path: Path, bank: TeacherBank) -> None:
    atomic_write_bytes(path, safetensors_bytes(bank.tensors(), metadata=bank.spec))


def load_bank(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """Tensors and metadata of a saved bank; None if the file is missing or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # noqa: BLE001 - a torn or foreign file: regenerate instead of failing the run
        return None
    return tensors, meta


def prepare_bank(cfg: dict[str, Any], teacher, run_dir: Path, world, log=print) -> TeacherBank:
    """Rank 0 reuses ``run_dir/bank.safetensors`` when its metadata matches this run, else builds and saves
    one (saying why); the bank then goes to every rank, so no shared disk is needed."""
    box = None
    if world.is_main:
        spec = bank_spec(cfg, teacher)
        path = run_dir / BANK_FILE
        found = load_bank(path)
        bank = None
        if found is not None:
            tensors, meta = found
            diff = sorted(k for k in set(spec) | set(meta) if spec.get(k) != meta.get(k))
            n_taps = len(json.loads(spec["taps"]))
            if not diff and set(tensors) == {"images", *(f"tap{i}" for i in range(n_taps))}:
                bank = TeacherBank(tensors["images"], [tensors[f"tap{i}"] for i in range(n_taps)], cfg["seed"], spec)
                log(f"teacher bank: reusing {path} ({len(bank)} images)")
            else:
                why = (
                    ", ".join(
                        f"{k} {meta.get(k)!r} != {spec.get(k)!r}" if k != "teacher_sha256" else "teacher weights differ"
                        for k in diff
                    )
                    or "its tensors do not match the taps"
                )
                log(f"teacher bank: {path} was made for another run ({why}); regenerating it")
        elif path.exists():
            log(f"teacher bank: {path} is unreadable; regenerating it")
        if bank is None:
            t0 = time.time()
            bank = build_bank(teacher, int(cfg["teacher_bank"]), cfg["seed"], spec)
            save_bank(path, bank)
            log(f"teacher bank: sampled {len(bank)} images + pooled taps in {time.time() - t0:.1f} s -> {path}")
        box = {"tensors": bank.tensors(), "spec": spec} if world.size > 1 else bank
    if world.size == 1:
        return box
    box = world.broadcast(box)
    t, n_taps = box["tensors"], len(box["tensors"]) - 1
    return TeacherBank(t["images"], [t[f"tap{i}"] for i in range(n_taps)], cfg["seed"], box["spec"])
