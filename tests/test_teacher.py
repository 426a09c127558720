"""Tests for squeezespan.teachers.teacher: taps, tuple outputs, w tap, determinism, no grad, bf16, errors, factories."""

from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from squeezespan.errors import SnsError
from squeezespan.teachers import Generator, Teacher


def _tiny_g(res: int = 16, c_dim: int = 0, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=6,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=64, channel_max=8),
    )
    with torch.no_grad():  # non-zero biases, noise strengths and w_avg, so mistakes show
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        G.mapping.w_avg.normal_()
    return G


class TupleBlock(nn.Module):
    """Returns (narrow image-like tensor, wide feature map): the wide one must be tapped."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        return x[:, :1], self.conv(x)


class PlainG(nn.Module):
    """A generic generator called as G(z), with images in [0, 1]."""

    def __init__(self, z_dim: int = 5, out_channels: int = 3, flat: bool = False):
        super().__init__()
        self.fc = nn.Linear(z_dim, 4 * 8 * 8)
        self.block = TupleBlock()
        self.to_img = nn.Conv2d(6, out_channels, 1)
        self.flat = flat

    def forward(self, z):
        x = self.fc(z).reshape(-1, 4, 8, 8)
        _, feat = self.block(x)
        img = torch.sigmoid(self.to_img(feat))
        return img.flatten(1) if self.flat else img


def test_default_taps_are_the_synthesis_blocks_with_their_feature_maps():
    G = _tiny_g(32)
    teacher = Teacher(G)
    assert teacher.feature_names == ["synthesis.b4", "synthesis.b8", "synthesis.b16", "synthesis.b32"]
    assert teacher.feature_shapes == [(8, 4, 4), (8, 8, 8), (4, 16, 16), (2, 32, 32)]
    assert teacher.feature_channels == [8, 8, 4, 2] and teacher.z_dim == 8 and teacher.image_shape == (3, 32, 32)
    images, feats = teacher.sample(3, seed=0)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # Same z through the network by hand: taps are each block's x (not its 3-channel img), images are (G + 1) / 2.
    z = teacher.draw_z(3, seed=0)
    with torch.no_grad():
        ws = G.mapping(z, None)
        x = img = None
        idx = 0
        for res, feat in zip(G.synthesis.block_resolutions, feats):
            block = getattr(G.synthesis, f"b{res}")
            x, img = block(x, img, ws.narrow(1, idx, block.num_conv + block.num_torgb), noise_mode="const")
            idx += block.num_conv
            assert torch.allclose(feat, x, atol=1e-6)
    assert torch.allclose(images, ((img + 1) / 2).clamp(0, 1), atol=1e-6)


def test_tuple_outputs_give_the_widest_tensor_and_generic_generators_work():
    G = PlainG()
    teacher = Teacher(G, taps=r"block", z_dim=5, output_range=(0, 1))
    images, (feat,) = teacher.sample(2, seed=1)
    assert feat.shape == (2, 6, 8, 8)
    z = teacher.draw_z(2, seed=1)
    with torch.no_grad():
        assert torch.allclose(images, G(z)) and torch.allclose(feat, G.block(G.fc(z).reshape(-1, 4, 8, 8))[1])


def test_regex_that_matches_nothing_lists_the_modules():
    with pytest.raises(SnsError, match=r"matches no module.*synthesis\.b8\.conv0.*mapping\.fc1"):
        Teacher(_tiny_g(8), taps=r"synthesis\.block\d+")
    with pytest.raises(SnsError, match="does not compile"):
        Teacher(_tiny_g(8), taps=r"synthesis\.b(")
    with pytest.raises(SnsError, match="matches no module"):  # full match: a prefix is not enough
        Teacher(_tiny_g(8), taps=r"synthesis\.b")


def test_sample_is_deterministic_under_a_seed_or_generator():
    teacher = Teacher(_tiny_g(16))
    a_img, a_feat = teacher.sample(4, seed=7)
    b_img, b_feat = teacher.sample(4, seed=7)
    assert torch.equal(a_img, b_img) and all(torch.equal(x, y) for x, y in zip(a_feat, b_feat))
    assert not torch.allclose(teacher.sample(4, seed=8)[0], a_img)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = teacher.sample(2, generator=g1)[0]
    assert torch.equal(first, teacher.sample(2, generator=g2)[0])
    assert not torch.equal(teacher.sample(2, generator=g1)[0], first)  # the generator advances
    torch.manual_seed(5)
    c = teacher.sample(2)[0]
    torch.manual_seed(5)
    assert torch.equal(teacher.sample(2)[0], c)
    with pytest.raises(SnsError, match="seed or generator"):
        teacher.sample(2, seed=1, generator=g1)


def test_teacher_is_frozen_and_builds_no_graph():
    G = _tiny_g(8)
    teacher = Teacher(G, tap_w=True)
    G.train()  # someone flips it back: sampling must still be eval mode (fused, no w_avg update)
    images, feats = teacher.sample(2, seed=0)
    assert not G.training
    assert not any(p.requires_grad for p in G.parameters())
    assert not images.requires_grad and all(not f.requires_grad and f.grad_fn is None for f in feats)


def test_bf16_teacher_returns_float32_close_to_fp32_and_fp32_ignores_a_callers_autocast():
    teacher = Teacher(_tiny_g(16), tap_w=True)
    ref_img, ref_feats = teacher.sample(2, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # teacher_precision=fp32 means fp32, whatever the caller runs
        img, feats = teacher.sample(2, seed=0)
    assert torch.equal(img, ref_img) and all(torch.equal(f, r) for f, r in zip(feats, ref_feats))
    teacher = Teacher(_tiny_g(16), tap_w=True, precision="bf16")
    img, feats = teacher.sample(2, seed=0)
    assert img.dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats)
    assert 0 < (img - ref_img).abs().max() < 0.1
    assert all((f - r).abs().max() < 0.1 * r.abs().max() + 0.05 for f, r in zip(feats, ref_feats))
    with pytest.raises(SnsError, match=r"teacher: precision 'fp16' is unknown; use one of \['fp32', 'bf16'\]"):
        Teacher(_tiny_g(8), precision="fp16")


def test_w_tap_gives_the_truncated_w():
    G = _tiny_g(16)
    only_w = Teacher(G, taps="w", truncation_psi=0.5)
    assert only_w.feature_names == ["w"] and only_w.feature_shapes == [(6,)]
    _, (w,) = only_w.sample(3, seed=2)
    z = only_w.draw_z(3, seed=2)
    with torch.no_grad():
        assert torch.allclose(w, G.mapping(z, None, truncation_psi=0.5)[:, 0], atol=1e-6)
    both = Teacher(G, tap_w=True, truncation_psi=0.5)
    assert both.feature_names[-1] == "w" and len(both.feature_names) == 4
    assert torch.allclose(both.sample(3, seed=2)[1][-1], w)
    assert Teacher(G, taps=[r"synthesis\.b8", "w"]).feature_names == ["synthesis.b8", "w"]
    with pytest.raises(SnsError, match="mapping module"):
        Teacher(PlainG(), taps="w", z_dim=5, output_range=(0, 1))


def test_conditional_teacher_draws_labels_from_the_same_rng():
    teacher = Teacher(_tiny_g(8, c_dim=3))
    a, _ = teacher.sample(6, seed=1)
    assert torch.equal(a, teacher.sample(6, seed=1)[0])
    assert teacher.draw_c(6, torch.Generator().manual_seed(0)).sum(1).eq(1).all()


def test_generators_that_do_not_make_images_are_refused():
    with pytest.raises(SnsError, match=r"shape \(2, 192\), expected images"):
        Teacher(PlainG(flat=True), taps=None, z_dim=5).sample(2, seed=0)
    with pytest.raises(SnsError, match="returned 5 channels, expected 1 or 3"):
        Teacher(PlainG(out_channels=5), taps=None, z_dim=5).sample(2, seed=0)
    assert Teacher(PlainG(out_channels=5), taps=None, z_dim=5, img_channels=5).sample(2, seed=0)[0].shape[1] == 5
    with pytest.raises(SnsError, match="no z_dim"):
        Teacher(PlainG())
    with pytest.raises(SnsError, match="output_range"):
        Teacher(PlainG(), z_dim=5, output_range=(1, 1))


def test_from_factory_loads_safetensors_and_state_dicts(tmp_path, monkeypatch):
    (tmp_path / "my_teacher_pkg.py").write_text(
        textwrap.dedent("""
        from squeezespan.teachers import Generator

        def make(res=8):
            return Generator(z_dim=8, w_dim=6, img_resolution=res, mapping_kwargs=dict(num_layers=2),
                             synthesis_kwargs=dict(channel_base=64, channel_max=8))

        not_callable = 3

        def not_a_module():
            return "G"
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    G = _tiny_g(8, seed=3)
    save_file(G.state_dict(), str(tmp_path / "g.safetensors"))
    torch.save(G.state_dict(), tmp_path / "g.pt")
    want = Teacher(G).sample(2, seed=0)[0]
    for weights in ["g.safetensors", "g.pt"]:
        teacher = Teacher.from_factory("my_teacher_pkg:make", weights=tmp_path / weights, tap_w=True)
        assert torch.equal(teacher.sample(2, seed=0)[0], want) and teacher.feature_names[-1] == "w"

    with pytest.raises(SnsError, match="expected 'package.module:factory_function'"):
        Teacher.from_factory("my_teacher_pkg.make")
    with pytest.raises(SnsError, match="cannot import module 'no_such_pkg_xyz'"):
        Teacher.from_factory("no_such_pkg_xyz:make")
    with pytest.raises(SnsError, match="has no attribute 'missing'"):
        Teacher.from_factory("my_teacher_pkg:missing")
    with pytest.raises(SnsError, match="not callable"):
        Teacher.from_factory("my_teacher_pkg:not_callable")
    with pytest.raises(SnsError, match="returned str"):
        Teacher.from_factory("my_teacher_pkg:not_a_module")
    with pytest.raises(SnsError, match="no such file"):
        Teacher.from_factory("my_teacher_pkg:make", weights=tmp_path / "absent.pt")
    with pytest.raises(SnsError, match="do not fit"):  # 16px weights into an 8px network
        Teacher.from_factory("my_teacher_pkg:make", weights=tmp_path / "g.pt", factory_kwargs=dict(res=16))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SnsError, match="cannot read"):
        Teacher.from_factory("my_teacher_pkg:make", weights=tmp_path / "bad.pt")
