"""Tests for squeezespan.teachers.stylegan2: shapes, official names, resampling maths, truncation, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from squeezespan.errors import SnsError
from squeezespan.teachers import stylegan2 as sg2
from squeezespan.teachers.stylegan2 import (
    Discriminator,
    Generator,
    MinibatchStdLayer,
    build_stylegan2,
    conv2d_resample,
    downsample2d,
    grouped_modconv_is_faster,
    make_resample_filter,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)


def _tiny_g(res: int = 8, channels: int = 3, **kw) -> Generator:
    kw.setdefault("mapping_kwargs", dict(num_layers=2))
    kw.setdefault("synthesis_kwargs", dict(channel_base=64, channel_max=16))
    return Generator(z_dim=8, w_dim=8, img_resolution=res, img_channels=channels, **kw)


def _perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Fresh nets have zero biases and noise strengths, which would hide noise and bias mistakes.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return module


@pytest.mark.parametrize("res,channels", [(8, 3), (16, 1), (32, 3), (64, 1)])
def test_generator_and_discriminator_shapes(res, channels):
    torch.manual_seed(0)
    G, D = build_stylegan2(
        resolution=res, img_channels=channels, channel_base=64, channel_max=8, z_dim=8, w_dim=8, mbstd_group_size=2
    )
    z = torch.randn(4, 8)
    ws = G.mapping(z, None)
    assert ws.shape == (4, G.num_ws, 8)
    img = G(z, None, noise_mode="const")
    assert img.shape == (4, channels, res, res) and torch.isfinite(img).all()
    assert G.img_resolution == res and G.img_channels == channels and G.z_dim == 8 and G.c_dim == 0
    logits = D(img, None)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_num_ws_counts_convs_plus_last_torgb():
    # b4: 1 conv; every later block: 2 convs; the last torgb adds one (others share the next block's first w).
    assert _tiny_g(8).num_ws == 4
    assert _tiny_g(32).num_ws == 8


def test_generator_state_dict_keys_match_official_names():
    G = _tiny_g(8, channels=3, mapping_kwargs=dict(num_layers=2))
    layer = ["weight", "noise_strength", "bias", "resample_filter", "noise_const", "affine.weight", "affine.bias"]
    rgb = ["weight", "bias", "affine.weight", "affine.bias"]
    expected = {
        "synthesis.b4.const",
        "synthesis.b4.resample_filter",
        "synthesis.b8.resample_filter",
        "mapping.w_avg",
        "mapping.fc0.weight",
        "mapping.fc0.bias",
        "mapping.fc1.weight",
        "mapping.fc1.bias",
    }
    expected |= {f"synthesis.b4.conv1.{k}" for k in layer} | {f"synthesis.b4.torgb.{k}" for k in rgb}
    expected |= {f"synthesis.b8.conv{i}.{k}" for i in (0, 1) for k in layer} | {f"synthesis.b8.torgb.{k}" for k in rgb}
    sd = G.state_dict()
    assert set(sd) == expected
    assert sd["synthesis.b4.const"].shape == (16, 4, 4)
    assert sd["synthesis.b8.conv0.weight"].shape == (8, 16, 3, 3)  # channel_base 64 // 8 = 8 at 8px
    assert sd["synthesis.b8.conv0.affine.weight"].shape == (16, 8)  # (in_channels, w_dim)
    assert sd["synthesis.b8.torgb.weight"].shape == (3, 8, 1, 1)
    assert sd["synthesis.b8.conv1.noise_const"].shape == (8, 8)
    assert sd["synthesis.b8.conv1.noise_strength"].shape == ()
    assert sd["mapping.fc0.weight"].shape == (8, 8) and sd["mapping.w_avg"].shape == (8,)
    assert torch.allclose(
        sd["synthesis.b8.resample_filter"], torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64
    )


def test_discriminator_state_dict_keys_match_official_names():
    D = Discriminator(img_resolution=8, img_channels=1, channel_base=64, channel_max=16)
    conv = ["weight", "bias", "resample_filter"]
    expected = {
        "b8.resample_filter",
        "b8.skip.weight",
        "b8.skip.resample_filter",
        "b4.fc.weight",
        "b4.fc.bias",
        "b4.out.weight",
        "b4.out.bias",
    }
    expected |= {f"b8.{layer}.{k}" for layer in ("fromrgb", "conv0", "conv1") for k in conv}
    expected |= {f"b4.conv.{k}" for k in conv}
    sd = D.state_dict()
    assert set(sd) == expected
    assert sd["b8.fromrgb.weight"].shape == (8, 1, 1, 1)
    assert sd["b4.conv.weight"].shape == (16, 17, 3, 3)  # +1 input channel from minibatch-std
    assert sd["b4.out.weight"].shape == (1, 16)


def test_larger_nets_carry_the_named_keys():
    G, D = build_stylegan2(resolution=32, img_channels=3, channel_base=64, channel_max=8, c_dim=2)
    g, d = G.state_dict(), D.state_dict()
    for key in [
        "synthesis.b4.const",
        "synthesis.b8.conv0.affine.weight",
        "synthesis.b8.torgb.weight",
        "synthesis.b16.conv1.noise_const",
        "synthesis.b32.torgb.affine.bias",
        "mapping.fc0.weight",
        "mapping.fc1.bias",
        "mapping.w_avg",
        "mapping.embed.weight",
    ]:
        assert key in g, key
    for key in [
        "b32.fromrgb.weight",
        "b32.conv0.weight",
        "b16.conv1.bias",
        "b8.skip.weight",
        "b4.conv.weight",
        "b4.fc.weight",
        "b4.out.weight",
        "mapping.embed.weight",
        "mapping.fc7.weight",
    ]:
        assert key in d, key
    assert "b16.fromrgb.weight" not in d and "mapping.w_avg" not in d  # resnet D reads the image once


def test_official_kwarg_forms_build_the_same_network():
    # StyleGAN2-ADA pickles pass synthesis kwargs as a dict, StyleGAN3's copy passes them flat; fp16 is ignored.
    a = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=64, channel_max=16, num_fp16_res=4, conv_clamp=256),
    )
    b = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        channel_base=64,
        channel_max=16,
        num_fp16_res=4,
        conv_clamp=256,
        fused_modconv_default="inference_only",
    )
    b.load_state_dict(a.state_dict(), strict=True)
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(a.eval()(z, None, noise_mode="const"), b.eval()(z, None, noise_mode="const"))
    assert all(p.dtype == torch.float32 for p in a.parameters())


def test_upsample_of_an_impulse_is_the_scaled_filter():
    # Hand-computed: zero-stuff, pad (2, 1), filter taps [1,3,3,1]/8 per axis with gain 2 -> [.75, .75, .25, 0].
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1
    profile = torch.tensor([0.75, 0.75, 0.25, 0.0])
    assert torch.allclose(upsample2d(x, make_resample_filter()), profile.outer(profile)[None, None])


def test_downsample_of_a_constant_keeps_it_inside_and_darkens_borders():
    y = downsample2d(torch.ones(1, 2, 8, 8), make_resample_filter())
    profile = torch.tensor([7 / 8, 1, 1, 7 / 8])  # zero padding enters the border taps
    assert y.shape == (1, 2, 4, 4)
    assert torch.allclose(y[0, 1], profile.outer(profile))


def test_separable_filters_equal_their_2d_outer_product():
    x = torch.randn(2, 3, 9, 9)
    taps = torch.tensor([1.0, 2, 5, 7, 7, 5, 2, 1])
    f1 = make_resample_filter(taps.tolist())  # >= 8 taps stays 1D, as in the official setup
    assert f1.ndim == 1
    f2 = taps.outer(taps) / taps.sum() ** 2
    for kw in [dict(up=2, padding=[4, 3, 4, 3]), dict(down=2, padding=[3, 3, 3, 3])]:
        assert torch.allclose(upfirdn2d(x, f1, **kw), upfirdn2d(x, f2, **kw), atol=1e-6)


@pytest.mark.parametrize("kernel,flip", [(3, False), (1, False), (3, True)])
def test_conv_with_upsampling_equals_stuff_pad_filter_conv(kernel, flip):
    torch.manual_seed(0)
    x, w, f = torch.randn(2, 4, 5, 5), torch.randn(6, 4, kernel, kernel), make_resample_filter()
    pad = kernel // 2
    fast = conv2d_resample(x, w, f=f, up=2, padding=pad, flip_weight=flip)
    # Reference order: zero-stuff and pad, filter (gain 4), then a plain convolution.
    ref = upfirdn2d(x, f, up=2, padding=[pad + 2, pad + 1, pad + 2, pad + 1], gain=4)
    ref = F.conv2d(ref, w if flip else w.flip([2, 3]))
    assert fast.shape == (2, 6, 10, 10)
    assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize("kernel", [3, 1])
def test_conv_with_downsampling_equals_filter_conv_decimate(kernel):
    torch.manual_seed(0)
    x, w, f = torch.randn(2, 4, 8, 8), torch.randn(6, 4, kernel, kernel), make_resample_filter()
    pad = kernel // 2
    fast = conv2d_resample(x, w, f=f, down=2, padding=pad)
    ref = F.conv2d(upfirdn2d(x, f, padding=pad + 1), w)[:, :, ::2, ::2]
    assert fast.shape == (2, 6, 4, 4)
    assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize("grad", [True, False])  # without grad the unfused form demodulates from (N, I) sums
@pytest.mark.parametrize("up,demodulate", [(1, True), (2, True), (1, False)])
def test_fused_and_unfused_modulated_conv_agree(up, demodulate, grad):
    torch.manual_seed(0)
    x, w, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    noise = torch.randn(3, 1, 6 * up, 6 * up)
    kw = dict(
        noise=noise,
        up=up,
        padding=1,
        resample_filter=make_resample_filter(),
        demodulate=demodulate,
        flip_weight=(up == 1),
    )
    with torch.set_grad_enabled(grad):
        fused = modulated_conv2d(x, w, styles, fused_modconv=True, **kw)
        split = modulated_conv2d(x, w, styles, fused_modconv=False, **kw)
    assert torch.allclose(fused, split, atol=1e-5)
    if demodulate:  # demodulation makes the output invariant to the style's overall scale
        assert torch.allclose(modulated_conv2d(x, w, styles * 7, fused_modconv=True, **kw), fused, atol=1e-4)


def _images_and_block_features(G: Generator, z: torch.Tensor, noise_mode: str, **kw) -> list[torch.Tensor]:
    """G's images and every synthesis block's feature map (the teacher's default taps), noise drawn from seed 7."""
    feats = []
    hooks = [
        getattr(G.synthesis, f"b{r}").register_forward_hook(lambda m, i, o: feats.append(o[0]))
        for r in G.synthesis.block_resolutions
    ]
    torch.manual_seed(7)
    try:
        img = G(z, None, noise_mode=noise_mode, **kw)
    finally:
        for h in hooks:
            h.remove()
    return [img, *feats]


@pytest.mark.parametrize("noise_mode", ["const", "random"])
@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_sampling_in_either_form_gives_the_grouped_images_and_taps(noise_mode, arch, monkeypatch):
    # A frozen teacher samples (no grad) in the form its device runs faster; both must give what the grouped
    # form (NVIDIA's inference path, the official parity reference) gives: images and tapped block features.
    G = _perturb(_tiny_g(16, synthesis_kwargs=dict(channel_base=256, channel_max=16, architecture=arch))).eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        grouped = _images_and_block_features(G, z, noise_mode, fused_modconv=True)
        for faster_grouped in (False, True):
            monkeypatch.setattr(sg2, "grouped_modconv_is_faster", lambda device, answer=faster_grouped: answer)
            sampled = _images_and_block_features(G, z, noise_mode)
            assert len(sampled) == len(grouped) == 4
            for a, b in zip(sampled, grouped):
                assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


def test_sampling_on_a_cpu_runs_no_grouped_conv_and_training_keeps_the_per_sample_weights(monkeypatch):
    assert not grouped_modconv_is_faster(torch.device("cpu"))
    G = _perturb(_tiny_g(16, synthesis_kwargs=dict(channel_base=256, channel_max=16))).eval()
    z = torch.randn(5, 8)  # 5 images: a conv grouped per image has groups=5 (resampling filters: one per channel)
    seen, conv2d, conv_t = [], F.conv2d, F.conv_transpose2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: seen.append(k.get("groups", 1)) or conv2d(*a, **k))
    monkeypatch.setattr(F, "conv_transpose2d", lambda *a, **k: seen.append(k.get("groups", 1)) or conv_t(*a, **k))
    with torch.no_grad():
        G(z, None, noise_mode="const")
    assert seen and 5 not in seen
    seen.clear()
    G(z, None, noise_mode="const")  # eval with grad (a method differentiating through G): NVIDIA's grouped form
    assert 5 in seen


def test_training_gradients_equal_the_grouped_forms():
    # Training (grad enabled) differentiates through NVIDIA's per-sample weights in the unfused form; its
    # gradients must equal those of the grouped form, for the weights and for the input latents.
    G = _perturb(_tiny_g(16, synthesis_kwargs=dict(channel_base=256, channel_max=16)))
    ws = G.mapping(torch.randn(3, 8), None).detach()
    probe = torch.randn(3, 3, 16, 16)
    grads = []
    for fused in (False, True):
        G.zero_grad()
        w = ws.clone().requires_grad_(True)
        (G.train().synthesis(w, noise_mode="const", fused_modconv=fused) * probe).sum().backward()
        grads.append([w.grad] + [p.grad for p in G.synthesis.parameters()])
    unfused, grouped = grads
    assert all(g is not None for g in unfused)
    for a, b in zip(unfused, grouped):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert G.synthesis.b16.conv1.weight.grad.abs().sum() > 0


def test_train_and_eval_modes_give_the_same_image():
    # eval samples in the device's faster form, train uses the unfused form: the image must not depend on it.
    G = _perturb(_tiny_g(16))
    z = torch.randn(3, 8)
    with torch.no_grad():
        a = G.eval()(z, None, noise_mode="const")
        b = G.train()(z, None, noise_mode="const")
    assert torch.allclose(a, b, atol=1e-5)


def test_noise_modes_and_determinism():
    G = _perturb(_tiny_g(16)).eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        const = G(z, None, noise_mode="const")
        assert torch.equal(const, G(z, None, noise_mode="const"))
        assert not torch.allclose(G(z, None, noise_mode="random"), G(z, None, noise_mode="random"))
        assert not torch.allclose(G(z, None, noise_mode="none"), const)
    with pytest.raises(SnsError, match="noise_mode"):
        G(z, None, noise_mode="fixed")


def test_truncation_pulls_ws_towards_w_avg():
    G = _perturb(_tiny_g(16)).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(8))
    z = torch.randn(3, 8)
    ws = G.mapping(z, None)
    assert torch.allclose(G.mapping(z, None, truncation_psi=0), G.mapping.w_avg.expand_as(ws))
    half = G.mapping(z, None, truncation_psi=0.5)
    assert torch.allclose(half, (ws + G.mapping.w_avg) / 2, atol=1e-6)
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], half[:, :2], atol=1e-6) and torch.equal(cut[:, 2:], ws[:, 2:])
    with torch.no_grad():  # psi = 0 makes every z give the same image
        img = G(z, None, truncation_psi=0, noise_mode="const")
    assert torch.allclose(img[0], img[1], atol=1e-5)


def test_w_avg_moves_only_when_update_emas():
    G = _perturb(_tiny_g(8)).train()
    z = torch.randn(6, 8)
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros(8))
    ws = G.mapping(z, None, update_emas=True)
    assert torch.allclose(G.mapping.w_avg, ws[:, 0].detach().mean(0) * (1 - 0.995), atol=1e-6)


def test_conditional_generator_uses_labels():
    G = _perturb(_tiny_g(8, c_dim=3)).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    c = torch.eye(3)[:2]
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
    assert not torch.allclose(img[0], img[1])
    with pytest.raises(SnsError, match=r"c must be \(N, 3\)"):
        G(z, None)


def test_minibatch_std_hand_computed():
    # Official grouping: sample i joins group i % (N // G). Groups {0, 2} -> values (0, 4), {1, 3} -> (1, 1).
    x = torch.tensor([0.0, 1, 4, 1]).reshape(4, 1, 1, 1)
    y = MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (4, 2, 1, 1)
    assert torch.allclose(y[:, 1].flatten(), torch.tensor([2.0, 1e-4, 2.0, 1e-4]))
    with pytest.raises(SnsError, match="divisible by mbstd_group_size"):
        MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 4, 4))


@pytest.mark.parametrize("g_arch,d_arch", [("skip", "resnet"), ("resnet", "skip"), ("orig", "orig")])
def test_architectures_train_end_to_end(g_arch, d_arch):
    torch.manual_seed(0)
    G, D = build_stylegan2(
        resolution=16,
        img_channels=3,
        channel_base=64,
        channel_max=8,
        z_dim=8,
        w_dim=8,
        mbstd_group_size=2,
        g_architecture=g_arch,
        d_architecture=d_arch,
    )
    G.train(), D.train()
    loss = F.softplus(-D(G(torch.randn(4, 8), None), None)).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters() if p.requires_grad)
    assert G.synthesis.b8.conv0.weight.grad.abs().sum() > 0


def test_conv_clamp_bounds_the_orig_architecture_image():
    G = _perturb(
        _tiny_g(16, synthesis_kwargs=dict(channel_base=64, channel_max=16, conv_clamp=0.25, architecture="orig"))
    )
    with torch.no_grad():
        img = G.eval()(torch.randn(3, 8) * 5, None, noise_mode="const")
    assert img.abs().max() <= 0.25 + 1e-6


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(SnsError, match="power of two"):
        Generator(img_resolution=24)
    with pytest.raises(SnsError, match="power of two"):
        Discriminator(img_resolution=2)
    with pytest.raises(SnsError, match="architecture"):
        build_stylegan2(g_architecture="stylegan3")
    G = _tiny_g(8)
    with pytest.raises(SnsError, match=r"z must be \(N, 8\)"):
        G(torch.randn(2, 7), None)
    with pytest.raises(SnsError, match=r"images must be \(N, 3, 32, 32\)"):
        Discriminator()(torch.randn(2, 3, 16, 16))
