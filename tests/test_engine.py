"""The training engine: a run trains, logs, checkpoints, exports; resume is exact; bad values are refused."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from squeezespan import checkpointed_step
from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from squeezespan.errors import SnsError
from squeezespan.pretraining import pretrain


def _weights(run):
    return load_file(str(run / "backbone.safetensors"))


def test_vicreg_run_trains_logs_and_exports(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=3)
    summary = pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    assert summary["steps"] == 3
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(ln["loss"])) for ln in lines)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "tb").is_dir()
    assert (tmp_path / "backbone.json").exists() and _weights(tmp_path)
    assert len(list_checkpoints(tmp_path / "checkpoints")) == 1


@pytest.mark.parametrize("method", ["vicreg", "simsiam"])
def test_resume_equals_uninterrupted(tmp_path, tiny_pretrain_cfg, method):
    cfg = tiny_pretrain_cfg(method=method, steps=4)
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    pretrain(cfg, straight, progress=False, log=lambda *a: None)
    assert checkpointed_step(sliced) is None  # no run there yet
    out = pretrain(cfg, sliced, progress=False, log=lambda *a: None, stop_after=2)
    assert out["interrupted"] and out["step"] == 2 and checkpointed_step(sliced) == 2  # where the resume starts
    summary = pretrain(cfg, sliced, resume=True, progress=False, log=lambda *a: None)
    assert summary["resumed_at"] == 2 and checkpointed_step(sliced) == 4
    a, b = _weights(straight), _weights(sliced)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(ln)["step"] for ln in (sliced / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the log reads as one run


def test_resumed_run_reports_the_training_time_of_all_its_segments(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=4)
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None, stop_after=2)
    ckpt = list_checkpoints(tmp_path / "checkpoints")[-1]
    state = load_checkpoint(ckpt)
    assert 0 < state["train_time_s"] < 600  # the first segment's time rides in the checkpoint
    save_checkpoint(ckpt, dict(state, train_time_s=1000.0))  # as if the first segment had taken 1000 s
    summary = pretrain(cfg, tmp_path, resume=True, progress=False, log=lambda *a: None)
    assert summary["resumed_at"] == 2 and 0 < summary["segment_time_s"] < 600
    assert summary["train_time_s"] == pytest.approx(1000.0 + summary["segment_time_s"], abs=0.2)
    assert json.loads((tmp_path / "summary.json").read_text())["train_time_s"] == summary["train_time_s"]


def test_resume_skips_corrupted_newest_checkpoint(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=4, ckpt_every=1, keep_ckpts=3)
    pretrain(cfg, tmp_path, progress=False, log=lambda *a: None, stop_after=3)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a crash mid-copy
    msgs = []
    pretrain(cfg, tmp_path, resume=True, progress=False, log=msgs.append)
    assert any("corrupted or truncated" in m for m in msgs)
    assert any("resumed from" in m and "ckpt-00000002" in m for m in msgs)


def test_checkpoint_checksum_detects_bitflip(tmp_path):
    p = tmp_path / "ckpt-00000001.pt"
    save_checkpoint(p, {"w": torch.arange(10.0)})
    raw = bytearray(p.read_bytes())
    raw[-20] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(SnsError, match="checksum"):
        load_checkpoint(p)


def test_nan_loss_stops_with_clear_message(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=50, lr=1e12, ckpt_every=1)
    with pytest.raises(SnsError, match="loss became"):
        pretrain(cfg, tmp_path, progress=False, log=lambda *a: None)
    for ck in list_checkpoints(tmp_path / "checkpoints"):
        state = load_checkpoint(ck)
        assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(batch_size=2), "too small"),
        (dict(method="nope"), "--method 'nope' is unknown"),
        (dict(method="sns"), "needs --teacher"),
        (dict(method="vicreg", syn_ratio=1.5), r"syn_ratio=1.5 must be in \[0, 1\]"),
    ],
)
def test_bad_values_are_refused(tmp_path, tiny_pretrain_cfg, over, match):
    with pytest.raises(SnsError, match=match):
        pretrain(tiny_pretrain_cfg(**over), tmp_path, progress=False, log=lambda *a: None)


def test_pretraining_on_unlabelled_split_with_labelled_knn_bank(tmp_path, tiny_pretrain_cfg):
    """STL-10 style: pretrain on train+unlabeled (labels -1), monitor kNN with the labelled train split as bank."""
    from test_data import write_stl

    write_stl(tmp_path / "data", n_train=2, n_test=1, n_unlabeled=6)
    cfg = tiny_pretrain_cfg(
        method="vicreg",
        data="stl10",
        data_root=str(tmp_path / "data"),
        train_split="train+unlabeled",
        monitor_split="train",
        batch_size=8,
        steps=2,
        final_eval=True,
        variant="imagenet",
        resolution=32,
    )
    summary = pretrain(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert 0 <= summary["knn"]["top1"] <= 100
    with pytest.raises(SnsError):  # an unlabelled bank is refused, not silently scored
        pretrain(dict(cfg, monitor_split="train+unlabeled"), tmp_path / "run2", progress=False, log=lambda *a: None)


def test_bf16_auto_follows_the_hardware_and_emulated_bf16_is_flagged(monkeypatch):
    from squeezespan.engine import device as engine_device

    for native in (True, False):
        monkeypatch.setattr(engine_device, "bf16_native", lambda device, native=native: native)
        assert engine_device.resolve_bf16("auto", "cpu") is native
        assert engine_device.resolve_bf16(False, "cpu") is False
    monkeypatch.setattr(engine_device, "_warned_emulated", set())
    logs = []
    assert engine_device.resolve_bf16(True, "cpu", logs.append) is True  # an explicit true is kept (bf16 numerics)...
    assert engine_device.resolve_bf16(True, "cpu", logs.append) is True
    assert len(logs) == 1 and "no bf16 hardware" in logs[0] and "bf16=auto" in logs[0]  # ...with one warning
    with pytest.raises(SnsError, match="bf16='yes': expected true, false or auto"):
        engine_device.resolve_bf16("yes", "cpu")


def test_bf16_native_reads_this_cpu():
    from squeezespan.engine.device import bf16_native

    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = Path("/proc/cpuinfo").read_text().split()
    if "avx512_bf16" in flags:
        assert bf16_native("cpu")
    elif "amx_bf16" not in flags:  # (AMX also needs the kernel's permission: not asserted either way)
        assert not bf16_native("cpu")


def test_a_run_records_the_precision_it_used(tmp_path, tiny_pretrain_cfg):
    import yaml

    from squeezespan.engine.device import bf16_native

    pretrain(tiny_pretrain_cfg(method="vicreg", steps=1, bf16="auto"), tmp_path, progress=False, log=lambda *a: None)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["precision"] == ("bf16" if bf16_native("cpu") else "fp32") and "bf16" not in written
