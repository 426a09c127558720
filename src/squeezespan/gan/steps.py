"""One GAN training iteration, step by step: G main, D main, lazy R1, G_ema, ADA."""

from __future__ import annotations

import math
import time

import torch

from ..engine.device import autocast
from ..engine.distributed import average_gradients
from .loss import d_loss_logistic, ema_beta, ema_update, g_loss_nonsaturating, r1_penalty
from .state import GanRun, r1_interval

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
    with autocast(gan.device, gan.cfg["precision"]):
        fake = G(z, c, noise_mode="random", update_emas=True)
        fake_logits = D(gan.augment(fake), c).float()
    loss = g_loss_nonsaturating(fake_logits)
    gan.opt_G.zero_grad(set_to_none=True)
    gan.scaler_G.scale(loss).backward()  # fp16: the loss scaled (a pass-through in bf16 and fp32)
    average_gradients(G, gan.world)
    gan.scaler_G.step(gan.opt_G)  # fp16: skipped when a gradient overflowed
    gan.scaler_G.update()
    gan.meter.add("loss/G", loss.detach())


def d_step(gan: GanRun, real: torch.Tensor) -> torch.Tensor:
    """Dmain: one Adam step of D telling augmented reals from augmented fakes; returns D's logits on the reals."""
    G, D, c = gan.G, gan.D, gan.c_empty()
    G.requires_grad_(False)
    D.requires_grad_(True)
    z = torch.randn(gan.local, G.z_dim, device=gan.device)
    with autocast(gan.device, gan.cfg["precision"]):
        with torch.no_grad():
            fake = G(z, c, noise_mode="random")
        fake_logits = D(gan.augment(fake), c).float()
        real_logits = D(gan.augment(real), c).float()
    loss = d_loss_logistic(real_logits, fake_logits)
    gan.opt_D.zero_grad(set_to_none=True)
    gan.scaler_D.scale(loss).backward()
    average_gradients(D, gan.world)
    gan.scaler_D.step(gan.opt_D)
    gan.scaler_D.update()
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
    is gamma / 2 per iteration; in fp32 whatever the run's precision (double backprop in bf16 is too coarse), so
    unscaled."""
    interval = r1_interval(gan.cfg)
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
