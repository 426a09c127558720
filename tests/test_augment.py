"""Tests for squeezespan.data.augment: per-sample parameters, seeding, ranges, grayscale, config errors."""

from __future__ import annotations

import pytest
import torch

from squeezespan.data.augment import Augment, AugmentConfig, default_blur_kernel
from squeezespan.errors import SnsError


def _image(channels: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    # A smooth, asymmetric image: crops, flips and colour changes all change it visibly.
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _distinct(y: torch.Tensor) -> int:
    return len({tuple(row.tolist()) for row in y.flatten(1).mul(1e4).round()})


@pytest.mark.parametrize("channels", [3, 1])
def test_per_sample_params_differ_within_batch_per_batch_params_do_not(channels):
    x = _image(channels).repeat(8, 1, 1, 1)
    torch.manual_seed(1)
    y = Augment(AugmentConfig(per_sample=True), channels, 16)(x)
    assert _distinct(y) == 8  # each copy of the same image got its own crop/colour
    torch.manual_seed(1)
    y = Augment(AugmentConfig(per_sample=False), channels, 16)(x)
    assert _distinct(y) == 1  # the reference behaviour: one parameter set for the batch
    assert not torch.allclose(y[0], x[0])


def test_same_seed_same_output_and_generator_leaves_global_rng_alone():
    aug = Augment(AugmentConfig(), 3, 16)
    x = torch.cat([_image(3, seed=s) for s in range(4)])
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(aug(x), a)  # the RNG moved on: a new draw

    state = torch.get_rng_state()
    c = aug(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(c, aug(x, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(c, aug(x, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_device_and_range(channels, dtype):
    torch.manual_seed(0)
    x = torch.rand(6, channels, 16, 16).to(dtype)
    x[0] = 1.0  # saturated pixels: brightness > 1 and blur must not push past 1
    x[1] = 0.0
    y = Augment(AugmentConfig(jitter_p=1.0, blur_p=1.0), channels, 16)(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_resizes_to_the_target_resolution():
    y = Augment(AugmentConfig(), 1, 8)(torch.rand(2, 1, 20, 20))
    assert y.shape == (2, 1, 8, 8)


def test_grayscale_images_get_only_brightness_and_contrast():
    aug = Augment(AugmentConfig(), 1, 16)
    names = [name for name, _ in aug.pipeline.named_children()]
    assert "grayscale" not in names
    assert (aug.pipeline.jitter.saturation, aug.pipeline.jitter.hue) == (0.0, 0.0)
    assert aug.pipeline.jitter.brightness == 0.4 and aug.pipeline.jitter.contrast == 0.4
    # Jitter alone (no crop movement, no flip): a constant image stays constant but changes its level.
    only_jitter = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=1.0, flip_p=0.0, blur_p=0.0)
    torch.manual_seed(0)
    y = Augment(only_jitter, 1, 16)(torch.full((4, 1, 16, 16), 0.5))
    assert y.shape == (4, 1, 16, 16)
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), atol=1e-5)
    assert not torch.allclose(y, torch.full_like(y, 0.5))


def test_hue_jitter_keeps_brightness_of_gray_and_changes_colour():
    cfg = AugmentConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter=(0.0, 0.0, 0.0, 0.5),
        jitter_p=1.0,
        grayscale_p=0.0,
        flip_p=0.0,
        blur_p=0.0,
    )
    x = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1).expand(4, 3, 8, 8).contiguous()
    torch.manual_seed(0)
    y = Augment(cfg, 3, 8)(x)
    assert not torch.allclose(y, x, atol=1e-3)
    # A hue rotation permutes/blends channel values but keeps max and min of the pixel (HSV value/chroma).
    assert torch.allclose(y.amax(1), x.amax(1), atol=1e-4)
    assert torch.allclose(y.amin(1), x.amin(1), atol=1e-4)


def test_colour_jitter_follows_torchvision_formulas():
    # Guards the ColorJitter (torchvision semantics) vs ColorJiggle (additive brightness) choice.
    tvf = pytest.importorskip("torchvision.transforms.functional")
    jitter = Augment(AugmentConfig(jitter_p=1.0), 3, 8).pipeline.jitter
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    y = jitter(x)
    p = jitter._params
    steps = [tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue]
    keys = ["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]
    for i in range(4):
        expected = x[i]
        for step in p["order"].tolist():
            expected = steps[step](expected, float(p[keys[step]][i]))
        assert torch.allclose(y[i], expected, atol=1e-4)


def test_disabled_is_identity():
    x = torch.rand(3, 3, 12, 12)
    y = Augment(AugmentConfig(enabled=False), 3, 32)(x)
    assert torch.equal(y, x)
    assert Augment(AugmentConfig(enabled=False), 3, 12)(x.bfloat16()).dtype == torch.float32


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(SnsError, match=r"\(N, 3, H, W\)"):
        Augment(AugmentConfig(), 3, 16)(torch.rand(2, 1, 16, 16))


def test_blur_kernel_is_about_ten_percent_and_odd():
    assert [default_blur_kernel(r) for r in (8, 32, 64, 96, 224)] == [3, 3, 7, 9, 23]
    assert Augment(AugmentConfig(), 3, 96).pipeline.blur.flags["kernel_size"] == (9, 9)
    assert "blur" not in dict(Augment(AugmentConfig(blur_p=0.0), 3, 32).pipeline.named_children())


def test_config_from_dict():
    cfg = AugmentConfig.from_dict({"crop_scale": [0.08, 1], "blur_p": 0, "per_sample": False, "blur_kernel": 5})
    assert cfg.crop_scale == (0.08, 1.0) and cfg.blur_p == 0.0 and cfg.per_sample is False and cfg.blur_kernel == 5
    assert cfg.jitter == (0.4, 0.4, 0.4, 0.1)  # untouched keys keep the paper's defaults
    assert AugmentConfig.from_dict(None) == AugmentConfig()


def test_config_unknown_key_names_it_and_the_valid_ones():
    with pytest.raises(SnsError, match=r"unknown key 'crop_scales'.*crop_scale.*per_sample"):
        AugmentConfig.from_dict({"crop_scales": [0.2, 1.0]})


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"crop_scale": [0.5, 0.2]}, "crop_scale"),
        ({"crop_scale": [0.0, 1.0]}, "crop_scale"),
        ({"crop_scale": [0.2, 1.5]}, "crop_scale"),
        ({"crop_scale": 0.2}, "crop_scale"),
        ({"jitter": [0.4, 0.4, 0.4]}, "jitter"),
        ({"jitter": [0.4, 0.4, 0.4, 0.7]}, "jitter"),
        ({"jitter": [-0.1, 0.4, 0.4, 0.1]}, "jitter"),
        ({"jitter_p": 1.5}, "jitter_p"),
        ({"flip_p": True}, "flip_p"),
        ({"blur_sigma": [2.0, 0.1]}, "blur_sigma"),
        ({"blur_kernel": 4}, "blur_kernel"),
        ({"per_sample": "yes"}, "per_sample"),
    ],
)
def test_config_bad_values_name_the_key(bad, key):
    with pytest.raises(SnsError, match=f"'{key}'"):
        AugmentConfig.from_dict(bad)
