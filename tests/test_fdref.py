"""FD-ref: the Frechet formula against hand-computed cases, the metric's basic behaviour, the cached reference net."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from squeezespan.errors import SnsError
from squeezespan.eval.fdref import (
    ReferenceNet,
    fd_ref,
    feature_stats,
    frechet_distance,
    load_reference_net,
    train_reference_net,
)


def test_frechet_1d_hand_computed():
    # (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 4 + 4 + 1 - 4 = 5
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(
        5.0
    )


def test_frechet_diagonal_hand_computed():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()  # 5 + (1 + 0 + 4)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected) == pytest.approx(10.0)


def test_frechet_full_covariance_matches_matrix_sqrt():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    # tr(sqrt(S1 S2)) = sum of square roots of the (real, positive) eigenvalues of S1 S2.
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Identical Gaussians, even rank-deficient ones, are at distance ~0 (never a complex or NaN result).
    low_rank = a[:, :2] @ a[:, :2].T
    assert abs(frechet_distance(mu1, low_rank, mu1, low_rank)) < 1e-6


def test_frechet_shape_mismatch_is_a_clear_error():
    with pytest.raises(SnsError, match="matching shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(SnsError, match="at least 2"):
        feature_stats(torch.zeros(1, 4))


def test_fd_ref_identical_near_zero_and_grows_with_a_shift():
    torch.manual_seed(0)
    net = ReferenceNet(1, 16, 3, width=4).eval()
    g = torch.Generator().manual_seed(0)
    real = torch.rand(200, 1, 16, 16, generator=g) * 0.5
    other = torch.rand(200, 1, 16, 16, generator=g) * 0.5  # same distribution, other samples
    assert abs(fd_ref(real, real, net)) < 1e-6
    same_dist = fd_ref(real, other, net)
    shifted = fd_ref(real, (other + 0.4).clamp(0, 1), net)
    assert shifted > 5 * same_dist > 0
    # uint8 input is the same images as their float version.
    assert fd_ref(real, (other * 255).round().to(torch.uint8), net) == pytest.approx(
        fd_ref(real, (other * 255).round() / 255, net), rel=1e-4
    )


def test_reference_net_trains_caches_and_reloads(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    # Class 1 has a bright square in the top-left corner: a net can learn it in a few steps.
    images = (torch.rand(64, 1, 8, 8, generator=g) * 60).to(torch.uint8)
    images[labels == 1, :, :4, :4] += 180
    ds = SimpleNamespace(name="toy", images=images, labels=labels)
    logs = []
    net = train_reference_net(ds, epochs=4, batch_size=16, width=4, bf16=False, cache_dir=tmp_path, log=logs.append)
    assert net.meta["objective"] == "supervised" and net.feature_dim == 32
    cached = list(tmp_path.glob("toy-8px-1ch-*.safetensors"))
    assert len(cached) == 1
    again = train_reference_net(ds, epochs=4, batch_size=16, width=4, bf16=False, cache_dir=tmp_path)
    x = images.float() / 255
    with torch.no_grad():
        assert torch.equal(net.eval().features(x), again.features(x))
        assert torch.equal(load_reference_net(cached[0]).features(x), again.features(x))
    # Unlabelled data falls back to rotation prediction.
    unlabeled = SimpleNamespace(name="toy-u", images=images, labels=torch.full((64,), -1))
    rot = train_reference_net(unlabeled, epochs=1, batch_size=16, width=4, bf16=False, cache_dir=False)
    assert rot.meta["objective"] == "rotation"


def test_reference_net_errors():
    with pytest.raises(SnsError, match="uint8"):
        train_reference_net(SimpleNamespace(name="x", images=torch.rand(4, 1, 8, 8), labels=None), cache_dir=False)
    net = ReferenceNet(3, 8, 2, width=4)
    with pytest.raises(SnsError, match="3-channel"):
        net.features(torch.rand(2, 1, 8, 8))
