"""StyleGAN2-ADA training objectives: non-saturating logistic loss, lazy R1, generator EMA, lazy-regularised Adam."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))): the generator pushes fakes towards "real" without saturating early on."""
    return F.softplus(-fake_logits).mean()


def d_loss_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))): the discriminator's logistic loss on both sets."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Per-sample ||d D(x) / d x||^2 on real images, (N,); ``real_images`` must require grad.

    The graph is kept (create_graph) so that the penalty itself can be back-propagated into D.
    """
    (grad,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_images, create_graph=True)
    return grad.float().square().flatten(1).sum(1)


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Decay of the generator EMA for one step: half-life of ``ema_kimg`` thousand images.

    With a rampup the half-life is capped at ``ema_rampup * cur_nimg`` so that G_ema follows G quickly
    while G itself still changes fast (StyleGAN2-ADA's rule).
    """
    ema_nimg = ema_kimg * 1000.0
    if ema_rampup is not None and ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """p_ema <- beta * p_ema + (1 - beta) * p for parameters; buffers are copied as they are."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())


def lazy_adam(
    params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float, reg_interval: int | None
) -> torch.optim.Adam:
    """Adam whose lr and betas are adjusted for lazy regularisation (one extra step every ``reg_interval``).

    mb_ratio = k / (k + 1) keeps the effective learning rate per main step unchanged (StyleGAN2 Appendix B).
    """
    mb_ratio = 1.0 if not reg_interval else reg_interval / (reg_interval + 1)
    return torch.optim.Adam(params, lr=lr * mb_ratio, betas=(betas[0] ** mb_ratio, betas[1] ** mb_ratio), eps=eps)
