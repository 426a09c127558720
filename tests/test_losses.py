"""Loss terms against hand-computed values, and the objectives' combination rules."""

import math

import torch

from squeezespan.methods import losses


def test_variance_hinge_hand_computed():
    # column 0: values 0, 2 -> var 2 (unbiased) -> std sqrt(2 + 1e-4) > 1 -> hinge 0
    # column 1: values 1, 1 -> var 0 -> std sqrt(1e-4) = 0.01 -> hinge 0.99
    z = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    assert math.isclose(losses.variance(z).item(), (0 + (1 - 0.01)) / 2, rel_tol=1e-6)


def test_covariance_hand_computed():
    # x = [1, 2, 3], y = [2, 4, 6]: cov(x, y) = 2, off-diagonal entries both 2 -> (4 + 4) / D=2 = 4
    z = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert math.isclose(losses.covariance(z).item(), 4.0, rel_tol=1e-6)
    # decorrelated columns have no covariance penalty
    w = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert losses.covariance(w).item() == 0.0


def test_invariance_is_mse():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 2.0]])
    assert losses.invariance(a, b).item() == 2.0  # (4 + 0) / 2


def test_vicreg_weights_terms_as_paper():
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    total, parts = losses.vicreg(z1, z2, w_mse=25, w_var=25, w_cov=1)
    expect = (
        25 * losses.invariance(z1, z2)
        + 25 * (losses.variance(z1) + losses.variance(z2))
        + losses.covariance(z1)
        + losses.covariance(z2)
    )
    assert torch.allclose(total, expect)
    assert set(parts) == {"inv", "var", "cov"}


def test_squeeze_loss_penalises_student_statistics_only():
    torch.manual_seed(0)
    zf, zg = torch.randn(16, 8), torch.zeros(16, 8)
    total, _ = losses.squeeze(zf, zg, 25, 25, 1)
    expect = 25 * (zf**2).mean() + 25 * losses.variance(zf) + losses.covariance(zf)
    assert torch.allclose(total, expect)


def test_negative_cosine_stops_gradient_on_target():
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = losses.negative_cosine(p, z)
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is None and p.grad is not None
    assert losses.negative_cosine(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item() == -1.0


def test_w_var_half_is_the_official_vicreg_halved_variance():
    """docs/method.md: official VICReg and lightly average the two views' variance terms; w_var=12.5 here is
    exactly that loss (written out independently of losses.vicreg)."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 8) * 0.3, torch.randn(16, 8) * 2.0  # one view collapses a little: the hinge bites

    def std_hinge(z):
        return torch.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()

    def cov_term(z):
        zc = z - z.mean(dim=0)
        c = zc.T @ zc / (z.shape[0] - 1)
        return (c - torch.diag(torch.diag(c))).pow(2).sum() / z.shape[1]

    official = 25 * torch.nn.functional.mse_loss(z1, z2) + 25 * (std_hinge(z1) + std_hinge(z2)) / 2
    official = official + 1.0 * (cov_term(z1) + cov_term(z2))
    ours, _ = losses.vicreg(z1, z2, w_mse=25.0, w_var=12.5, w_cov=1.0)
    assert torch.allclose(ours, official, rtol=1e-5)
