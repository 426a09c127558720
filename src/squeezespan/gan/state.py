"""The state of a GAN run: data order, networks, optimisers, augmentation and counters (GanRun); build and resume."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data import batches, load_dataset
from ..data.diffaug import DiffAugment
from ..engine.device import grad_scaler
from ..engine.distributed import World
from ..engine.run import RunDir, config_diff, describe_diff, state_fits
from ..errors import SnsError
from ..teachers.directory import build_networks, network_kwargs
from .config import ARCH_KEYS, COUNTERS
from .loss import lazy_adam

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
        dataset = load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["train_split"], resolution=res, **kw)
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


class ImagesView:
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
    scaler_G: torch.amp.GradScaler  # fp16 loss scaling of G's and of D's main steps (pass-throughs otherwise)
    scaler_D: torch.amp.GradScaler
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
        scalers = {k: getattr(self, k).state_dict() for k in ("scaler_G", "scaler_D") if getattr(self, k).is_enabled()}
        return dict(
            **scalers,
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
        for name in ("scaler_G", "scaler_D"):
            if getattr(self, name).is_enabled() and ckpt.get(name):  # none saved: a run resumed in fp16 starts anew
                getattr(self, name).load_state_dict(ckpt[name])
        self.order.load_state_dict(ckpt["data_order"])
        self.augment.p = float(ckpt["augment_p"])
        for k, v in ckpt["state"].items():
            setattr(self, k, v)


def r1_interval(cfg: dict[str, Any]) -> int:
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
    lr, eps, r1 = float(cfg["lr"]), float(cfg["eps"]), r1_interval(cfg)
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
        scaler_G=grad_scaler(world.device, cfg["precision"]),
        scaler_D=grad_scaler(world.device, cfg["precision"]),
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

    def fits(state: dict[str, Any]) -> str | None:  # run.identity (the config) is compared first, by RunDir
        if "identity" not in state and isinstance(state.get("cfg"), dict):  # written before identities
            diff = config_diff({k: state["cfg"].get(k) for k in ARCH_KEYS}, {k: gan.cfg[k] for k in ARCH_KEYS})
            if diff:
                return f"it was trained with {describe_diff(diff)}"
        for name in ("G", "D", "G_ema"):
            why = state_fits(getattr(gan, name), state.get(name), name)
            if why:
                return why
        return None

    found = run.load_latest(fits)
    if found is None:
        return None
    ckpt, path = found
    gan.load_state_dict(ckpt)
    if ckpt.get("cuda_rng") is not None and "rng_ranks" not in ckpt:
        ckpt["rng"] = {**ckpt["rng"], "cuda": ckpt["cuda_rng"]}  # a single-GPU checkpoint from before engine.run
    run.restore_rng(ckpt, reseed=int(gan.cfg["seed"]) * 7919 + gan.step + 1_000_003 * gan.world.rank)
    log(f"resumed from {path} at {gan.kimg:.1f} kimg (step {gan.step})")
    return gan.step
