"""Evaluation: weighted kNN, linear probes (fast and paper), feature extraction, baselines, results table."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from squeezespan.data import ImageDataset
from squeezespan.errors import SnsError
from squeezespan.eval import (
    KNN_CAP_FRACTION,
    CropFlip,
    RawPixels,
    capped_k,
    evaluate,
    extract_features,
    format_table,
    knn_eval,
    knn_predict,
    knn_settings,
    linear_probe,
    linear_probe_augmented,
    random_init_student,
)


def blobs(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    """Gaussian blobs around well separated class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 10
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def tiny_dataset(
    n: int = 40, channels: int = 3, resolution: int = 8, num_classes: int = 2, seed: int = 0, unlabelled: int = 0
) -> ImageDataset:
    """Images whose brightness encodes the class (plus noise), so a backbone that pools can tell classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    level = 40 + 160 * y.float() / max(num_classes - 1, 1)
    x = level.view(-1, 1, 1, 1) + 20 * torch.randn(n, channels, resolution, resolution, generator=g)
    images = x.clamp(0, 255).to(torch.uint8)
    labels = torch.cat([y, torch.full((unlabelled,), -1)])
    if unlabelled:
        images = torch.cat([images, images[:unlabelled]])
    return ImageDataset(
        "tiny",
        "train",
        [images],
        labels,
        [str(c) for c in range(num_classes)],
        (0.5,) * channels,
        (0.25,) * channels,
        channels,
        resolution,
    )


class SmallNet(nn.Module):
    """conv -> BN -> ReLU -> global pool: enough to check modes, BN statistics and dtypes."""

    def __init__(self, channels: int = 3, dim: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(channels, dim, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
        self.bn = nn.BatchNorm2d(dim)
        self.modes_seen = []

    def forward(self, x):
        self.modes_seen.append(self.training)
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------- kNN


def test_knn_hand_computed_weighted_vote():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # third row is normalised inside
    bank_y = torch.tensor([0, 1, 2])
    queries = torch.tensor([[1.0, 0.2], [0.1, 1.0]])
    t = 0.1

    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))

    expected = torch.zeros(2, 7)
    for i, q in enumerate([(1.0, 0.2), (0.1, 1.0)]):
        for p, label in [((1, 0), 0), ((0, 1), 1), ((1, 1), 2)]:
            expected[i, label] = math.exp(cos(q, p) / t)
    # k larger than the bank is clipped: all three points vote
    scores = knn_predict(bank, bank_y, queries, k=200, t=t, num_classes=7)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)

    # k = 2: the query (1, 0.2) hears only from (1, 0) and (1, 1), so class 1 gets no vote
    two = knn_predict(bank, bank_y, queries[:1], k=2, t=t, num_classes=7)
    torch.testing.assert_close(two[0], expected[0] * torch.tensor([1.0, 0, 1, 0, 0, 0, 0]), rtol=1e-5, atol=0)

    # query 0 is labelled 2 (ranked second: top-1 miss, top-5 hit), query 1 labelled 1 (ranked first)
    acc = knn_eval(bank, bank_y, queries, torch.tensor([2, 1]), k=200, t=t, num_classes=7)
    assert acc == {"top1": 50.0, "top5": 100.0}


def test_knn_chunking_does_not_change_scores():
    f, y = blobs(20, 4, 6, spread=8.0, seed=1)
    q = torch.randn(33, 6, generator=torch.Generator().manual_seed(2))
    whole = knn_predict(f, y, q, k=15, t=0.1, chunk=1024)
    chunked = knn_predict(f, y, q, k=15, t=0.1, chunk=5)
    torch.testing.assert_close(chunked, whole)


def test_knn_separable_blobs_near_perfect_and_random_labels_near_chance():
    train_f, train_y = blobs(60, 5, 16, spread=1.0, seed=0)
    test_f, test_y = blobs(20, 5, 16, spread=1.0, seed=0)
    test_f = test_f + 0.1 * torch.randn(test_f.shape, generator=torch.Generator().manual_seed(3))
    assert knn_eval(train_f, train_y, test_f, test_y) == {"top1": 100.0, "top5": 100.0}

    g = torch.Generator().manual_seed(4)
    rand_f, rand_q = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    rand_y, rand_qy = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    acc = knn_eval(rand_f, rand_y, rand_q, rand_qy)
    assert 5.0 < acc["top1"] < 16.0 and 40.0 < acc["top5"] < 60.0


def test_knn_rejects_unlabelled_and_mismatched_inputs():
    f, y = blobs(5, 2, 4, spread=1.0, seed=0)
    with pytest.raises(SnsError, match="unlabelled"):
        knn_eval(f, torch.full_like(y, -1), f, y)
    with pytest.raises(SnsError, match="dims"):
        knn_eval(f, y, f[:, :3], y)
    with pytest.raises(SnsError, match="num_classes"):
        knn_eval(f, y, f, y, num_classes=1)


# -------------------------------------------------------------------------------------- linear probes


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_linear_probe_separable_and_deterministic(solver):
    train_f, train_y = blobs(40, 4, 12, spread=2.0, seed=0)
    test_f, test_y = blobs(10, 4, 12, spread=2.0, seed=0)
    kw = dict(epochs=20, solver=solver, seed=3)
    first = linear_probe(train_f, train_y, test_f, test_y, **kw)
    assert first["top1"] == 100.0 and first["train_top1"] == 100.0 and first["top5"] == 100.0
    assert linear_probe(train_f, train_y, test_f, test_y, **kw) == first


def test_linear_probe_chance_on_random_labels_and_bad_solver():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(600, 8, generator=g), torch.randint(0, 4, (600,), generator=g)
    acc = linear_probe(f[:400], y[:400], f[400:], y[400:], epochs=10)
    assert acc["top1"] < 40.0
    with pytest.raises(SnsError, match="solver"):
        linear_probe(f, y, f, y, solver="adam")


def test_paper_protocol_runs_one_epoch_with_frozen_backbone():
    train, test = tiny_dataset(48, seed=0), tiny_dataset(16, seed=1)
    net = SmallNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    augment = CropFlip(generator=torch.Generator().manual_seed(0))
    result = linear_probe_augmented(net, train, test, augment, epochs=1, batch_size=16, progress=False)
    assert set(result) == {"top1", "top5", "train_top1"}
    assert all(0.0 <= v <= 100.0 for v in result.values())
    # frozen: no weight nor BN statistic moved, every forward in eval mode, train mode given back
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.modes_seen and not any(net.modes_seen) and net.training


def test_crop_flip_shapes_identity_and_seeded():
    x = torch.rand(6, 3, 10, 10)
    out = CropFlip(generator=torch.Generator().manual_seed(0))(x)
    assert out.shape == x.shape and 0.0 <= out.min() and out.max() <= 1.0
    again = CropFlip(generator=torch.Generator().manual_seed(0))(x)
    torch.testing.assert_close(out, again)
    whole = CropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)(x)
    torch.testing.assert_close(whole, x)
    mirrored = CropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)(x)
    torch.testing.assert_close(mirrored, x.flip(-1))


# ------------------------------------------------------------------------------------ feature extraction


def test_extract_features_shapes_normalisation_and_batches():
    ds = tiny_dataset(10, channels=2, resolution=4)
    feats, labels = extract_features(RawPixels(2, 4), ds, batch_size=3)
    assert feats.shape == (10, 2 * 4 * 4) and feats.dtype == torch.float32
    assert torch.equal(labels, ds.labels)
    expected = ((ds.images.float() / 255 - 0.5) / 0.25).flatten(1)
    torch.testing.assert_close(feats, expected)
    raw, _ = extract_features(RawPixels(2, 4), ds, normalize=False)
    torch.testing.assert_close(raw, (ds.images.float() / 255).flatten(1))


def test_extract_features_restores_modes_and_keeps_bn_statistics():
    net = SmallNet().train()
    net.bn.eval()  # a submodule in a different mode than its parent must come back that way
    mean_before = net.bn.running_mean.clone()
    feats, _ = extract_features(net, tiny_dataset(12), batch_size=5)
    assert feats.shape == (12, 8)
    assert net.modes_seen == [False, False, False]
    assert net.training and not net.bn.training
    assert torch.equal(net.bn.running_mean, mean_before)


def test_extract_features_bf16_matches_float32():
    net, ds = SmallNet(), tiny_dataset(8)
    full, _ = extract_features(net, ds)
    half, _ = extract_features(net, ds, bf16=True)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)


def test_extract_features_rejects_unpooled_output():
    with pytest.raises(SnsError, match=r"\(N, D\)"):
        extract_features(nn.Identity(), tiny_dataset(4))


# ------------------------------------------------------------------------------------------- baselines


def test_raw_pixels_dims_and_pooling():
    assert RawPixels(3, 32)(torch.zeros(2, 3, 32, 32)).shape == (2, 3072)
    big = RawPixels(3, 96)  # 27648 dims would exceed 4096: average-pooled to 36 x 36
    assert big.side == 36 and big(torch.zeros(2, 3, 96, 96)).shape == (2, big.feature_dim) == (2, 3888)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(RawPixels(1, 4, max_dim=4)(x), torch.tensor([[2.5, 4.5, 10.5, 12.5]]))
    with pytest.raises(SnsError, match="RawPixels"):
        RawPixels(3, 32)(torch.zeros(2, 1, 32, 32))


def test_random_init_student_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = random_init_student("resnet18", "cifar", width=0.125, in_channels=1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = random_init_student("resnet18", "cifar", width=0.125, in_channels=1, seed=5)
    c = random_init_student("resnet18", "cifar", width=0.125, in_channels=1, seed=6)
    assert not a.training
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


# -------------------------------------------------------------------------------------- evaluate, table


def test_evaluate_fast_drops_unlabelled_and_writes_json_ready_results():
    train, test = tiny_dataset(30, unlabelled=7), tiny_dataset(10, seed=1)
    result = evaluate(None, train, test, linear_kw={"epochs": 5})
    assert result["train"]["n"] == 30 and result["feature_dim"] == 3 * 8 * 8
    assert result["knn"]["top1"] == 100.0 and result["linear"]["top1"] == 100.0
    assert result["linear"]["epochs"] == 5 and result["linear"]["solver"] == "lbfgs"
    json.dumps(result)
    table = format_table([result, {"backbone": "other", "knn": {"top1": 12.345, "top5": 50.0}, "time_s": 3.0}])
    lines = table.splitlines()
    assert len(lines) == 4 and "raw-pixels" in lines[2] and "100.00" in lines[2]
    assert "| other | - | 12.35 | 50.00 | - | - | 3.0 |" == lines[3]


def test_evaluate_paper_protocol_and_bad_protocol():
    train, test = tiny_dataset(24), tiny_dataset(8, seed=1)
    result = evaluate(
        SmallNet(), train, test, protocol="paper", knn=False, linear_kw={"epochs": 1, "batch_size": 8}, name="small"
    )
    assert result["name"] == "small" and result["knn"] is None and result["linear"]["lr"] == 30.0
    with pytest.raises(SnsError, match="protocol"):
        evaluate(None, train, test, protocol="slow")


# ------------------------------------------------------------------------ kNN that fits the bank (issue 26)


def test_knn_k_is_capped_by_the_smallest_class_of_the_bank():
    y = torch.arange(3).repeat_interleave(5)  # 3 classes of 5 images
    assert capped_k(200, y, fraction=1.0) == 5  # min(k, smallest class)
    assert capped_k(200, y, fraction=0.0) == 15  # no cap: clipped to the bank only
    assert capped_k(3, y, fraction=1.0) == 3  # a small k is kept
    assert capped_k(200, y, fraction=0.1) == 1  # never below one neighbour
    uneven = torch.tensor([0] * 7 + [1] * 3 + [2] * 9 + [-1] * 50)  # unlabelled rows are no class
    assert capped_k(200, uneven, fraction=1.0) == 3
    assert capped_k(200, uneven, fraction=0.5) == 1
    # the shipped rule: CIFAR-10/100 banks (5000/500 per class) keep k=200, digits (138-147) are capped
    assert capped_k(200, torch.arange(10).repeat_interleave(5000)) == 200
    assert capped_k(200, torch.arange(100).repeat_interleave(500)) == 200
    counts = torch.tensor([142, 146, 141, 147, 145, 146, 145, 143, 138, 144])
    bank = torch.arange(10).repeat_interleave(counts)
    assert capped_k(200, bank) == math.floor(KNN_CAP_FRACTION * 138) == 55
    with pytest.raises(SnsError, match="k >= 1"):
        capped_k(0, y)


def test_knn_eval_cap_votes_with_the_capped_k():
    f, y = blobs(5, 3, 4, spread=6.0, seed=0)
    q, qy = blobs(4, 3, 4, spread=6.0, seed=1)
    k = capped_k(200, y, fraction=1.0)
    assert knn_eval(f, y, q, qy, k=200, cap=1.0) == knn_eval(f, y, q, qy, k=k)
    torch.testing.assert_close(knn_predict(f, y, q, k=k), knn_predict(f, y, q, k=5))


def test_evaluate_names_the_k_used_t_and_the_rule_in_its_json():
    train, test = tiny_dataset(30, num_classes=3, unlabelled=4), tiny_dataset(9, num_classes=3, seed=1)
    result = json.loads(json.dumps(evaluate(None, train, test, linear=False, k=200, t=0.07, knn_cap=1.0)))
    knn = result["knn"]
    assert knn["k"] == 10 and knn["t"] == 0.07 and knn["knn_k"] == 200 and knn["cap"] == 1.0
    assert knn["bank"] == 30 and knn["smallest_class"] == 10 and "smallest class" in knn["rule"]
    assert result["bf16"] is False
    # evaluate() caps only when asked (bench/ passes its own k and reads uncapped numbers)
    plain = evaluate(None, train, test, linear=False, k=200)["knn"]
    assert plain["k"] == 30 and plain["cap"] == 0.0 and plain["rule"] == "k = min(knn_k, bank size)"
    assert knn_settings(200, 0.1, train.labels, 0.5)["k"] == 5


def test_sns_eval_json_names_k_and_t(tmp_path):
    from squeezespan.config import resolve_config
    from squeezespan.eval.run import EVAL_DEFAULTS, run_eval

    over = ["backbones=[raw]", "resolution=8", "linear_epochs=2", "device=cpu"]
    cfg = resolve_config(EVAL_DEFAULTS, "eval", overrides=over)
    run_eval(cfg, tmp_path, progress=False, log=lambda *a: None)
    out = json.loads((tmp_path / "eval.json").read_text())
    knn = out["results"][0]["knn"]
    assert out["bf16"] is False and EVAL_DEFAULTS["knn_cap"] == KNN_CAP_FRACTION
    assert knn["t"] == 0.1 and knn["knn_k"] == 200 and knn["smallest_class"] == 138  # digits' smallest class
    assert knn["k"] == math.floor(KNN_CAP_FRACTION * 138)
