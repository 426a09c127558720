"""The teachers of the teacher-quality bench: snapshots of one GAN training (committed teacher directories) and
kimg 0, an untrained generator of the same architecture and seed, with its FD-ref measured as train-gan did."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import RESULTS
from bench.fashion.cells import teacher_identity
from squeezespan import SnsError, load_dataset
from squeezespan.eval.fdref import frechet_distance, generator_stats, real_stats_cached, train_reference_net
from squeezespan.teachers.directory import build_networks, save_teacher_dir

TEACHER_DIR = RESULTS / "teachers"
RANDOM = "random"
# kimg 0 (untrained, same architecture and seed as the run) and the run's snapshots in training order
DEFAULT_TEACHERS = (RANDOM, "fashion-full-kimg20", "fashion-full-kimg40", "fashion-full", "fashion-full-kimg80")


@dataclass
class TeacherEntry:
    spec: str  # teacher directory given to the engine
    label: str  # "kimg 20"
    kimg: float
    fd_ref: float | None
    sha: str  # G_ema sha256 (16 hex digits, as the fashion bench records it)
    identity: dict[str, Any]


def resolve_teacher_dir(entry: str) -> Path:
    """A --teachers entry as a teacher directory: a path, or a folder name under bench/results/teachers/."""
    for cand in (Path(entry), TEACHER_DIR / entry):
        if (cand / "teacher.json").is_file():
            return cand
        if (cand / "teacher" / "teacher.json").is_file():
            return cand / "teacher"
    raise SnsError(
        f"--teachers {entry}: no teacher.json in {entry} nor in {TEACHER_DIR / entry}; expected a "
        f"teacher directory (teacher.json + G_ema.safetensors + D.safetensors) or '{RANDOM}'"
    )


def entry_from_dir(path: Path) -> TeacherEntry:
    ident = teacher_identity(str(path))
    if "G_ema_sha256" not in ident:
        raise SnsError(f"--teachers {path}: teacher.json found but no G_ema.safetensors next to it")
    kimg = float(ident.get("kimg", float("nan")))
    fd = ident.get("fd_ref")
    return TeacherEntry(
        str(path), f"kimg {kimg:g}", kimg, None if fd is None else float(fd), ident["G_ema_sha256"], ident
    )


def measure_fd_ref(G: torch.nn.Module, base: dict[str, Any], log: Callable = print) -> tuple[float, dict | None]:
    """FD-ref of ``G`` exactly as `sns train-gan` measured the snapshots of ``base`` (its teacher.json): the same
    cached reference net, real subset, number of generated images and sample seed."""
    cfg = base["config"]
    kw = {"channels": int(cfg["channels"])} if cfg.get("channels") else {}
    ds = load_dataset(
        cfg["data"],
        root=cfg.get("data_root"),
        split=cfg.get("train_split", cfg.get("split", "train")),
        resolution=int(cfg["resolution"]),
        **kw,
    )
    with torch.random.fork_rng(devices=[]):
        ref_net = train_reference_net(ds, cache_dir=cfg.get("fd_ref_cache"), log=log)
    real = real_stats_cached(ds, ref_net, int(cfg["fd_ref_real"]))
    num = int(base.get("fd_ref_num") or cfg["fd_ref_num"])
    mu, sigma = generator_stats(G, ref_net, num, seed=int(cfg["seed"]) + 1)
    return frechet_distance(real[0], real[1], mu, sigma), getattr(ref_net, "meta", None)


def random_teacher(base_dir: Path, out: Path, log: Callable = print) -> Path:
    """kimg 0: a generator with the G_kwargs and seed of ``base_dir``'s run, built as `sns train-gan` builds it
    before its first step (never trained), saved as a teacher directory with its measured FD-ref; reused if
    already there for the same base."""
    base = json.loads((base_dir / "teacher.json").read_text())
    base_sha = teacher_identity(str(base_dir)).get("G_ema_sha256")
    if (out / "teacher.json").is_file():
        have = json.loads((out / "teacher.json").read_text())
        if (
            have.get("G_kwargs") == base["G_kwargs"]
            and have.get("fd_ref") is not None
            and have.get("random_init_of") == base_sha
        ):
            return out
    seed = int(base["config"]["seed"])
    torch.manual_seed(seed)
    G, D = build_networks(base["G_kwargs"], base["D_kwargs"])
    G.eval().requires_grad_(False)
    log(f"measuring the FD-ref of an untrained generator (seed {seed}, G_kwargs of {base_dir})")
    fd, ref_meta = measure_fd_ref(G, base, log)
    if (
        base.get("fd_ref_net")
        and ref_meta
        and any(ref_meta.get(k) != base["fd_ref_net"].get(k) for k in ("val_accuracy", "steps", "init_kwargs"))
    ):
        log(
            f"warning: the FD-ref reference net differs from the one that measured {base_dir}; "
            "kimg 0's FD-ref is not comparable to the snapshots'"
        )
    meta = {
        k: base[k] for k in ("dataset", "split", "resolution", "img_channels", "mean", "std", "config") if k in base
    }
    meta.update(
        kimg=0.0,
        step=0,
        fd_ref=fd,
        fd_ref_num=base.get("fd_ref_num"),
        fd_ref_net=ref_meta,
        random_init_of=base_sha,
        note="untrained generator: torch.manual_seed(config.seed) then build_networks, as train-gan starts",
    )
    save_teacher_dir(out, G, G, D, base["G_kwargs"], base["D_kwargs"], meta)
    return out


def resolve_teachers(entries: list[str], work: Path, log: Callable = print) -> list[TeacherEntry]:
    """The --teachers list in its given order; 'random' takes its architecture from the first trained teacher."""
    dirs = {e: resolve_teacher_dir(e) for e in entries if e != RANDOM}  # every bad path fails before any work
    out = []
    for e in entries:
        if e == RANDOM:
            if not dirs:
                raise SnsError(f"--teachers {RANDOM} needs a trained teacher in the list to copy its architecture from")
            base = next(iter(dirs.values()))
            out.append(entry_from_dir(random_teacher(base, work / "teachers" / "random-init", log)))
        else:
            out.append(entry_from_dir(dirs[e]))
    return out
