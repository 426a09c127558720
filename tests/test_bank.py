"""Teacher feature bank (teacher_bank=N): same images/targets as the live teacher, seeded draws, exact resume, reuse."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from squeezespan.engine import bank as bank_mod
from squeezespan.engine.bank import BANK_FILE, build_bank, latent_generator, quantize
from squeezespan.errors import SnsError
from squeezespan.models import SqueezeModule
from squeezespan.pretraining import pretrain
from squeezespan.teachers.teacher import Teacher

TEACHER = "tiny_teacher:make"


def _teacher():
    import tiny_teacher

    return Teacher(tiny_teacher.make())


def _weights(run):
    return load_file(str(run / "backbone.safetensors"))


@pytest.mark.parametrize("depth", [0, 2])
def test_squeeze_module_takes_pooled_taps(depth):
    """A bank holds pooled (N, C) taps: T_phi must give on them exactly what it gives on the 4-D maps."""
    torch.manual_seed(0)
    maps = [torch.randn(6, 8, 4, 4), torch.randn(6, 5, 8, 8)]
    squeeze = SqueezeModule([8, 5], hidden_dim=16, out_dim=12, depth=depth)
    assert torch.equal(squeeze(maps), squeeze([m.mean(dim=(2, 3)) for m in maps]))


def test_bank_holds_what_the_live_teacher_gives():
    teacher = _teacher()
    bank = build_bank(teacher, 40, seed=3)
    g = latent_generator(3)
    images, taps = teacher.run(teacher.draw_z(40, generator=g), teacher.draw_c(40, g))
    assert bank.images.dtype == torch.uint8 and bank.images.shape == images.shape
    assert torch.equal(bank.images, quantize(images))
    assert (bank.images.float() / 255 - images).abs().max() <= 0.5 / 255 + 1e-6
    assert len(bank.taps) == len(taps) == 3  # b4, b8, b16 of the 16 px teacher
    for pooled, live in zip(bank.taps, taps):
        assert live.ndim == 4 and pooled.shape == live.shape[:2]
        assert torch.equal(pooled, live.mean(dim=(2, 3)))
    squeeze = SqueezeModule(teacher.feature_channels, hidden_dim=16, out_dim=8).eval()
    assert torch.equal(squeeze(bank.taps), squeeze(taps))
    again = build_bank(teacher, 40, seed=3)
    assert torch.equal(again.images, bank.images)
    assert not torch.equal(build_bank(teacher, 40, seed=4).images, bank.images)


def test_steps_draw_different_reproducible_indices_and_an_epoch_uses_each_image_once():
    imgs = torch.zeros(20, 1, 2, 2, dtype=torch.uint8)
    a, b = bank_mod.TeacherBank(imgs, [], seed=0), bank_mod.TeacherBank(imgs, [], seed=0)
    steps = [a.indices(s, 6) for s in range(6)]
    assert all(torch.equal(x, b.indices(s, 6)) for s, x in enumerate(steps))  # pure function of (seed, step)
    assert not torch.equal(steps[0], steps[1])
    assert sorted(torch.cat(steps[:3]).tolist()) == sorted(set(torch.cat(steps[:3]).tolist()))  # epoch: no repeats
    assert not torch.equal(steps[0], steps[3])  # the next epoch is another permutation
    assert not torch.equal(steps[0], bank_mod.TeacherBank(imgs, [], seed=1).indices(0, 6))
    with pytest.raises(SnsError, match="teacher_bank=20 holds fewer"):
        a.indices(0, 21)


def test_resume_with_bank_is_bit_identical_and_reuses_the_bank(tmp_path, tiny_pretrain_cfg, monkeypatch):
    cfg = tiny_pretrain_cfg(method="sns", teacher=TEACHER, teacher_bank=24, steps=4)
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    msgs = []
    pretrain(cfg, straight, progress=False, log=msgs.append)
    assert any("sampled 24 images" in m for m in msgs)
    pretrain(cfg, sliced, progress=False, log=lambda *a: None, stop_after=2)
    before = (sliced / BANK_FILE).stat().st_mtime_ns

    def no_rebuild(*a, **k):
        raise AssertionError("the bank was regenerated on resume")

    monkeypatch.setattr(bank_mod, "build_bank", no_rebuild)
    msgs = []
    pretrain(cfg, sliced, resume=True, progress=False, log=msgs.append)
    assert any("reusing" in m for m in msgs)
    assert (sliced / BANK_FILE).stat().st_mtime_ns == before
    a, b = _weights(straight), _weights(sliced)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(sliced / BANK_FILE), framework="pt") as f:
        meta = f.metadata()
    assert meta["n"] == "24" and meta["seed"] == "0" and len(meta["teacher_sha256"]) == 64
    assert json.loads(meta["taps"]) == ["synthesis.b4", "synthesis.b8", "synthesis.b16"]


def test_bank_of_another_config_is_regenerated_with_a_message(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="squeeze", teacher=TEACHER, teacher_bank=24, steps=1)
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    old = load_file(str(tmp_path / BANK_FILE))["images"]
    msgs = []
    pretrain(dict(cfg, seed=5), tmp_path, progress=False, log=msgs.append)
    assert any("seed '0' != '5'" in m and "regenerating" in m for m in msgs)
    assert not torch.equal(load_file(str(tmp_path / BANK_FILE))["images"], old)
    (tmp_path / BANK_FILE).write_bytes(b"not a bank")
    msgs = []
    pretrain(dict(cfg, seed=5), tmp_path, progress=False, log=msgs.append)
    assert any("unreadable; regenerating" in m for m in msgs)


def test_bank_and_live_runs_differ_but_both_train(tmp_path, tiny_pretrain_cfg):
    """The bank is a finite set of other latents: same shapes and losses of the same size, not the same run."""
    live = pretrain(
        tiny_pretrain_cfg(method="squeeze", teacher=TEACHER, steps=2),
        tmp_path / "live",
        progress=False,
        log=lambda *a: None,
    )
    banked = pretrain(
        tiny_pretrain_cfg(method="squeeze", teacher=TEACHER, steps=2, teacher_bank=32),
        tmp_path / "bank",
        progress=False,
        log=lambda *a: None,
    )
    assert live["steps"] == banked["steps"] == 2
    a, b = _weights(tmp_path / "live"), _weights(tmp_path / "bank")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_vicreg_on_synthetic_images_uses_the_bank(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", teacher=TEACHER, syn_ratio=0.5, teacher_bank=16, steps=1)
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    assert (tmp_path / BANK_FILE).exists()


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(method="encode", teacher_bank=16), r"teacher_bank=16: method encode runs the teacher G itself"),
        (dict(method="sns", teacher_bank=-1), r"teacher_bank=-1 must be an integer >= 0"),
        (dict(method="sns", teacher_bank=2.5), r"teacher_bank=2.5 must be an integer >= 0"),
        (dict(method="sns", teacher_bank=4), r"teacher_bank=4 holds fewer images than the 8 synthetic"),
    ],
)
def test_bad_bank_settings_are_refused(tmp_path, tiny_pretrain_cfg, over, match):
    cfg = tiny_pretrain_cfg(teacher=TEACHER, steps=1)
    cfg.update(over)  # past resolve_config: the engine itself must refuse
    with pytest.raises(SnsError, match=match):
        pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    assert not (tmp_path / BANK_FILE).exists()  # refused before any teacher image is sampled


def test_config_refuses_a_non_integer_bank(tiny_pretrain_cfg):
    with pytest.raises(SnsError, match="teacher_bank"):
        tiny_pretrain_cfg(teacher_bank=2.5)


@pytest.mark.slow
def test_two_processes_with_a_bank_train_the_same_model_as_one(tmp_path):
    """torchrun: rank 0 prepares the bank and hands it over; each rank takes its contiguous shard of the indices."""
    from test_distributed import _assert_same_training, _initial_state, _pretrain

    args = ["--method", "sns", "steps=3", "lr=0.0003", "ckpt_every=0", "augment.enabled=false", "teacher_bank=32"]
    _pretrain(1, tmp_path / "one", *args)
    two = _pretrain(2, tmp_path / "two", *args)
    assert two.stdout.count("sampled 32 images") + two.stderr.count("sampled 32 images") == 1  # rank 0 only
    a = load_file(str(tmp_path / "one" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "two" / "backbone.safetensors"))
    # split convolutions sum in another order (float round-off); a wrong shard (other images) moves the
    # weights as far as training does
    _assert_same_training(a, b, _initial_state(tmp_path / "one")["student"])
