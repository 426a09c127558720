"""Train our own StyleGAN2 teacher: the training loop of `sns train-gan`.

One training iteration, as in StyleGAN2-ADA's loop for an unconditional G without path-length regularisation:
  Gmain  non-saturating logistic loss through D(A(G(z)))                                     g_step
  Dmain  logistic loss on D(A(real)) and D(A(G(z)))                                          d_step
  Dreg   every ``r1_interval`` iterations: lazy R1 = gamma/2 * ||grad_x D(A(x))||^2 * interval,
         its own Adam step                                                                   r1_step
  G_ema  exponential moving average of G (half-life ``ema_kimg``, with rampup)               train_iteration
  ADA    every ``ada_interval`` iterations: p moves so that E[sign(D(A(real)))] nears
         ``ada_target``                                                                      ada_update
A is the differentiable augmentation (data.diffaug: DiffAugment ops, per-sample probability p).
Between iterations (train_loop): a metrics line every ``log_every`` iterations (log_metrics), a fixed-z sample
grid of G_ema every ``sample_kimg`` (maybe_sample), FD-ref every ``fd_ref_kimg`` with the best G_ema exported as
the teacher (maybe_fd), a checkpoint every ``ckpt_every`` iterations (maybe_checkpoint); at the end the teacher
(finish).

The run directory is the shared run object's (engine.run.RunDir): config.yaml (what ran, with channels, device
and bf16 decided), metrics.jsonl, tb/, checkpoints/ckpt-<step>.pt (exact resume), samples/*.png, teacher/ (a
teacher directory, teachers.directory) and, with ``export_snapshots``, a teacher at every checkpoint in
snapshots/kimg-XXXXXX/. SIGINT/SIGTERM checkpoint the current iteration and return; ``resume`` continues the run
bit-identically (on CPU) from its newest good checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import check_renamed
from ..data import batches, load_dataset
from ..data.diffaug import DiffAugment, parse_policy
from ..engine.device import autocast, decide_bf16
from ..engine.distributed import World, average_gradients, setup
from ..engine.logging import MetricsLogger
from ..engine.run import RunDir, StopSignal
from ..errors import SnsError
from ..eval.fdref import frechet_distance, generator_stats, real_stats_cached, train_reference_net
from ..files import write_json
from ..report.grid import save_image_grid
from ..teachers.directory import build_networks, network_kwargs, save_teacher_dir
from .loss import d_loss_logistic, ema_beta, ema_update, g_loss_nonsaturating, lazy_adam, r1_penalty

__all__ = ["ARCH_KEYS", "GAN_DEFAULTS", "DataOrder", "GanRun", "build_gan", "check_config", "train_gan"]

# Every knob of `sns train-gan`, with its default; presets (configs/gan-*.yaml) and key=value override these.
# Knobs it shares with pretrain have pretrain's names and units (batch_size, log_every, ckpt_every in steps,
# keep_ckpts, bf16, seed, device); config.RENAMED_KEYS turns the old names into one-line errors.
GAN_DEFAULTS: dict[str, Any] = {
    # data
    "data": "digits",  # dataset name for squeezespan.data.load_dataset
    "data_root": None,  # folder holding the files (None: the data package's default search)
    "split": "train",
    "resolution": 32,  # square image size (power of two)
    "channels": None,  # 1 or 3; None keeps the dataset's own (config.yaml records the one that ran)
    "mirror": False,  # random x-flips of real images (dataset augmentation; not for digits)
    # networks (StyleGAN2; channels per resolution = min(channel_base // res, channel_max))
    "z_dim": 128,
    "w_dim": 128,
    "mapping_layers": 2,
    "mapping_lr_mult": 0.01,  # learning-rate multiplier of the mapping network (StyleGAN2: 0.01)
    "channel_base": 2048,
    "channel_max": 128,
    "g_architecture": "skip",
    "d_architecture": "resnet",
    "mbstd_group_size": 4,
    "conv_clamp": None,
    # optimisation (StyleGAN2-ADA)
    "batch_size": 32,  # global batch: real (and fake) images per iteration over all processes
    "kimg": 100.0,  # total length: thousands of real images shown to D
    "lr": 0.0025,  # both G and D
    "betas": [0.0, 0.99],
    "eps": 1e-8,
    "r1_gamma": 0.01,
    "r1_interval": 16,  # lazy R1 every N D steps (0 or None: no R1)
    "ema_kimg": 10.0,  # G_ema half-life in kimg
    "ema_rampup": 0.05,  # cap the half-life at ema_rampup * kimg so far (None: no rampup)
    # differentiable augmentation, applied to real and fake images before D
    "diffaug": "color,translation,cutout",  # comma list of color, translation, cutout; "none" disables
    "augment_p": 1.0,  # per-sample probability of each op (initial value when ADA adapts it)
    "ada_target": None,  # e.g. 0.6: adapt p so that E[sign(D(real))] stays at this target (ADA)
    "ada_interval": 4,  # iterations between p updates
    "ada_kimg": 100.0,  # kimg for p to move by 1
    "bf16": False,  # bf16 autocast for G/D forward passes (R1 stays fp32); auto: where native
    "seed": 0,
    "device": "auto",  # cpu, cuda, cuda:N or auto (config.yaml records the device that ran)
    "threads": None,  # CPU threads for this run (None: torch's setting); 1 is fastest on a busy CPU
    "max_minutes": None,  # stop cleanly (final samples, FD-ref, checkpoint, teacher) after this wall time
    # bookkeeping
    "log_every": 20,  # metrics line every N iterations
    "ckpt_every": 313,  # iterations between checkpoints (~10 kimg at batch_size 32); 0: only at the end
    "keep_ckpts": 2,
    "export_snapshots": False,  # also export a teacher at every checkpoint, into snapshots/kimg-XXXXXX/
    "sample_kimg": 5.0,  # fixed-z sample grid of G_ema every N kimg into samples/
    "grid_size": 64,  # images in the sample grid
    "fd_ref_kimg": 10.0,  # FD-ref of G_ema every N kimg (0: only at the end; None: never)
    "fd_ref_num": 2000,  # generated images per FD-ref evaluation
    "fd_ref_real": 10000,  # real images (fixed subset) for the reference statistics
    "fd_ref_cache": None,  # folder for the cached reference net (None: ~/.cache/squeezespan/fdref)
    "teacher_pick": "best_fd",  # teacher/ holds the snapshot with the best FD-ref ("best_fd") or the last one ("last")
}

# Keys that fix the networks' shapes: a resumed run must agree with its checkpoint on these.
ARCH_KEYS = (
    "resolution",
    "channels",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "mapping_lr_mult",
    "channel_base",
    "channel_max",
    "g_architecture",
    "d_architecture",
    "mbstd_group_size",
    "conv_clamp",
)

# The run's counters, saved as the checkpoint's "state".
COUNTERS = ("cur_nimg", "step", "ada_sum", "ada_count", "best_fd", "best_kimg", "last_fd")


# --------------------------------------------------------------------------------------------------- config


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over GAN_DEFAULTS, checked: renamed, unknown and out-of-range keys are one-line SnsErrors."""
    check_renamed("gan", cfg, "train-gan config")
    unknown = sorted(set(cfg) - set(GAN_DEFAULTS))
    if unknown:
        raise SnsError(f"train-gan config: unknown key(s) {unknown}; valid keys: {', '.join(GAN_DEFAULTS)}")
    cfg = {**copy.deepcopy(GAN_DEFAULTS), **cfg}
    if isinstance(cfg["device"], torch.device):
        cfg["device"] = str(cfg["device"])
    res = cfg["resolution"]
    if not isinstance(res, int) or res < 8 or res & (res - 1):
        raise SnsError(f"train-gan resolution={res!r}: expected a power of two >= 8 (e.g. 32)")
    B, group = int(cfg["batch_size"]), int(cfg["mbstd_group_size"])
    if B < 1 or B % min(group, B):
        raise SnsError(f"train-gan batch_size={B}: must be >= 1 and a multiple of mbstd_group_size={group}")
    if float(cfg["kimg"]) <= 0:
        raise SnsError(f"train-gan kimg={cfg['kimg']}: expected a positive number of thousands of images")
    if cfg["teacher_pick"] not in ("best_fd", "last"):
        raise SnsError(f"train-gan teacher_pick={cfg['teacher_pick']!r}: expected 'best_fd' or 'last'")
    if not (
        isinstance(cfg["betas"], (list, tuple))
        and len(cfg["betas"]) == 2
        and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in cfg["betas"])
    ):
        raise SnsError(f"train-gan betas={cfg['betas']!r}: expected two numbers in [0, 1), e.g. [0.0, 0.99]")
    for key in ("lr", "eps"):
        if not float(cfg[key]) > 0:
            raise SnsError(f"train-gan {key}={cfg[key]}: expected a positive number")
    for key in ("ema_kimg", "r1_gamma", "ema_rampup"):
        if cfg[key] is not None and float(cfg[key]) < 0:
            raise SnsError(f"train-gan {key}={cfg[key]}: expected a number >= 0")
    for key, low in (("log_every", 1), ("ckpt_every", 0), ("keep_ckpts", 1)):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < low:
            raise SnsError(f"train-gan {key}={cfg[key]!r}: expected a whole number >= {low}")
    parse_policy(cfg["diffaug"])
    return cfg


# ----------------------------------------------------------------------------------------------------- data


class DataOrder:
    """Shuffled epochs over N indices from its own torch.Generator; its state makes resume exact."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"], int(state["pos"])


def load_images(cfg: dict[str, Any], dataset=None) -> tuple[Any, torch.Tensor]:
    """The training set and all its images as one uint8 (N, C, H, W) tensor, checked against ``cfg``.

    GAN training at 32-64 px keeps the images in memory; a streamed (folder) dataset is read once.
    """
    if dataset is None:
        kw = {"channels": int(cfg["channels"])} if cfg["channels"] else {}
        res = int(cfg["resolution"])
        dataset = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["split"], resolution=res, **kw)
    name = getattr(dataset, "name", "?")
    images = getattr(dataset, "images", None)
    if images is None:
        images = torch.cat([x for x, _ in batches(dataset, 1024, shuffle=False, drop_last=False)])
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise SnsError(f"dataset {name}: expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    n, _, h, w = images.shape
    if h != cfg["resolution"] or w != cfg["resolution"]:
        raise SnsError(f"train-gan: dataset images are {h}x{w} but resolution={cfg['resolution']}")
    if n < int(cfg["batch_size"]):
        raise SnsError(
            f"train-gan: dataset {name} has {n} images, fewer than batch_size={cfg['batch_size']}; lower batch_size"
        )
    return dataset, images


def check_world_split(cfg: dict[str, Any], world: World) -> None:
    """batch_size is the global batch: each process trains on 1/N of it, in whole minibatch-std groups."""
    B, group = int(cfg["batch_size"]), int(cfg["mbstd_group_size"])
    local = B // world.size
    if B % world.size or local % min(group, local):
        raise SnsError(
            f"train-gan batch_size={B} does not split over WORLD_SIZE={world.size} processes into "
            f"per-process batches that are multiples of mbstd_group_size={group}"
        )


class _Images:
    """A view with the attributes FD-ref needs when the dataset itself streams (folder) or lives on a device."""

    def __init__(self, ds, images: torch.Tensor):
        self.name = getattr(ds, "name", "data")
        self.images = images
        self.labels = getattr(ds, "labels", None)
        if self.labels is None or self.labels.shape[0] != images.shape[0]:
            self.labels = torch.full((images.shape[0],), -1, dtype=torch.int64)


# -------------------------------------------------------------------------------------------- the run's state


class Meter:
    """Running means of the scalars logged every ``log_every`` iterations."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return means


@dataclass
class GanRun:
    """One GAN training run's live state: networks, optimisers, augmentation, data order and counters.

    ``state_dict`` is a checkpoint's payload and ``load_state_dict`` continues from one exactly.
    """

    cfg: dict[str, Any]
    world: World
    images: torch.Tensor  # every training image, uint8 (N, C, H, W), on the training device
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    G_kwargs: dict[str, Any]
    D_kwargs: dict[str, Any]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    augment: DiffAugment
    order: DataOrder
    grid_z: torch.Tensor  # the fixed latents of every sample grid
    meta: dict[str, Any] = field(default_factory=dict)  # what the exported teacher.json says about the data
    cur_nimg: int = 0  # real images shown to D so far, over all processes
    step: int = 0  # iterations done
    ada_sum: float = 0.0  # sum of sign(D(A(real))) since the last ADA update, over all processes
    ada_count: int = 0
    best_fd: float | None = None
    best_kimg: float | None = None
    last_fd: float | None = None
    meter: Meter = field(default_factory=Meter)

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def batch_size(self) -> int:
        return int(self.cfg["batch_size"])

    @property
    def local(self) -> int:
        """This process's share of the global batch."""
        return self.batch_size // self.world.size

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000

    def c_empty(self) -> torch.Tensor:
        """The empty class labels of an unconditional G and D."""
        return torch.zeros(self.local, 0, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        return dict(
            G=self.G.state_dict(),
            D=self.D.state_dict(),
            G_ema=self.G_ema.state_dict(),
            opt_G=self.opt_G.state_dict(),
            opt_D=self.opt_D.state_dict(),
            data_order=self.order.state_dict(),
            augment_p=self.augment.p,
            state={k: getattr(self, k) for k in COUNTERS},
            cfg=self.cfg,
        )

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(self, name).load_state_dict(ckpt[name])
        self.order.load_state_dict(ckpt["data_order"])
        self.augment.p = float(ckpt["augment_p"])
        for k, v in ckpt["state"].items():
            setattr(self, k, v)


def _r1_interval(cfg: dict[str, Any]) -> int:
    """Iterations between lazy R1 steps; 0 when R1 is off."""
    return int(cfg["r1_interval"] or 0) if cfg["r1_gamma"] else 0


def build_gan(cfg: dict[str, Any], images: torch.Tensor, world: World, meta: dict[str, Any]) -> GanRun:
    """Networks, optimisers, augmentation and data order, seeded so that every process starts from the same
    weights; afterwards each other process draws its own z, noise and augmentation."""
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    G_kwargs, D_kwargs = network_kwargs(cfg, images.shape[1])
    G, D = build_networks(G_kwargs, D_kwargs)
    G, D = G.to(world.device).train(), D.to(world.device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (float(cfg["betas"][0]), float(cfg["betas"][1]))
    lr, eps, r1 = float(cfg["lr"]), float(cfg["eps"]), _r1_interval(cfg)
    gan = GanRun(
        cfg=cfg,
        world=world,
        images=images,
        G=G,
        D=D,
        G_ema=G_ema,
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        opt_G=lazy_adam(G.parameters(), lr, betas, eps, None),
        opt_D=lazy_adam(D.parameters(), lr, betas, eps, r1 or None),
        augment=DiffAugment(cfg["diffaug"], p=float(cfg["augment_p"])),
        order=DataOrder(len(images), int(cfg["batch_size"]), seed),
        grid_z=torch.randn(int(cfg["grid_size"]), G.z_dim, generator=torch.Generator().manual_seed(seed)),
        meta=meta,
    )
    if world.rank:
        torch.manual_seed(seed + 1_000_003 * world.rank)
    return gan


def resume_gan(gan: GanRun, run: RunDir, log: Callable[[str], Any]) -> int | None:
    """Continue ``gan`` from the run's newest good checkpoint; returns its step, None when there is none yet."""
    found = run.load_latest()
    if found is None:
        return None
    ckpt, path = found
    diff = {k: (ckpt["cfg"].get(k), gan.cfg[k]) for k in ARCH_KEYS if ckpt["cfg"].get(k) != gan.cfg[k]}
    if diff:
        raise SnsError(
            f"--resume: {path} was trained with different network settings "
            f"{ {k: v[0] for k, v in diff.items()} }, got { {k: v[1] for k, v in diff.items()} }; "
            "use the original values or a new --out"
        )
    gan.load_state_dict(ckpt)
    if ckpt.get("cuda_rng") is not None and "rng_ranks" not in ckpt:
        ckpt["rng"] = {**ckpt["rng"], "cuda": ckpt["cuda_rng"]}  # a single-GPU checkpoint from before engine.run
    run.restore_rng(ckpt, reseed=int(gan.cfg["seed"]) * 7919 + gan.step + 1_000_003 * gan.world.rank)
    log(f"resumed from {path} at {gan.kimg:.1f} kimg (step {gan.step})")
    return gan.step


# ---------------------------------------------------------------------------------------------- one iteration


def real_batch(gan: GanRun) -> torch.Tensor:
    """This process's share of the next global batch of reals in [-1, 1], x-flipped at random with ``mirror``."""
    idx = gan.order.next()[gan.world.shard(gan.batch_size)].to(gan.device)
    real = gan.images[idx].float() / 127.5 - 1.0
    if gan.cfg["mirror"]:
        flip = torch.rand(gan.local, device=gan.device) < 0.5
        real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)
    return real


def g_step(gan: GanRun) -> None:
    """Gmain: one Adam step of G towards D calling its augmented fakes real."""
    G, D, c = gan.G, gan.D, gan.c_empty()
    G.requires_grad_(True)
    D.requires_grad_(False)
    z = torch.randn(gan.local, G.z_dim, device=gan.device)
    with autocast(gan.device, gan.cfg["bf16"]):
        fake = G(z, c, noise_mode="random", update_emas=True)
        fake_logits = D(gan.augment(fake), c).float()
    loss = g_loss_nonsaturating(fake_logits)
    gan.opt_G.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(G, gan.world)
    gan.opt_G.step()
    gan.meter.add("loss/G", loss.detach())


def d_step(gan: GanRun, real: torch.Tensor) -> torch.Tensor:
    """Dmain: one Adam step of D telling augmented reals from augmented fakes; returns D's logits on the reals."""
    G, D, c = gan.G, gan.D, gan.c_empty()
    G.requires_grad_(False)
    D.requires_grad_(True)
    z = torch.randn(gan.local, G.z_dim, device=gan.device)
    with autocast(gan.device, gan.cfg["bf16"]):
        with torch.no_grad():
            fake = G(z, c, noise_mode="random")
        fake_logits = D(gan.augment(fake), c).float()
        real_logits = D(gan.augment(real), c).float()
    loss = d_loss_logistic(real_logits, fake_logits)
    gan.opt_D.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(D, gan.world)
    gan.opt_D.step()
    gan.meter.add("loss/D", loss.detach())
    gan.meter.add("D/real", real_logits.detach().mean())
    gan.meter.add("D/fake", fake_logits.detach().mean())
    return real_logits.detach()


def agree(gan: GanRun, real_logits: torch.Tensor, deadline: float | None, stop: bool) -> tuple[bool, bool]:
    """One small all-reduce per iteration: ADA's statistic over the global batch, and one clock and one stop flag
    for every process (so that all of them stop at the same iteration). Returns (time is up, stop)."""
    flags = gan.world.sum_(
        torch.tensor(
            [float(real_logits.sign().sum()), float(deadline is not None and time.time() > deadline), float(stop)],
            device=gan.device,
        )
    )
    gan.ada_sum += float(flags[0])
    gan.ada_count += gan.batch_size
    return bool(flags[1] > 0), bool(flags[2] > 0)


def r1_step(gan: GanRun, real: torch.Tensor) -> None:
    """Dreg, every r1_interval iterations: lazy R1 on reals, scaled by the interval so that its average strength
    is gamma / 2 per iteration; in fp32 (double backprop in bf16 is too coarse)."""
    interval = _r1_interval(gan.cfg)
    if not interval or gan.step % interval:
        return
    real_r1 = real.detach().requires_grad_(True)
    logits = gan.D(gan.augment(real_r1), gan.c_empty())
    penalty = r1_penalty(logits, real_r1)
    loss = penalty.mean() * (float(gan.cfg["r1_gamma"]) / 2) * interval
    gan.opt_D.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(gan.D, gan.world)
    gan.opt_D.step()
    gan.meter.add("loss/r1", penalty.detach().mean())


def ada_update(gan: GanRun) -> None:
    """ADA, every ada_interval iterations: raise p when D grows confident on reals (overfitting), else lower it."""
    cfg = gan.cfg
    interval = int(cfg["ada_interval"])
    if cfg["ada_target"] is None or (gan.step + 1) % interval or not gan.ada_count:
        return
    rt = gan.ada_sum / gan.ada_count
    sign = math.copysign(1.0, rt - float(cfg["ada_target"]))
    adjust = sign * gan.batch_size * interval / (float(cfg["ada_kimg"]) * 1000)
    gan.augment.p = min(max(gan.augment.p + adjust, 0.0), 1.0)
    gan.ada_sum, gan.ada_count = 0.0, 0


def train_iteration(gan: GanRun, deadline: float | None, stop: bool) -> tuple[bool, bool]:
    """One StyleGAN2-ADA iteration on one global batch; returns (time is up, stop), agreed by every process."""
    cfg = gan.cfg
    real = real_batch(gan)
    g_step(gan)
    real_logits = d_step(gan, real)
    time_up, stop = agree(gan, real_logits, deadline, stop)
    r1_step(gan, real)
    gan.D.requires_grad_(False)
    # G_ema follows G; the rampup makes it track closely while G is young
    ema_update(gan.G_ema, gan.G, ema_beta(gan.batch_size, gan.cur_nimg, float(cfg["ema_kimg"]), cfg["ema_rampup"]))
    ada_update(gan)
    gan.cur_nimg += gan.batch_size
    gan.step += 1
    return time_up, stop


# --------------------------------------------------------------------------------------- between iterations


def _every(kimg_interval: float | None, prev_nimg: int, cur_nimg: int) -> bool:
    """True when ``cur_nimg`` crossed a multiple of ``kimg_interval`` kimg since ``prev_nimg``."""
    if not kimg_interval or kimg_interval <= 0:
        return False
    step = kimg_interval * 1000.0
    return math.floor(cur_nimg / step) > math.floor(prev_nimg / step)


def log_metrics(gan: GanRun, logger: MetricsLogger, bar, tick: tuple[float, int]) -> tuple[float, int]:
    """One metrics line (means since the last one, kimg, p, speed); returns the new (time, nimg) tick."""
    now, (t_tick, nimg_tick) = time.time(), tick
    metrics = gan.meter.pop()
    metrics.update(
        {
            "kimg": gan.kimg,
            "augment_p": gan.augment.p,
            "sec_per_kimg": (now - t_tick) / max(1e-9, (gan.cur_nimg - nimg_tick) / 1000),
        }
    )
    logger.log(gan.step, metrics)
    if bar is not None:
        fd = "-" if gan.last_fd is None else f"{gan.last_fd:.2f}"
        postfix = {"G": f"{metrics.get('loss/G', 0):.3f}", "D": f"{metrics.get('loss/D', 0):.3f}"}
        bar.set_postfix({**postfix, "p": f"{gan.augment.p:.2f}", "fd": fd}, refresh=False)
    return now, gan.cur_nimg


def _grid_nrow(n: int) -> int:
    return max(1, int(math.ceil(math.sqrt(n))))


@torch.no_grad()
def save_samples(gan: GanRun, run_dir: Path, tag: str, batch: int = 64) -> Path:
    """The fixed-z grid of G_ema (constant noise) as samples/fakes-kimg<tag>.png."""
    gan.G_ema.eval()
    out = []
    for z in gan.grid_z.split(batch):
        z = z.to(gan.device)
        c = torch.zeros(z.shape[0], gan.G_ema.c_dim, device=gan.device)
        out.append((gan.G_ema(z, c, noise_mode="const").float().cpu() + 1) / 2)
    imgs = torch.cat(out).clamp(0, 1)
    return save_image_grid(imgs, run_dir / "samples" / f"fakes-kimg{tag}.png", nrow=_grid_nrow(len(imgs)), scale=2)


def save_start_grids(gan: GanRun, run_dir: Path) -> None:
    """samples/reals.png and the untrained G_ema's grid, at the start of a fresh run."""
    reals = gan.images[: int(gan.cfg["grid_size"])].float().cpu() / 255.0
    save_image_grid(reals, run_dir / "samples" / "reals.png", nrow=_grid_nrow(len(reals)), scale=2)
    save_samples(gan, run_dir, f"{0:08.3f}")


def maybe_sample(gan: GanRun, run_dir: Path, prev_nimg: int, done: bool) -> Path | None:
    """A sample grid every ``sample_kimg`` and at the end (rank 0)."""
    if gan.world.is_main and (_every(gan.cfg["sample_kimg"], prev_nimg, gan.cur_nimg) or done):
        return save_samples(gan, run_dir, f"{gan.kimg:08.3f}")
    return None


@dataclass
class FdRef:
    """FD-ref of a generator against the training set: the reference net and the real images' statistics."""

    ref_net: Any
    real_stats: tuple[Any, Any]
    num: int  # generated images per evaluation
    seed: int  # of the generated images' latents (the same every evaluation)

    def measure(self, G: nn.Module) -> float:
        mu, sigma = generator_stats(G, self.ref_net, self.num, seed=self.seed)
        return frechet_distance(self.real_stats[0], self.real_stats[1], mu, sigma)


def build_fd_ref(cfg: dict[str, Any], ds, images: torch.Tensor, world: World, log) -> FdRef | None:
    """Rank 0's FD-ref, or None (``fd_ref_kimg`` null, or another rank). The reference net is trained (or read from
    its cache) aside from the GAN's random stream."""
    if cfg["fd_ref_kimg"] is None or not world.is_main:
        return None
    with torch.random.fork_rng(devices=[]):
        source = ds if getattr(ds, "images", None) is not None else _Images(ds, images)
        ref_net = train_reference_net(source, device=world.device, cache_dir=cfg["fd_ref_cache"], log=log)
        real_stats = real_stats_cached(_Images(ds, images.cpu()), ref_net, int(cfg["fd_ref_real"]))
    return FdRef(ref_net, real_stats, int(cfg["fd_ref_num"]), int(cfg["seed"]) + 1)


def export_teacher(gan: GanRun, path: Path, fd_value: float | None, fd: FdRef | None) -> None:
    """G, G_ema and D as a teacher directory, with the data, progress, FD-ref and config of the run."""
    meta = dict(
        gan.meta,
        kimg=round(gan.cur_nimg / 1000, 3),
        step=gan.step,
        fd_ref=fd_value,
        fd_ref_num=int(gan.cfg["fd_ref_num"]),
        fd_ref_net=getattr(fd.ref_net, "meta", None) if fd else None,
        config=gan.cfg,
    )
    save_teacher_dir(path, gan.G, gan.G_ema, gan.D, gan.G_kwargs, gan.D_kwargs, meta)


def maybe_fd(gan: GanRun, fd: FdRef | None, logger: MetricsLogger, run_dir: Path, prev_nimg: int, done: bool) -> bool:
    """FD-ref of G_ema every ``fd_ref_kimg`` and at the end; the best so far becomes teacher/ (``best_fd``)."""
    if fd is None or not (_every(gan.cfg["fd_ref_kimg"], prev_nimg, gan.cur_nimg) or done):
        return False
    value = fd.measure(gan.G_ema)
    gan.last_fd = value
    logger.log(gan.step, {"fd_ref": value, "kimg": gan.kimg})
    if gan.best_fd is None or value < gan.best_fd:
        gan.best_fd, gan.best_kimg = value, gan.kimg
        if gan.cfg["teacher_pick"] == "best_fd":
            export_teacher(gan, run_dir / "teacher", value, fd)
    return True


def checkpoint(gan: GanRun, run: RunDir) -> None:
    """Save the run (collective). Every process applied the same averaged gradients, so their weights must agree."""
    if gan.world.size > 1:
        sums = gan.world.gather([float(sum(p.double().sum() for p in m.parameters())) for m in (gan.G, gan.D)])
        if any(s != sums[0] for s in sums):
            raise SnsError(
                f"train-gan: the {gan.world.size} processes hold different weights at step {gan.step} "
                f"({sums}); this is a bug, please report it"
            )
    run.save(gan.step, gan.state_dict)


def maybe_checkpoint(gan: GanRun, run: RunDir, fd: FdRef | None, fd_now: bool, done: bool) -> bool:
    """A checkpoint (and, with ``export_snapshots``, a snapshot teacher) every ``ckpt_every`` iterations and at
    the end; returns whether one was saved."""
    every = int(gan.cfg["ckpt_every"] or 0)
    if not ((every and gan.step % every == 0) or done):
        return False
    if gan.cfg["export_snapshots"] and gan.world.is_main:
        snapshot = run.path / "snapshots" / f"kimg-{int(round(gan.kimg)):06d}"
        export_teacher(gan, snapshot, gan.last_fd if fd_now else None, fd)
    checkpoint(gan, run)
    return True


# ------------------------------------------------------------------------------------------------- the loop


def train_loop(gan: GanRun, run: RunDir, fd: FdRef | None, logger, bar, deadline: float | None, log) -> dict:
    """Iterations until ``kimg`` is reached, ``max_minutes`` is up or a signal arrives.

    Returns how it ended: ``stopped_by_time``, ``interrupted`` (a signal: checkpointed, nothing exported) and the
    last sample grid.
    """
    cfg, total = gan.cfg, int(round(float(gan.cfg["kimg"]) * 1000))
    ended: dict[str, Any] = dict(stopped_by_time=False, interrupted=None, samples=None)
    tick = (time.time(), gan.cur_nimg)
    with StopSignal() as signal:
        while gan.cur_nimg < total:
            prev_nimg = gan.cur_nimg
            time_up, stop = train_iteration(gan, deadline, signal.requested is not None)
            done = gan.cur_nimg >= total
            if time_up and not done:
                done = ended["stopped_by_time"] = True
                log(
                    f"train-gan: max_minutes={cfg['max_minutes']} reached at {gan.kimg:.1f} kimg; stopping "
                    "(resume with --resume to continue)"
                )
            if bar is not None:
                bar.update(min(gan.cur_nimg, total) - min(prev_nimg, total))
            if gan.step % int(cfg["log_every"]) == 0 or done:
                tick = log_metrics(gan, logger, bar, tick)
            ended["samples"] = maybe_sample(gan, run.path, prev_nimg, done) or ended["samples"]
            fd_now = maybe_fd(gan, fd, logger, run.path, prev_nimg, done)
            saved = maybe_checkpoint(gan, run, fd, fd_now, done)
            if done:
                break
            if stop:  # after this iteration's bookkeeping, so the resumed run repeats none of it and misses none
                if not saved:
                    checkpoint(gan, run)
                ended["interrupted"] = signal.requested or "a signal to another process"
                log(f"\n{ended['interrupted']}: checkpoint saved at step {gan.step}; continue with --resume")
                break
    return ended


def finish(gan: GanRun, run_dir: Path, fd: FdRef | None, ended: dict, t_start: float, resumed_from) -> dict:
    """Export the teacher (unless the best FD-ref one already is) and write summary.json; rank 0's summary."""
    gan.world.barrier()
    if not gan.world.is_main:
        return dict(run_dir=str(run_dir), steps=gan.step, rank=gan.world.rank)
    if ended["interrupted"]:
        return dict(run_dir=str(run_dir), interrupted=True, steps=gan.step, kimg=gan.kimg)
    if fd is None or gan.cfg["teacher_pick"] == "last" or not (run_dir / "teacher" / "teacher.json").exists():
        export_teacher(gan, run_dir / "teacher", gan.last_fd, fd)
    summary = dict(
        run_dir=str(run_dir),
        kimg=gan.kimg,
        steps=gan.step,
        seconds=round(time.time() - t_start, 1),
        fd_ref=gan.last_fd,
        best_fd_ref=gan.best_fd,
        best_kimg=gan.best_kimg,
        teacher_dir=str(run_dir / "teacher"),
        samples=str(ended["samples"]) if ended["samples"] else None,
        resumed_from_step=resumed_from,
        stopped_by_time=ended["stopped_by_time"],
    )
    write_json(run_dir / "summary.json", summary)
    return summary


def train_gan(
    cfg: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset=None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a StyleGAN2 teacher on ``cfg['data']`` into ``run_dir`` on ``cfg['device']``.

    Args:
        cfg: config keys (GAN_DEFAULTS fills the rest); renamed and unknown keys are errors.
        run_dir: the run directory.
        resume: continue from the newest good checkpoint in run_dir/checkpoints (bit-identical on CPU to an
            uninterrupted run); ``kimg`` may be raised to train longer.
        progress: a progress bar on rank 0.
        dataset: an object with uint8 ``.images`` and a ``.name`` used instead of loading ``cfg['data']``.
        log: where messages go (rank 0 only).

    Returns:
        The run's summary (also in summary.json); ``interrupted: True`` when SIGINT/SIGTERM stopped it (then only
        a checkpoint was written). The caller's global RNG state is left untouched.
    """
    cfg = check_config(cfg)
    run_dir = Path(run_dir)
    # under torchrun: one rank per process (cuda:LOCAL_RANK on GPUs), gradients averaged over ranks
    world = setup(cfg["device"])
    log = log if world.is_main else _silent
    threads_before = torch.get_num_threads()
    if cfg["threads"] and world.device.type == "cpu":
        # OpenMP threads spin-wait on each other: on an oversubscribed CPU two threads can be 10x slower than one.
        torch.set_num_threads(int(cfg["threads"]))
    try:
        with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
            return _train(cfg, run_dir, resume, progress, dataset, log, world)
    finally:
        torch.set_num_threads(threads_before)
        world.close()


def _silent(*args, **kwargs) -> None:
    return None


def _train(cfg, run_dir: Path, resume: bool, progress: bool, dataset, log, world: World) -> dict[str, Any]:
    t_start = time.time()
    deadline = t_start + float(cfg["max_minutes"]) * 60 if cfg["max_minutes"] else None
    # what runs, decided before config.yaml is written: rank 0's device and bf16 for every process ...
    cfg = decide_bf16(dict(cfg, device=str(world.device)), world, log)
    ds, images = load_images(cfg, dataset)
    check_world_split(cfg, world)
    cfg["channels"] = int(images.shape[1])  # ... and the channels of the images it trains on
    meta = dict(
        dataset=str(getattr(ds, "name", cfg["data"])),
        split=cfg["split"],
        resolution=int(cfg["resolution"]),
        img_channels=int(images.shape[1]),
        mean=list(getattr(ds, "mean", ())),
        std=list(getattr(ds, "std", ())),
    )
    gan = build_gan(cfg, images.to(world.device), world, meta)
    run = RunDir(run_dir, world, keep=int(cfg["keep_ckpts"]), log=log)
    run.prepare()
    resumed_from = resume_gan(gan, run, log) if resume else None
    run.write_config(cfg)
    logger = MetricsLogger(run_dir, enabled=world.is_main, resume_step=resumed_from)
    fd = build_fd_ref(cfg, ds, gan.images, world, log)
    if world.is_main:
        (run_dir / "samples").mkdir(exist_ok=True)
        if resumed_from is None:
            save_start_grids(gan, run_dir)
    total = int(round(float(cfg["kimg"]) * 1000))
    bar = None
    if progress and world.is_main:
        initial = min(gan.cur_nimg, total)
        bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, desc="train-gan")
    try:
        ended = train_loop(gan, run, fd, logger, bar, deadline, log)
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    return finish(gan, run_dir, fd, ended, t_start, resumed_from)
