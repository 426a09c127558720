"""teacher_compile: the frozen teacher's forward through torch.compile gives the plain forward's images and taps (to
float rounding), keeps no captured tensors outside Teacher.run, and is a checked, recorded setting that a resumed
run may change only with an fp32 teacher."""

import pytest
import tiny_teacher
import torch
import yaml

from squeezespan.checks import check_pretrain_config
from squeezespan.errors import SnsError
from squeezespan.methods import resolve_method
from squeezespan.pretraining import RESUME_FREE_KEYS, build_run, pretrain, resume_free_keys
from squeezespan.teachers import teacher as teacher_module
from squeezespan.teachers.teacher import Teacher


def test_a_compiled_teacher_samples_the_plain_teachers_images_and_taps():
    plain = Teacher(tiny_teacher.make(16, 3), tap_w=True)
    compiled = Teacher(tiny_teacher.make(16, 3), tap_w=True, compile=True)
    assert "compile=True" in repr(compiled) and "compile" not in repr(plain)
    assert compiled.feature_channels == plain.feature_channels  # the shape probe runs uncompiled
    assert compiled._compiled is None
    for n, seed in ((8, 1), (8, 2), (5, 3)):  # a second batch size recompiles
        z = torch.randn(n, plain.z_dim, generator=torch.Generator().manual_seed(seed))
        images, taps = compiled.run(z)
        ref_images, ref_taps = plain.run(z)
        assert images.shape == ref_images.shape and images.dtype == torch.float32
        assert (images - ref_images).abs().max().item() <= 1e-4
        assert len(taps) == len(ref_taps) == 4  # b4, b8, b16 and w
        for t, r in zip(taps, ref_taps):
            assert t.shape == r.shape and (t - r).abs().max().item() <= 1e-4
    # its hooks stay on the tapped modules but capture only inside run(): G called by anyone else leaves nothing
    with torch.no_grad():
        compiled.generator(torch.randn(2, plain.z_dim), torch.zeros(2, 0))
    assert compiled._captured == {} and compiled._capturing == [False]


def test_a_compiler_failure_is_one_line_with_the_way_out(monkeypatch):
    def broken(fn):
        def call(*args):
            raise RuntimeError("inductor could not\nbuild this")

        return call

    monkeypatch.setattr(teacher_module.torch, "compile", broken)
    teacher = Teacher(tiny_teacher.make(), compile=True)
    with pytest.raises(
        SnsError,
        match=r"^teacher: torch.compile of Generator failed \(RuntimeError: inductor could "
        r"not build this\); sample without compiling \(teacher_compile=false\)$",
    ):
        teacher.sample(4, seed=0)
    assert teacher._capturing == [False]


def test_teacher_compile_is_a_checked_flag_passed_to_the_teacher(tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="squeeze", teacher="tiny_teacher:make", steps=1)
    assert cfg["teacher_compile"] is False  # default: no compilation (tens of seconds per batch size on a CPU)
    with pytest.raises(SnsError, match=r"^teacher_compile='yes' must be true or false$"):
        check_pretrain_config(resolve_method(dict(cfg, teacher_compile="yes")))
    assert build_run(cfg, torch.device("cpu")).teacher.compile is False
    assert build_run(dict(cfg, teacher_compile=True), torch.device("cpu")).teacher.compile is True


def test_teacher_compile_may_change_on_resume_only_with_an_fp32_teacher(tmp_path, tiny_pretrain_cfg):
    assert "teacher_compile" in RESUME_FREE_KEYS
    assert resume_free_keys({"teacher_precision": "fp32"}) == RESUME_FREE_KEYS
    assert resume_free_keys({"teacher_precision": "bf16"}) == RESUME_FREE_KEYS - {"teacher_compile"}
    cfg = tiny_pretrain_cfg(method="squeeze", teacher="tiny_teacher:make", teacher_precision="bf16", steps=1)
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["teacher_compile"] is False
    # bf16 rounding in another order changes the targets as teacher_precision does: refused before any compiling
    with pytest.raises(SnsError, match=r"teacher_compile=False \(now True\)"):
        pretrain(dict(cfg, teacher_compile=True, steps=2), tmp_path, resume=True, progress=False, log=print)
