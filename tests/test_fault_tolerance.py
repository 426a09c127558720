"""A run survives SIGKILL, torn or corrupted checkpoints, a full disk and NaNs: it stops clearly and resumes exactly."""

import errno
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file

from squeezespan import files as files_mod
from squeezespan.engine import checkpoint as ckpt_mod
from squeezespan.engine.checkpoint import atomic_write_bytes, checkpoint_path, list_checkpoints, load_checkpoint
from squeezespan.errors import SnsError
from squeezespan.pretraining import pretrain

ROOT = Path(__file__).parent.parent
STEPS = 4


def _quiet(*a, **k):
    return None


def _cfg():
    from squeezespan.config import resolve_config
    from squeezespan.pretraining import PRETRAIN_DEFAULTS

    over = dict(tiny.PRETRAIN, method="vicreg", data="digits", steps=STEPS, knn_every=0, log_every=1, ckpt_every=1)
    over.update(keep_ckpts=10, device="cpu")
    return resolve_config(PRETRAIN_DEFAULTS, "pretrain", extra=over)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run: what every interrupted one must end as."""
    run = tmp_path_factory.mktemp("straight")
    pretrain(_cfg(), run, progress=False, log=_quiet)
    return run


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "backbone.safetensors")), load_file(str(b / "backbone.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _same_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("student", "objective") for k in a[part])


# ---- SIGKILL


def _sns(out: Path, *extra: str) -> list:
    return [
        sys.executable,
        "-m",
        "squeezespan",
        "pretrain",
        "--method",
        "vicreg",
        "--data",
        "digits",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        *tiny.overrides(steps=6, ckpt_every=1, keep_ckpts=2, log_every=1),
        *extra,
    ]


def test_sigterm_saves_says_so_exits_143_and_resume_ends_bit_identical(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert subprocess.run(_sns(tmp_path / "straight"), env=env, capture_output=True, timeout=240).returncode == 0
    out = tmp_path / "termed"
    proc = subprocess.Popen(_sns(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not checkpoint_path(out / "checkpoints", 2).exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be signalled"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived (a very slow poll)")
    assert proc.returncode == 143, stderr[-2000:]  # 128 + SIGTERM: a scheduler sees the run did not finish
    assert "SIGTERM: checkpoint saved at step" in stdout + stderr and not (out / "backbone.safetensors").exists()
    done = subprocess.run(_sns(out, "--resume"), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _same_weights(tmp_path / "straight", out)


def test_sigkill_mid_run_then_resume_ends_bit_identical(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # bit-identical needs the same intra-op thread count
    assert subprocess.run(_sns(tmp_path / "straight"), env=env, capture_output=True, timeout=240).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(_sns(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        # killed inside step 4, 5 or 6: keep_ckpts=2 deletes ckpt-3 once ckpt-5 is saved, so waiting for ckpt-3 alone
        # could miss it on a loaded machine (a poll descheduled for two steps) and let the run finish unkilled
        mid_run = [checkpoint_path(out / "checkpoints", n) for n in (3, 4)]
        while not any(p.exists() for p in mid_run):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "backbone.safetensors").exists()
    done = subprocess.run(_sns(out, "--resume"), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout + done.stderr
    assert _same_weights(tmp_path / "straight", out)
    steps = [int(ln.split('"step": ')[1].split(",")[0]) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log reads as one run


@pytest.mark.slow
def test_fault_injection_bench_random_kills(tmp_path):
    spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "bench" / "fault_injection.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "result.json"
    old = sys.argv
    sys.argv = [
        "fault_injection.py",
        "--trials",
        "3",
        "--steps",
        "12",
        "--seed",
        "1",
        "--targeted",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
    ]
    try:
        bench.main()
    finally:
        sys.argv = old
    import json

    res = json.loads(out.read_text())
    assert res["all_bit_identical"], [t for t in res["details"] if not t["identical"]]


# ---- failing saves, torn and corrupted files


def test_atomic_write_failure_leaves_old_file_untouched(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old good bytes")

    def no_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", no_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new" * 1000)
    assert p.read_bytes() == b"old good bytes"
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]  # no temporary left behind


class _DiskFullAfter:
    """open() for squeezespan.files (atomic writes) whose checkpoint writes fail half-way (ENOSPC) once ``n``
    checkpoints were written (one per step; other files, config.yaml and manifest.json, are written normally).
    """

    def __init__(self, n):
        self.n, self.count = n, 0

    def __call__(self, path, mode="r", *a, **k):
        f = open(path, mode, *a, **k)
        if "w" not in mode or "ckpt-" not in Path(path).name:
            return f
        self.count += 1
        if self.count <= self.n:
            return f
        real_write = f.write

        def write(data):
            real_write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        f.write = write
        return f


def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, straight, monkeypatch, capsys):
    from squeezespan.cli import main

    monkeypatch.setattr(files_mod, "open", _DiskFullAfter(2), raising=False)  # every atomic write goes through it
    argv = [
        "pretrain",
        "--method",
        "vicreg",
        "--data",
        "digits",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--no-progress",
        *tiny.overrides(steps=STEPS, ckpt_every=1, keep_ckpts=1),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No space left on device") and "ckpt-00000003" in err and "\n" not in err, err
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-00000002.pt"]  # the previous one, not pruned by the failed save
    assert load_checkpoint(ckpts[0])["step"] == 2  # intact: checksum verifies
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    monkeypatch.undo()  # space freed: the run continues from step 2 and ends where it would have
    pretrain(_cfg(), tmp_path, resume=True, progress=False, log=_quiet)
    assert _same_weights(straight, tmp_path)


def test_corrupted_newest_checkpoint_is_reported_and_previous_used(tmp_path, straight):
    cfg = _cfg()
    pretrain(cfg, tmp_path, progress=False, log=_quiet, stop_after=3)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the payload
    newest.write_bytes(bytes(raw))
    msgs = []
    pretrain(cfg, tmp_path, resume=True, progress=False, log=msgs.append)
    warn = next(m for m in msgs if "warning" in m)
    assert "ckpt-00000003.pt" in warn and "checksum mismatch" in warn and "previous checkpoint" in warn
    assert any("resumed from" in m and "ckpt-00000002.pt" in m for m in msgs)
    assert _same_weights(straight, tmp_path)


def test_resume_removes_torn_temporaries_and_starts_over_without_checkpoint(tmp_path, straight):
    (tmp_path / "checkpoints").mkdir()
    torn = tmp_path / "checkpoints" / ".ckpt-00000001.pt.tmp-4242"
    torn.write_bytes(b"SNSCKPT1 half a checkpoint")  # killed while writing the first checkpoint
    msgs = []
    pretrain(_cfg(), tmp_path, resume=True, progress=False, log=msgs.append)
    assert any("no checkpoint" in m and "starting from step 0" in m for m in msgs)
    assert not torn.exists()
    assert _same_weights(straight, tmp_path)


# ---- NaN / Inf


def test_nan_loss_stops_within_one_step_with_last_good_checkpoint(tmp_path, straight, monkeypatch):
    from squeezespan.methods.vicreg import VICReg

    forward, calls = VICReg.forward, []

    def poisoned(self, inputs):
        loss, logs = forward(self, inputs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), logs

    monkeypatch.setattr(VICReg, "forward", poisoned)
    with pytest.raises(
        SnsError, match=r"loss became nan at step 3; stopped, last good checkpoint kept in .*checkpoints"
    ):
        pretrain(_cfg(), tmp_path, progress=False, log=_quiet)
    assert len(calls) == 3  # stopped in the step that produced it
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert ckpts[-1].name == "ckpt-00000002.pt"
    # the last good checkpoint is exactly the uninterrupted run's step-2 state, so the run can go on
    assert _same_state(load_checkpoint(ckpts[-1]), load_checkpoint(straight / "checkpoints" / "ckpt-00000002.pt"))
    monkeypatch.undo()
    pretrain(_cfg(), tmp_path, resume=True, progress=False, log=_quiet)
    assert _same_weights(straight, tmp_path)


def test_infinite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    step, calls = torch.optim.SGD.step, []

    def blow_up(self, *a, **k):
        out = step(self, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", blow_up)
    with pytest.raises(SnsError, match=r"became non-finite after step 2; stopped without saving"):
        pretrain(_cfg(), tmp_path, progress=False, log=_quiet)
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-00000001.pt"]
    assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpts[0])["student"].values() if v.is_floating_point())


def test_train_gan_resume_with_every_checkpoint_corrupt_refuses_and_keeps_teacher(tmp_path):
    """As pretrain does: no usable checkpoint is a one-line refusal, never a silent restart over teacher/."""
    from test_train_gan import TINY, tiny_dataset

    from squeezespan.gan import train_gan

    out = tmp_path / "gan"
    cfg = dict(TINY, kimg=0.008, ckpt_every=1, keep_ckpts=3)
    assert train_gan(cfg, out, progress=False, dataset=tiny_dataset(), log=_quiet)["steps"] == 2
    for p in list_checkpoints(out / "checkpoints"):
        p.write_bytes(p.read_bytes()[:100])  # torn
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(SnsError, match="no usable checkpoint"):
        train_gan(dict(cfg, kimg=0.016), out, resume=True, progress=False, dataset=tiny_dataset(), log=_quiet)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before  # teacher/ included
