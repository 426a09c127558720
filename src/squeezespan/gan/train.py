"""Train our own StyleGAN2 teacher (the engine of `sns train-gan`) and save/load it as a teacher directory.

One training iteration, as in StyleGAN2-ADA's loop for an unconditional G without path-length regularisation:
  Gmain  non-saturating logistic loss through D(A(G(z)))
  Dmain  logistic loss on D(A(real)) and D(A(G(z)))
  Dreg   every ``r1_interval`` iterations: lazy R1 = gamma/2 * ||grad_x D(A(x))||^2 * interval, its own Adam step
  G_ema  exponential moving average of G (half-life ``ema_kimg``, with rampup)
A is the differentiable augmentation (DiffAugment ops, per-sample probability p, optionally ADA-adapted).
A run directory holds: config.yaml, metrics.jsonl, tb/, checkpoints/ckpt-<step>.pt (exact resume),
samples/*.png (fixed-z grids of G_ema), teacher/ (G.safetensors, G_ema.safetensors, D.safetensors,
teacher.json) and, with ``export_snapshots``, snapshots/kimg-XXXXXX/ teachers for FD-ref-vs-accuracy studies.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine.checkpoint import (
    atomic_write_bytes,
    checkpoint_path,
    load_latest,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..engine.distributed import World, average_gradients, setup
from ..engine.logging import MetricsLogger
from ..engine.rundir import autocast, decide_bf16, resolve_device, save_config
from ..errors import SnsError
from .diffaug import DiffAugment, parse_policy
from .directory import build_networks, network_kwargs, save_teacher_dir
from .gan_loss import d_loss_logistic, ema_beta, ema_update, g_loss_nonsaturating, lazy_adam, r1_penalty

# Every knob of `sns train-gan`, with its default; presets (configs/gan-*.yaml) and key=value override these.
GAN_DEFAULTS: dict[str, Any] = {
    # data
    "data": "digits",  # dataset name for squeezespan.data.load_dataset
    "data_root": None,  # folder holding the files (None: the data package's default search)
    "split": "train",
    "resolution": 32,  # square image size (power of two)
    "channels": None,  # 1 or 3; None keeps the dataset's own
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
    "batch": 32,
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
    "threads": None,  # CPU threads for this run (None: torch's setting); 1 is fastest on a busy CPU
    "max_minutes": None,  # stop cleanly (final samples, FD-ref, checkpoint, teacher) after this wall time
    # bookkeeping
    "snapshot_kimg": 10.0,  # checkpoint (and snapshot teacher) every N kimg
    "keep_checkpoints": 2,
    "export_snapshots": False,  # also export a teacher at every snapshot into snapshots/kimg-XXXXXX/
    "sample_kimg": 5.0,  # fixed-z sample grid of G_ema every N kimg into samples/
    "grid_size": 64,  # images in the sample grid
    "log_steps": 20,  # metrics line every N iterations
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


# ----------------------------------------------------------------------------------------------- data order


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


# ------------------------------------------------------------------------------------------------- helpers


def _check_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(GAN_DEFAULTS))
    if unknown:
        raise SnsError(f"train-gan config: unknown key(s) {unknown}; valid keys: {', '.join(GAN_DEFAULTS)}")
    cfg = {**copy.deepcopy(GAN_DEFAULTS), **cfg}
    res = cfg["resolution"]
    if not isinstance(res, int) or res < 8 or res & (res - 1):
        raise SnsError(f"train-gan resolution={res!r}: expected a power of two >= 8 (e.g. 32)")
    if int(cfg["batch"]) < 1 or int(cfg["batch"]) % min(int(cfg["mbstd_group_size"]), int(cfg["batch"])):
        raise SnsError(
            f"train-gan batch={cfg['batch']}: must be >= 1 and a multiple of mbstd_group_size={cfg['mbstd_group_size']}"
        )
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
    parse_policy(cfg["diffaug"])
    return cfg


def _load_data(cfg: dict[str, Any]):
    from ..data import load_dataset

    kw = {"channels": int(cfg["channels"])} if cfg["channels"] else {}
    return load_dataset(cfg["data"], root=cfg["data_root"], split=cfg["split"], resolution=int(cfg["resolution"]), **kw)


def _all_images(ds) -> torch.Tensor:
    images = getattr(ds, "images", None)
    if images is None:  # a streamed folder: GAN training at 32-64 px keeps it in memory
        from ..data import batches

        images = torch.cat([x for x, _ in batches(ds, 1024, shuffle=False, drop_last=False)])
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise SnsError(
            f"dataset {getattr(ds, 'name', '?')}: expected uint8 (N, C, H, W) images, got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    return images


def _every(kimg_interval: float | None, prev_nimg: int, cur_nimg: int) -> bool:
    """True when ``cur_nimg`` crossed a multiple of ``kimg_interval`` kimg since ``prev_nimg``."""
    if not kimg_interval or kimg_interval <= 0:
        return False
    step = kimg_interval * 1000.0
    return math.floor(cur_nimg / step) > math.floor(prev_nimg / step)


@torch.no_grad()
def _sample_grid(G_ema: nn.Module, grid_z: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    G_ema.eval()
    out = []
    for z in grid_z.split(batch):
        z = z.to(device)
        c = torch.zeros(z.shape[0], G_ema.c_dim, device=device)
        out.append((G_ema(z, c, noise_mode="const").float().cpu() + 1) / 2)
    return torch.cat(out).clamp(0, 1)


def _grid_nrow(n: int) -> int:
    return max(1, int(math.ceil(math.sqrt(n))))


# -------------------------------------------------------------------------------------------------- training


def train_gan(
    cfg: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    device: Any = "cpu",
    progress: bool = True,
    dataset=None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a StyleGAN2 teacher on ``cfg['data']`` into ``run_dir``; returns a summary dict.

    ``resume`` continues from the newest good checkpoint in run_dir/checkpoints (bit-identical on CPU to an
    uninterrupted run); ``kimg`` may be raised on resume to train longer. ``dataset`` (an object with uint8
    ``.images`` and a ``.name``) replaces loading ``cfg['data']``, for tests and notebooks. The caller's global
    RNG state is left untouched.
    """
    cfg = _check_cfg(cfg)
    run_dir = Path(run_dir)
    device = resolve_device(device) if isinstance(device, (str, type(None))) else torch.device(device)
    # under torchrun: one rank per process (cuda:LOCAL_RANK on GPUs), gradients averaged over ranks
    world = setup(str(device))
    device = world.device
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        log = _silent
    threads_before = torch.get_num_threads()
    if cfg["threads"] and device.type == "cpu":
        # OpenMP threads spin-wait on each other: on an oversubscribed CPU two threads can be 10x slower than one.
        torch.set_num_threads(int(cfg["threads"]))
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _train(cfg, run_dir, resume, device, progress, dataset, log, world)
    finally:
        torch.set_num_threads(threads_before)
        world.close()


def _silent(*args, **kwargs) -> None:
    return None


def _train(
    cfg, run_dir: Path, resume: bool, device: torch.device, progress: bool, dataset, log, world: World | None = None
) -> dict[str, Any]:
    t_start = time.time()
    world = world or World(device=device)
    cfg = decide_bf16(cfg, world, log)  # rank 0's choice for every rank: the precision config.yaml records
    ckpt_dir = run_dir / "checkpoints"
    ds = dataset if dataset is not None else _load_data(cfg)
    images_u8 = _all_images(ds)
    n, img_channels, h, w = images_u8.shape
    if h != cfg["resolution"] or w != cfg["resolution"]:
        raise SnsError(f"train-gan: dataset images are {h}x{w} but resolution={cfg['resolution']}")
    batch = int(cfg["batch"])
    if n < batch:
        raise SnsError(
            f"train-gan: dataset {getattr(ds, 'name', '?')} has {n} images, fewer than batch={batch}; lower batch"
        )
    # batch is the global batch; each rank trains on its own 1/N of it
    local = batch // world.size
    if batch % world.size or local % min(int(cfg["mbstd_group_size"]), local):
        raise SnsError(
            f"train-gan batch={batch} does not split over WORLD_SIZE={world.size} processes into "
            f"per-process batches that are multiples of mbstd_group_size={cfg['mbstd_group_size']}"
        )
    cfg["channels"] = int(img_channels)
    images_u8 = images_u8.to(device)

    torch.manual_seed(int(cfg["seed"]))
    G_kwargs, D_kwargs = network_kwargs(cfg, img_channels)
    G, D = build_networks(G_kwargs, D_kwargs)
    G, D = G.to(device).train(), D.to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    r1_interval = int(cfg["r1_interval"] or 0)
    betas = (float(cfg["betas"][0]), float(cfg["betas"][1]))
    opt_G = lazy_adam(G.parameters(), float(cfg["lr"]), betas, float(cfg["eps"]), None)
    opt_D = lazy_adam(
        D.parameters(),
        float(cfg["lr"]),
        betas,
        float(cfg["eps"]),
        r1_interval if cfg["r1_gamma"] and r1_interval else None,
    )
    augment = DiffAugment(cfg["diffaug"], p=float(cfg["augment_p"]))
    order = DataOrder(n, batch, int(cfg["seed"]))
    grid_z = torch.randn(int(cfg["grid_size"]), G.z_dim, generator=torch.Generator().manual_seed(int(cfg["seed"])))
    if world.rank:  # same networks everywhere; each other rank draws its own z, noise and augmentation
        torch.manual_seed(int(cfg["seed"]) + 1_000_003 * world.rank)

    state = dict(cur_nimg=0, step=0, ada_sum=0.0, ada_count=0, best_fd=None, best_kimg=None, last_fd=None)
    resumed_from = None
    if resume:
        found = world.broadcast(load_latest(ckpt_dir, map_location="cpu", warn=log) if world.is_main else None)
        if found is None:
            log(f"warning: --resume: no checkpoint in {ckpt_dir}; starting from scratch")
        else:
            ckpt, path = found
            diff = {k: (ckpt["cfg"].get(k), cfg[k]) for k in ARCH_KEYS if ckpt["cfg"].get(k) != cfg[k]}
            if diff:
                raise SnsError(
                    f"--resume: {path} was trained with different network settings "
                    f"{ {k: v[0] for k, v in diff.items()} }, got { {k: v[1] for k, v in diff.items()} }; "
                    "use the original values or a new --out"
                )
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            G_ema.load_state_dict(ckpt["G_ema"])
            opt_G.load_state_dict(ckpt["opt_G"])
            opt_D.load_state_dict(ckpt["opt_D"])
            order.load_state_dict(ckpt["data_order"])
            augment.p = float(ckpt["augment_p"])
            state.update(ckpt["state"])
            ranks = ckpt.get("rng_ranks") or [{"rng": ckpt["rng"], "cuda_rng": ckpt.get("cuda_rng")}]
            if len(ranks) == world.size:
                set_rng_state(ranks[world.rank]["rng"])
                if ranks[world.rank].get("cuda_rng") is not None and device.type == "cuda":
                    torch.cuda.set_rng_state(ranks[world.rank]["cuda_rng"], device)
            else:
                log(
                    f"warning: checkpoint was written by {len(ranks)} process(es), this run has {world.size}: "
                    "random streams are reseeded, so the run is not bit-identical to an uninterrupted one"
                )
                torch.manual_seed(int(cfg["seed"]) * 7919 + int(state["step"]) + 1_000_003 * world.rank)
            resumed_from = state["step"]
            log(f"resumed from {path} at {state['cur_nimg'] / 1000:.1f} kimg (step {state['step']})")

    if world.is_main:
        save_config(run_dir, cfg)
        (run_dir / "samples").mkdir(exist_ok=True)
    logger = MetricsLogger(run_dir, enabled=world.is_main, resume_step=resumed_from)
    total_nimg = int(round(float(cfg["kimg"]) * 1000))

    # FD-ref: the reference net is trained (or loaded from its cache) before the GAN's RNG stream matters.
    fd_enabled = cfg["fd_ref_kimg"] is not None and world.is_main
    ref_net = real_stats = None
    if fd_enabled:
        from ..eval.fdref import real_stats_cached, train_reference_net

        with torch.random.fork_rng(devices=[]):
            ref_net = train_reference_net(
                ds if getattr(ds, "images", None) is not None else _Images(ds, images_u8),
                device=device,
                cache_dir=cfg["fd_ref_cache"],
                log=log,
            )
            real_stats = real_stats_cached(_Images(ds, images_u8.cpu()), ref_net, int(cfg["fd_ref_real"]))

    meta_base = dict(
        dataset=str(getattr(ds, "name", cfg["data"])),
        split=cfg["split"],
        resolution=int(cfg["resolution"]),
        img_channels=int(img_channels),
        mean=list(getattr(ds, "mean", ())),
        std=list(getattr(ds, "std", ())),
    )

    def evaluate_fd() -> float:
        from ..eval.fdref import frechet_distance, generator_stats

        mu, sigma = generator_stats(G_ema, ref_net, int(cfg["fd_ref_num"]), seed=int(cfg["seed"]) + 1)
        return frechet_distance(real_stats[0], real_stats[1], mu, sigma)

    def export(path: Path, fd: float | None) -> None:
        meta = dict(
            meta_base,
            kimg=round(state["cur_nimg"] / 1000, 3),
            step=state["step"],
            fd_ref=fd,
            fd_ref_num=int(cfg["fd_ref_num"]),
            fd_ref_net=getattr(ref_net, "meta", None) if ref_net else None,
            config=cfg,
        )
        save_teacher_dir(path, G, G_ema, D, G_kwargs, D_kwargs, meta)

    def checkpoint() -> None:
        mine = {"rng": rng_state(), "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        if world.size > 1:  # every rank applied the same averaged gradients: their weights must agree
            mine["weights"] = [float(sum(p.double().sum() for p in m.parameters())) for m in (G, D)]
        ranks = world.gather(mine)  # collective: every rank checkpoints at the same steps
        if not world.is_main:
            return
        if any(r.get("weights") != ranks[0].get("weights") for r in ranks):
            raise SnsError(
                f"train-gan: the {world.size} processes hold different weights at step {state['step']} "
                f"({[r['weights'] for r in ranks]}); this is a bug, please report it"
            )
        ckpt = dict(
            G=G.state_dict(),
            D=D.state_dict(),
            G_ema=G_ema.state_dict(),
            opt_G=opt_G.state_dict(),
            opt_D=opt_D.state_dict(),
            data_order=order.state_dict(),
            augment_p=augment.p,
            state=dict(state),
            rng=mine["rng"],
            cfg=cfg,
        )
        if device.type == "cuda":
            ckpt["cuda_rng"] = mine["cuda_rng"]
        if world.size > 1:
            ckpt["rng_ranks"] = [{"rng": r["rng"], "cuda_rng": r["cuda_rng"]} for r in ranks]
        save_checkpoint(checkpoint_path(ckpt_dir, state["step"]), ckpt)
        prune_checkpoints(ckpt_dir, int(cfg["keep_checkpoints"]))

    def save_samples(tag: str) -> Path:
        imgs = _sample_grid(G_ema, grid_z, device)
        from ..report.grid import save_image_grid

        return save_image_grid(imgs, run_dir / "samples" / f"fakes-kimg{tag}.png", nrow=_grid_nrow(len(imgs)), scale=2)

    if world.is_main:
        ckpt_dir.mkdir(exist_ok=True)
    if resumed_from is None and world.is_main:
        from ..report.grid import save_image_grid

        reals = images_u8[: int(cfg["grid_size"])].float().cpu() / 255.0
        save_image_grid(reals, run_dir / "samples" / "reals.png", nrow=_grid_nrow(len(reals)), scale=2)
        save_samples(f"{0:08.3f}")

    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total_nimg,
            initial=min(state["cur_nimg"], total_nimg),
            unit="img",
            unit_scale=True,
            dynamic_ncols=True,
            desc="train-gan",
        )

    c_empty = torch.zeros(local, 0, device=device)
    bf16 = bool(cfg["bf16"])
    r1_gamma = float(cfg["r1_gamma"] or 0.0)
    ada_target = cfg["ada_target"]
    mirror = bool(cfg["mirror"])
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    last_sample = None
    stopped_by_time = False
    t_tick, nimg_tick = time.time(), state["cur_nimg"]

    def acc(name: str, value: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0.0) + float(value)
        counts[name] = counts.get(name, 0) + 1

    while state["cur_nimg"] < total_nimg:
        step = state["step"]
        real = images_u8[order.next()[world.shard(batch)].to(device)].float() / 127.5 - 1.0
        if mirror:
            flip = torch.rand(local, device=device) < 0.5
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)

        # Gmain: make D call the fakes real.
        G.requires_grad_(True)
        D.requires_grad_(False)
        z = torch.randn(local, G.z_dim, device=device)
        with autocast(device, bf16):
            fake = G(z, c_empty, noise_mode="random", update_emas=True)
            fake_logits = D(augment(fake), c_empty).float()
        loss_G = g_loss_nonsaturating(fake_logits)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        average_gradients(G, world)
        opt_G.step()
        acc("loss/G", loss_G.detach())

        # Dmain: tell reals from fakes.
        G.requires_grad_(False)
        D.requires_grad_(True)
        z = torch.randn(local, G.z_dim, device=device)
        with autocast(device, bf16):
            with torch.no_grad():
                fake = G(z, c_empty, noise_mode="random")
            fake_logits = D(augment(fake), c_empty).float()
            real_logits = D(augment(real), c_empty).float()
        loss_D = d_loss_logistic(real_logits, fake_logits)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        average_gradients(D, world)
        opt_D.step()
        acc("loss/D", loss_D.detach())
        acc("D/real", real_logits.detach().mean())
        acc("D/fake", fake_logits.detach().mean())
        # one small all-reduce: ADA's statistic over the global batch, and one clock for all ranks
        agreed = world.sum_(
            torch.tensor(
                [
                    float(real_logits.detach().sign().sum()),
                    float(bool(cfg["max_minutes"]) and time.time() - t_start > float(cfg["max_minutes"]) * 60),
                ],
                device=device,
            )
        )
        state["ada_sum"] += float(agreed[0])
        state["ada_count"] += batch
        time_up = bool(agreed[1] > 0)

        # Dreg: lazy R1 on reals, scaled by the interval so its average strength is gamma / 2 per step.
        if r1_gamma > 0 and r1_interval and step % r1_interval == 0:
            real_r1 = real.detach().requires_grad_(True)
            logits = D(augment(real_r1), c_empty)  # fp32: double backprop in bf16 is too coarse
            penalty = r1_penalty(logits, real_r1)
            loss_r1 = penalty.mean() * (r1_gamma / 2) * r1_interval
            opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            average_gradients(D, world)
            opt_D.step()
            acc("loss/r1", penalty.detach().mean())
        D.requires_grad_(False)

        # G_ema follows G; the rampup makes it track closely while G is young.
        ema_update(G_ema, G, ema_beta(batch, state["cur_nimg"], float(cfg["ema_kimg"]), cfg["ema_rampup"]))

        # ADA: raise p when D grows confident on reals (overfitting), lower it otherwise.
        if ada_target is not None and (step + 1) % int(cfg["ada_interval"]) == 0 and state["ada_count"]:
            rt = state["ada_sum"] / state["ada_count"]
            adjust = (
                math.copysign(1.0, rt - float(ada_target))
                * batch
                * int(cfg["ada_interval"])
                / (float(cfg["ada_kimg"]) * 1000)
            )
            augment.p = min(max(augment.p + adjust, 0.0), 1.0)
            state["ada_sum"], state["ada_count"] = 0.0, 0

        prev_nimg = state["cur_nimg"]
        state["cur_nimg"] += batch
        state["step"] += 1
        cur_nimg, done = state["cur_nimg"], state["cur_nimg"] >= total_nimg
        if not done and time_up:
            done = stopped_by_time = True
            log(
                f"train-gan: max_minutes={cfg['max_minutes']} reached at {cur_nimg / 1000:.1f} kimg; stopping "
                "(resume with --resume to continue)"
            )
        if bar is not None:
            bar.update(min(cur_nimg, total_nimg) - min(prev_nimg, total_nimg))

        if state["step"] % max(1, int(cfg["log_steps"])) == 0 or done:
            now = time.time()
            metrics = {k: sums[k] / counts[k] for k in sums}
            metrics.update(
                {
                    "kimg": cur_nimg / 1000,
                    "augment_p": augment.p,
                    "sec_per_kimg": (now - t_tick) / max(1e-9, (cur_nimg - nimg_tick) / 1000),
                }
            )
            logger.log(state["step"], metrics)
            if bar is not None:
                bar.set_postfix(
                    {
                        "G": f"{metrics.get('loss/G', 0):.3f}",
                        "D": f"{metrics.get('loss/D', 0):.3f}",
                        "p": f"{augment.p:.2f}",
                        "fd": "-" if state["last_fd"] is None else f"{state['last_fd']:.2f}",
                    },
                    refresh=False,
                )
            sums.clear()
            counts.clear()
            t_tick, nimg_tick = now, cur_nimg

        if (_every(cfg["sample_kimg"], prev_nimg, cur_nimg) or done) and world.is_main:
            last_sample = save_samples(f"{cur_nimg / 1000:08.3f}")

        fd_now = fd_enabled and (_every(cfg["fd_ref_kimg"], prev_nimg, cur_nimg) or done)
        if fd_now:
            fd = evaluate_fd()
            state["last_fd"] = fd
            logger.log(state["step"], {"fd_ref": fd, "kimg": cur_nimg / 1000})
            if state["best_fd"] is None or fd < state["best_fd"]:
                state["best_fd"], state["best_kimg"] = fd, cur_nimg / 1000
                if cfg["teacher_pick"] == "best_fd":
                    export(run_dir / "teacher", fd)
        if _every(cfg["snapshot_kimg"], prev_nimg, cur_nimg) or done:
            if cfg["export_snapshots"] and world.is_main:
                export(
                    run_dir / "snapshots" / f"kimg-{int(round(cur_nimg / 1000)):06d}",
                    state["last_fd"] if fd_now else None,
                )
            checkpoint()
        if done:
            break

    if bar is not None:
        bar.close()
    world.barrier()
    if not world.is_main:
        logger.close()
        return dict(run_dir=str(run_dir), steps=state["step"], rank=world.rank)
    if not fd_enabled or cfg["teacher_pick"] == "last" or not (run_dir / "teacher" / "teacher.json").exists():
        export(run_dir / "teacher", state["last_fd"])
    logger.close()
    summary = dict(
        run_dir=str(run_dir),
        kimg=state["cur_nimg"] / 1000,
        steps=state["step"],
        seconds=round(time.time() - t_start, 1),
        fd_ref=state["last_fd"],
        best_fd_ref=state["best_fd"],
        best_kimg=state["best_kimg"],
        teacher_dir=str(run_dir / "teacher"),
        samples=str(last_sample) if last_sample else None,
        resumed_from_step=resumed_from,
        stopped_by_time=stopped_by_time,
    )
    atomic_write_bytes(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


class _Images:
    """A view with the attributes FD-ref needs when the dataset itself streams (folder) or lives on a device."""

    def __init__(self, ds, images: torch.Tensor):
        self.name = getattr(ds, "name", "data")
        self.images = images
        self.labels = getattr(ds, "labels", None)
        if self.labels is None or self.labels.shape[0] != images.shape[0]:
            self.labels = torch.full((images.shape[0],), -1, dtype=torch.int64)
