"""Students (shapes, torchvision compatibility), the projector and the squeeze module."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from squeezespan.errors import SnsError
from squeezespan.models import ARCHS, VARIANTS, Projector, SqueezeModule, build_student


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so comparisons in eval mode exercise every parameter and buffer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _torchvision_twin(arch: str, variant: str, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet with the documented swaps (conv1 / maxpool for CIFAR, fc -> Identity)."""
    tv = getattr(torchvision.models, arch)(weights=None)
    if variant == "cifar":
        tv.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        tv.maxpool = nn.Identity()
    elif in_channels != 3:
        tv.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    tv.fc = nn.Identity()
    return tv


EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_and_variant_gives_pooled_features(arch, variant):
    s = build_student(arch, variant, width=0.125, in_channels=3)
    assert s.feature_dim == 64 * EXPANSION[arch]  # 512 * 0.125 * expansion
    assert isinstance(s.fc, nn.Identity)
    size = 8 if variant == "cifar" else 32
    out = s(torch.randn(2, 3, size, size))
    assert out.shape == (2, s.feature_dim)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_any_input_channel_count(in_channels):
    s = build_student("resnet18", "cifar", width=0.25, in_channels=in_channels)
    assert s.conv1.weight.shape == (16, in_channels, 3, 3)
    assert s(torch.randn(2, in_channels, 8, 8)).shape == (2, 128)


def test_width_multiplier_scales_every_stage():
    s18 = build_student("resnet18", "imagenet", width=0.5)
    assert s18.conv1.out_channels == 32 and s18.feature_dim == 256
    assert [getattr(s18, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [32, 64, 128, 256]
    s50 = build_student("resnet50", "cifar", width=0.5)
    assert s50.feature_dim == 1024
    assert s50(torch.randn(2, 3, 4, 4)).shape == (2, 1024)


@pytest.mark.parametrize("variant,size,final", [("cifar", 32, 4), ("imagenet", 64, 2)])
def test_stem_downsampling_per_variant(variant, size, final):
    # CIFAR variant: stride-1 3x3 conv1 and no max-pool, so only the three stride-2 stages shrink the map.
    s = build_student("resnet18", variant, width=0.125)
    seen = {}
    s.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    s(torch.randn(1, 3, size, size))
    assert seen["shape"][-2:] == (final, final)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_matches_torchvision_imagenet_variant(arch):
    ours = {k: v.shape for k, v in build_student(arch, "imagenet").state_dict().items()}
    theirs = {k: v.shape for k, v in getattr(torchvision.models, arch)(weights=None).state_dict().items()}
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}
    assert ours == theirs


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_state_dict_matches_torchvision_cifar_variant_after_swap(arch):
    ours = {k: v.shape for k, v in build_student(arch, "cifar", in_channels=1).state_dict().items()}
    theirs = {k: v.shape for k, v in _torchvision_twin(arch, "cifar", in_channels=1).state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("arch,variant,size", [("resnet18", "cifar", 8), ("resnet50", "imagenet", 16)])
def test_same_function_as_torchvision_after_loading(arch, variant, size):
    # Same keys are not enough: strides and block order must match too, so compare outputs.
    torch.manual_seed(0)
    s = build_student(arch, variant)
    _randomise_bn(s)
    tv = _torchvision_twin(arch, variant)
    tv.load_state_dict(s.state_dict(), strict=True)
    s.eval(), tv.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(s(x), tv(x))


def test_unknown_arch_or_variant_lists_valid_values():
    with pytest.raises(SnsError, match="resnet18, resnet34, resnet50"):
        build_student("resnet19")
    with pytest.raises(SnsError, match="cifar, imagenet"):
        build_student("resnet18", "tiny")
    with pytest.raises(SnsError, match="width"):
        build_student("resnet18", "cifar", width=0)
    with pytest.raises(SnsError, match="in_channels"):
        build_student("resnet18", "cifar", in_channels=0)


def test_projector_layout_and_shapes():
    p = Projector(16, 32, 8, num_layers=5)
    linears = [m for m in p if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 32), (32, 32), (32, 8)]
    assert all(m.bias is None for m in linears)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in p) == 4
    assert isinstance(p[-1], nn.Linear)  # no BN/ReLU after the output layer
    assert p(torch.randn(4, 16)).shape == (4, 8) and p.out_dim == 8


def test_projector_single_layer_is_one_linear_map():
    p = Projector(16, 999, 8, num_layers=1)
    assert len(p) == 1 and isinstance(p[0], nn.Linear) and p[0].bias is None
    x = torch.randn(3, 16)
    torch.testing.assert_close(p(x), x @ p[0].weight.T)
    with pytest.raises(SnsError, match="num_layers"):
        Projector(16, 16, 8, num_layers=0)


def test_squeeze_module_shapes_with_maps_and_latent_tap():
    sq = SqueezeModule([8, 4, 6], hidden_dim=16, out_dim=12, depth=3)
    taps = [torch.randn(5, 8, 4, 4), torch.randn(5, 4, 8, 8), torch.randn(5, 6)]  # last: latent w
    out = sq(taps)
    assert out.shape == (5, 12) and sq.out_dim == 12
    assert sum(isinstance(m, nn.BatchNorm1d) for m in sq.mlp) == 2
    out.square().sum().backward()
    assert all(lat.weight.grad is not None and lat.weight.grad.abs().sum() > 0 for lat in sq.lateral)


def test_squeeze_depth_one_is_summed_laterals_then_linear():
    torch.manual_seed(0)
    sq = SqueezeModule([3, 2], hidden_dim=4, out_dim=5, depth=1)
    a, b = torch.randn(2, 3, 2, 2), torch.randn(2, 2)
    h = sq.lateral[0](a.mean(dim=(2, 3))) + sq.lateral[1](b)
    torch.testing.assert_close(sq([a, b]), sq.mlp(h))
    assert len(sq.mlp) == 1 and isinstance(sq.mlp[0], nn.Linear)


def test_squeeze_depth_zero_is_concatenated_pooled_features():
    sq = SqueezeModule([2, 3], depth=0)
    assert sq.out_dim == 5 and list(sq.parameters()) == []
    a = torch.arange(16.0).view(1, 2, 2, 4)  # channel means 3.5 and 11.5
    w = torch.tensor([[1.0, -2.0, 0.5]])
    torch.testing.assert_close(sq([a, w]), torch.tensor([[3.5, 11.5, 1.0, -2.0, 0.5]]))


def test_squeeze_ignores_where_a_feature_is():
    # Global pooling makes the target invariant to spatial rearrangement of the teacher's maps.
    sq = SqueezeModule([4], hidden_dim=8, out_dim=8, depth=2).eval()
    x = torch.randn(3, 4, 4, 4)
    shuffled = x.flatten(2)[:, :, torch.randperm(16)].view_as(x)
    torch.testing.assert_close(sq([x]), sq([shuffled]))


def test_squeeze_broadcast_latent_equals_w():
    sq = SqueezeModule([6], depth=0)
    w = torch.randn(2, 6)
    torch.testing.assert_close(sq([w.unsqueeze(1).expand(2, 7, 6)]), w)


def test_squeeze_rejects_taps_it_was_not_built_for():
    sq = SqueezeModule([8, 4], hidden_dim=8, out_dim=8)
    with pytest.raises(SnsError, match="got 1 teacher taps but was built for 2"):
        sq([torch.randn(2, 8, 4, 4)])
    with pytest.raises(SnsError, match=r"channels \[8, 5\]"):
        sq([torch.randn(2, 8, 4, 4), torch.randn(2, 5, 4, 4)])
    with pytest.raises(SnsError, match="empty"):
        SqueezeModule([])
