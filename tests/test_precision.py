"""precision=auto|bf16|fp16|fp32: what auto picks on each kind of hardware, bf16= as its old spelling, and fp16
training with a loss scaler (checkpointed, resumed exactly) in pretrain and train-gan."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from squeezespan.checks import check_pretrain_config
from squeezespan.cli import main
from squeezespan.config import resolve_config
from squeezespan.engine import device as engine_device
from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint
from squeezespan.errors import SnsError
from squeezespan.eval.run import EVAL_DEFAULTS
from squeezespan.gan import GAN_DEFAULTS
from squeezespan.gan.config import check_config as check_gan_config
from squeezespan.methods import resolve_method
from squeezespan.pretraining import PRETRAIN_DEFAULTS, build_run, pretrain

# ---------------------------------------------------------------------------------- what auto picks, per machine


def _cpu(monkeypatch, bf16: bool, fp16: bool = False) -> None:
    """A CPU with (AVX-512 BF16) or without bf16 hardware, and with or without AMX-FP16."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: fp16, raising=False)
    monkeypatch.setattr(engine_device, "_cpu_flags", lambda: set())


def _gpu(monkeypatch, capability: tuple[int, int], keyword: bool = True) -> None:
    """A CUDA GPU of ``capability``. torch 2.x's is_bf16_supported() also says True where bf16 is only emulated
    (pre-Ampere); ``including_emulation=False`` tells them apart. ``keyword=False``: an older torch without it."""
    native = capability >= (8, 0)
    if keyword:

        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return native or including_emulation

    else:

        def is_bf16_supported() -> bool:
            return True  # counts the emulation: must not be trusted

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.version, "hip", None)


@pytest.fixture
def warnings(monkeypatch):
    monkeypatch.setattr(engine_device, "_warned_emulated", set())  # each test sees its own first warning
    return []


def test_auto_on_a_cpu_is_bf16_only_with_bf16_hardware(monkeypatch, warnings):
    _cpu(monkeypatch, bf16=True)
    assert engine_device.resolve_precision("auto", "cpu", warnings.append) == "bf16"
    _cpu(monkeypatch, bf16=False)
    assert engine_device.resolve_precision("auto", "cpu", warnings.append) == "fp32"  # never emulated bf16 or fp16
    assert warnings == []


@pytest.mark.parametrize("keyword", [True, False])
def test_auto_on_gpus_bf16_from_ampere_else_fp16(monkeypatch, warnings, keyword):
    for gpu, capability, want in (("A100", (8, 0), "bf16"), ("V100", (7, 0), "fp16"), ("T4", (7, 5), "fp16")):
        _gpu(monkeypatch, capability, keyword)
        assert torch.cuda.is_bf16_supported() or not keyword  # what torch itself says: "supported" (emulated)
        assert engine_device.bf16_native("cuda") is (want == "bf16"), gpu
        assert engine_device.resolve_precision("auto", "cuda", warnings.append) == want, gpu
        assert engine_device.resolve_precision("auto", "cuda:0", warnings.append) == want, gpu
    assert warnings == []


def test_explicit_precisions_are_kept_with_one_warning_where_emulated(monkeypatch, warnings):
    _cpu(monkeypatch, bf16=False)
    for _ in range(2):
        assert engine_device.resolve_precision("bf16", "cpu", warnings.append) == "bf16"
    assert len(warnings) == 1 and "precision=bf16" in warnings[0] and "no bf16 hardware" in warnings[0]
    assert "precision=auto" in warnings[0]
    assert engine_device.resolve_precision("fp16", "cpu", warnings.append) == "fp16"
    assert len(warnings) == 2 and "no fp16 hardware" in warnings[1] and "CUDA GPUs without bf16" in warnings[1]
    assert engine_device.resolve_precision("fp32", "cpu", warnings.append) == "fp32"
    _cpu(monkeypatch, bf16=True, fp16=True)  # AVX-512 BF16 and AMX-FP16: nothing emulated, nothing to say
    engine_device._warned_emulated.clear()
    assert [engine_device.resolve_precision(p, "cpu", warnings.append) for p in ("bf16", "fp16")] == ["bf16", "fp16"]
    assert len(warnings) == 2
    _gpu(monkeypatch, (7, 0))  # a V100: bf16 is emulated, fp16 is native
    assert engine_device.resolve_precision("bf16", "cuda", warnings.append) == "bf16"
    assert len(warnings) == 3 and "compute capability below 8.0" in warnings[2] and "fp16" in warnings[2]
    assert engine_device.resolve_precision("fp16", "cuda", warnings.append) == "fp16" and len(warnings) == 3
    with pytest.raises(SnsError, match=r"precision='half': expected one of auto, bf16, fp16, fp32$"):
        engine_device.resolve_precision("half", "cpu")


def test_autocast_runs_in_the_precision_asked():
    x = torch.randn(4, 4)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with engine_device.autocast(torch.device("cpu"), precision):
            assert (x @ x).dtype == dtype, precision
    with engine_device.autocast(torch.device("cpu"), True):  # the bf16 flag of feature extraction
        assert (x @ x).dtype == torch.bfloat16


# ------------------------------------------------------------------------------ the key, and bf16= as its alias


def _pretrain_cfg(*overrides, preset=None, config=None):
    return resolve_config(PRETRAIN_DEFAULTS, "pretrain", preset, config, list(overrides))


def test_bf16_is_the_old_spelling_of_precision():
    for value, want in (("true", "bf16"), ("false", "fp32"), ("auto", "auto"), ("AUTO", "auto")):
        for defaults, kind in ((PRETRAIN_DEFAULTS, "pretrain"), (GAN_DEFAULTS, "gan")):
            cfg = resolve_config(defaults, kind, overrides=[f"bf16={value}"])
            assert cfg["precision"] == want and "bf16" not in cfg
    for value in ("auto", "bf16", "fp16", "fp32"):
        assert _pretrain_cfg(f"precision={value}")["precision"] == value
    assert _pretrain_cfg("bf16=true", "precision=bf16")["precision"] == "bf16"  # both, agreeing: fine
    assert PRETRAIN_DEFAULTS["precision"] == GAN_DEFAULTS["precision"] == "fp32"
    # `sns eval` keeps its own bf16 flag (features only)
    assert resolve_config(EVAL_DEFAULTS, "eval", overrides=["bf16=true"])["bf16"] is True


def test_both_spellings_disagreeing_in_one_place_is_a_one_line_error(tmp_path):
    for overrides in (["bf16=true", "precision=fp16"], ["precision=fp16", "bf16=true"]):
        with pytest.raises(SnsError, match=r"^key=value overrides: bf16=true and precision='fp16' disagree") as e:
            _pretrain_cfg(*overrides)
        assert "\n" not in str(e.value) and "give only precision" in str(e.value)
    f = tmp_path / "c.yaml"
    f.write_text("bf16: false\nprecision: bf16\n")
    with pytest.raises(SnsError, match=rf"^--config {f}: bf16=false and precision='bf16' disagree"):
        _pretrain_cfg(config=str(f))
    with pytest.raises(SnsError, match=r"train-gan config: bf16=true and precision='fp32' disagree"):
        check_gan_config({"bf16": True, "precision": "fp32"})
    with pytest.raises(
        SnsError, match=r"bf16='fast' must be true, false or auto \(bf16 is the old spelling of precision\)$"
    ):
        _pretrain_cfg("bf16=fast")


def test_a_later_layer_wins_whichever_spelling_it_uses(tmp_path):
    assert _pretrain_cfg(preset="digits")["precision"] == "auto"
    assert _pretrain_cfg("bf16=false", preset="digits")["precision"] == "fp32"
    old = tmp_path / "config.yaml"  # a run from before the precision key: resumes in what it trained in
    old.write_text("bf16: true\nsteps: 3\n")
    assert _pretrain_cfg(config=str(old))["precision"] == "bf16"
    assert _pretrain_cfg("precision=fp16", config=str(old))["precision"] == "fp16"
    assert check_gan_config({"bf16": "auto"})["precision"] == "auto"  # a Python caller's old spelling


def test_precision_values_are_checked_before_the_run(tmp_path):
    with pytest.raises(SnsError, match=r"^precision='half' must be one of 'auto', 'bf16', 'fp16', 'fp32'$"):
        check_pretrain_config(resolve_method(_pretrain_cfg("precision=half")))
    with pytest.raises(SnsError, match=r"^train-gan precision='fp8' must be one of 'auto', 'bf16', 'fp16', 'fp32'$"):
        check_gan_config({"precision": "fp8"})
    with pytest.raises(SnsError, match="'precision' must be str"):
        _pretrain_cfg("precision=true")


def test_cli_config_show_prints_precision_and_refuses_a_conflict(capsys, tmp_path):
    assert main(["config", "show", "--preset", "gan-digits", "bf16=false"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["precision"] == "fp32" and "bf16" not in shown
    assert main(["config", "show", "precision=fp16"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["precision"] == "fp16"
    args = ["pretrain", "--method", "vicreg", "--out", str(tmp_path / "r"), "bf16=true", "precision=fp16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: key=value overrides: bf16=true and precision='fp16' disagree") and err.count("\n") == 1
    )
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------- fp16 with a loss scaler


def test_fp16_pretrain_trains_with_a_scaler_and_resumes_exactly(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=4, precision="fp16", grad_clip=5.0)  # clipping unscales first
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    pretrain(cfg, straight, progress=False, log=lambda *a: None)
    assert pretrain(cfg, sliced, progress=False, log=lambda *a: None, stop_after=2)["interrupted"]
    scaler = load_checkpoint(list_checkpoints(sliced / "checkpoints")[-1])["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # the loss scaler rides in the checkpoint
    pretrain(cfg, sliced, resume=True, progress=False, log=lambda *a: None)
    a, b = load_file(str(straight / "backbone.safetensors")), load_file(str(sliced / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    end = load_checkpoint(list_checkpoints(straight / "checkpoints")[-1])["scaler"]
    assert end == load_checkpoint(list_checkpoints(sliced / "checkpoints")[-1])["scaler"]
    losses = [json.loads(ln)["loss"] for ln in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    start = build_run(dict(cfg, device="cpu"), torch.device("cpu")).student.state_dict()
    assert any(not torch.equal(start[k], a[k]) for k in a if k in start and start[k].is_floating_point())  # trained
    assert yaml.safe_load((straight / "config.yaml").read_text())["precision"] == "fp16"


def test_a_run_records_what_auto_chose_and_no_scaler_outside_fp16(tmp_path, tiny_pretrain_cfg, monkeypatch):
    _cpu(monkeypatch, bf16=False)
    pretrain(tiny_pretrain_cfg(method="vicreg", steps=1, bf16="auto"), tmp_path, progress=False, log=lambda *a: None)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["precision"] == "fp32" and "bf16" not in written
    assert "scaler" not in load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])


def test_teacher_precision_auto_is_bf16_where_native_and_a_run_keeps_it(tmp_path, tiny_pretrain_cfg, monkeypatch):
    from safetensors import safe_open

    warned = []
    monkeypatch.setattr(engine_device, "_warned_emulated", set())
    _cpu(monkeypatch, bf16=False)
    assert engine_device.resolve_teacher_precision("auto", "cpu", warned.append) == "fp32" and not warned
    assert engine_device.resolve_teacher_precision("bf16", "cpu", warned.append) == "bf16"
    assert len(warned) == 1 and "teacher_precision=bf16 but this cpu has no bf16 hardware" in warned[0]
    with pytest.raises(SnsError, match=r"^teacher_precision='fp16' must be one of 'auto', 'bf16', 'fp32'$"):
        check_pretrain_config(resolve_method(_pretrain_cfg("teacher_precision=fp16")))
    _cpu(monkeypatch, bf16=True)
    assert engine_device.resolve_teacher_precision("auto", "cpu") == "bf16"
    cfg = tiny_pretrain_cfg(method="squeeze", teacher="tiny_teacher:make", teacher_bank=16, steps=1)
    assert cfg["teacher_precision"] == "fp32"  # the default: the targets of every earlier run
    cfg = dict(cfg, teacher_precision="auto")
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["teacher_precision"] == "bf16"
    with safe_open(str(tmp_path / "bank.safetensors"), framework="pt") as f:  # a bf16 bank is not an fp32 one
        assert json.loads(f.metadata()["sampling"])["precision"] == "bf16"
    with pytest.raises(SnsError, match="teacher_precision='bf16' \\(now 'fp32'\\)"):  # other targets: not a resume
        pretrain(dict(cfg, teacher_precision="fp32", steps=2), tmp_path, resume=True, progress=False, log=print)


def test_fp16_train_gan_scales_both_networks_and_resumes_exactly(tmp_path):
    from test_train_gan import assert_same_tree, final_checkpoint, run

    full = run(tmp_path, "full", kimg=0.016, precision="fp16")  # 4 iterations, R1 (fp32) every 2nd
    run(tmp_path, "split", kimg=0.008, precision="fp16")
    resumed = run(tmp_path, "split", resume=True, kimg=0.016, precision="fp16")
    assert full["steps"] == resumed["steps"] == 4
    a, b = final_checkpoint(tmp_path / "full"), final_checkpoint(tmp_path / "split")
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "state"):
        assert_same_tree(a[key], b[key], key)
    assert a["scaler_G"]["scale"] > 0 and a["scaler_D"]["scale"] > 0
    lines = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([ln["loss/G"], ln["loss/D"]])).all() for ln in lines)
    assert yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())["precision"] == "fp16"
