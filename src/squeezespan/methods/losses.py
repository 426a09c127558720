"""The loss terms of docs/method.md ("The objective", "Loss conventions"), term by term: invariance (MSE),
variance hinge, covariance, and SimSiam's cosine.

Conventions: the variance and covariance terms are statistics of the global batch (gathered across ranks);
in the two-view VICReg loss both are summed over the two views, as solo-learn and the authors' code do.
Official VICReg and lightly sum the covariance term too but halve the variance term (the mean of the views'
hinges), so w_var = 25 here weighs each view's hinge twice as much as 25 does there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Under torchrun each rank holds a slice of the batch; the variance and covariance terms are statistics of
# the GLOBAL batch, so the embeddings are gathered (with gradients) before any term is computed.
from ..engine.distributed import gather_batch


def invariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE(a, b): mean over batch and dimensions (not summed over dimensions)."""
    return F.mse_loss(a, b)


def variance(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_j relu(1 - sqrt(Var_batch(z_j) + eps)): keeps every dimension's std near 1 (no collapse).

    Args:
        z: (N, D) embeddings of one view; the variance is unbiased (N - 1), over the batch.
        eps: added to the variance inside the square root.

    Returns:
        A scalar, the hinge averaged over the D dimensions.
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries of the batch covariance of z, divided by D (decorrelation).

    Args:
        z: (N, D) embeddings of one view; the covariance is unbiased (N - 1).

    Returns:
        A scalar.
    """
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg(z1: torch.Tensor, z2: torch.Tensor, w_mse: float = 25.0, w_var: float = 25.0, w_cov: float = 1.0):
    """VICReg between two views: w_mse*MSE + w_var*(var(z1)+var(z2)) + w_cov*(cov(z1)+cov(z2)), global batch.

    Convention: the variance and covariance terms are SUMMED over the two views, as solo-learn and the authors'
    code do; official VICReg (facebookresearch/vicreg) and lightly sum the covariance too but average the
    variance term (half of this one).

    Args:
        z1, z2: (N, D) projections of two views of the same N images (this rank's share under torchrun).
        w_mse, w_var, w_cov: the term weights (the paper's lambda, mu, nu).

    Returns:
        ``(loss, parts)``: the scalar loss and the unweighted terms ``inv``, ``var``, ``cov`` (detached).
    """
    z1, z2 = gather_batch(z1.float()), gather_batch(z2.float())
    inv = invariance(z1, z2)
    var = variance(z1) + variance(z2)
    cov = covariance(z1) + covariance(z2)
    return w_mse * inv + w_var * var + w_cov * cov, {"inv": inv.detach(), "var": var.detach(), "cov": cov.detach()}


def squeeze(zf: torch.Tensor, zg: torch.Tensor, w_mse: float = 25.0, w_var: float = 25.0, w_cov: float = 1.0):
    """The synthetic-branch loss (docs/method.md, "The objective"): w_mse*MSE(zg, zf) + w_var*var(zf) +
    w_cov*cov(zf) over the global batch.

    Convention: only the student's side zf is regularised (one view); the squeezed target zg gets gradients
    through the MSE alone, which trains the squeeze module.

    Args:
        zf: (N, D) projections of the augmented teacher images A(x_syn).
        zg: (N, D) squeezed teacher features T_phi(taps).
        w_mse, w_var, w_cov: the term weights.

    Returns:
        ``(loss, parts)``: the scalar loss and the unweighted terms ``inv``, ``var``, ``cov`` (detached).
    """
    zf, zg = gather_batch(zf.float()), gather_batch(zg.float())
    inv = invariance(zf, zg)
    var = variance(zf)
    cov = covariance(zf)
    return w_mse * inv + w_var * var + w_cov * cov, {"inv": inv.detach(), "var": var.detach(), "cov": cov.detach()}


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor (logged, no gradient): mean over dimensions of the std of z over the global batch."""
    return gather_batch(z.detach().float()).std(dim=0).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()
