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
and precision decided), metrics.jsonl, tb/, checkpoints/ckpt-<step>.pt (exact resume), samples/*.png, teacher/ (a
teacher directory, teachers.directory) and, with ``export_snapshots``, a teacher at every checkpoint in
snapshots/kimg-XXXXXX/. SIGINT/SIGTERM checkpoint the current iteration and return; ``resume`` continues the run
bit-identically (on CPU) from its newest good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..engine.device import decide_precision
from ..engine.distributed import World, setup
from ..engine.logging import MetricsLogger
from ..engine.run import RunDir, StopSignal
from ..errors import SnsError
from ..eval.fdref import frechet_distance, generator_stats, real_stats_cached, train_reference_net
from ..files import write_json
from ..report.grid import save_image_grid
from ..teachers.directory import save_teacher_dir
from .config import GAN_RESUME_FREE_KEYS, check_config
from .state import GanRun, ImagesView, build_gan, check_world_split, load_images, resume_gan
from .steps import train_iteration

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
        source = ds if getattr(ds, "images", None) is not None else ImagesView(ds, images)
        ref_net = train_reference_net(source, device=world.device, cache_dir=cfg["fd_ref_cache"], log=log)
        real_stats = real_stats_cached(ImagesView(ds, images.cpu()), ref_net, int(cfg["fd_ref_real"]))
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
        return dict(run_dir=str(run_dir), interrupted=True, steps=gan.step, kimg=gan.kimg, signal=ended["interrupted"])
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
    # what runs, decided before config.yaml is written: rank 0's device and precision for every process ...
    cfg = decide_precision(dict(cfg, device=str(world.device)), world, log)
    ds, images = load_images(cfg, dataset)
    check_world_split(cfg, world)
    cfg["channels"] = int(images.shape[1])  # ... and the channels of the images it trains on
    meta = dict(
        dataset=str(getattr(ds, "name", cfg["data"])),
        split=cfg["train_split"],
        resolution=int(cfg["resolution"]),
        img_channels=int(images.shape[1]),
        mean=list(getattr(ds, "mean", ())),
        std=list(getattr(ds, "std", ())),
    )
    gan = build_gan(cfg, images.to(world.device), world, meta)
    run = RunDir(run_dir, world, keep=int(cfg["keep_ckpts"]), log=log, identity=cfg, free=GAN_RESUME_FREE_KEYS)
    run.prepare()
    resumed_from = resume_gan(gan, run, log) if resume else None
    run.write_config(cfg)
    logger = MetricsLogger(
        run_dir, world.is_main, resume_step=resumed_from, loggers=cfg["loggers"], config=cfg, kind="train-gan"
    )
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
        try:
            ended = train_loop(gan, run, fd, logger, bar, deadline, log)
        finally:
            if bar is not None:
                bar.close()
        summary = finish(gan, run_dir, fd, ended, t_start, resumed_from)
        if not ended["interrupted"]:
            logger.log_artifact("teacher", [run_dir / "teacher"])
    except BaseException:
        logger.close("failed")
        raise
    logger.close("interrupted" if ended["interrupted"] else "finished")
    return summary
