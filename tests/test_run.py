"""The shared run object (engine.run.RunDir): checkpoints, resume, per-rank RNG states, stop signals."""

import os
import random
import signal

import pytest
import torch

from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint
from squeezespan.engine.distributed import World
from squeezespan.engine.run import RunDir, StopSignal
from squeezespan.errors import SnsError


def test_save_keeps_the_payload_the_rng_and_only_the_newest_checkpoints(tmp_path):
    run = RunDir(tmp_path, World(), keep=2, log=lambda *a: None)
    run.prepare()
    for step in (1, 2, 3):
        run.save(step, {"w": torch.full((2,), float(step)), "extra": {"kimg": step * 0.5}})
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    state = load_checkpoint(ckpts[-1])
    assert state["step"] == 3 and state["world_size"] == 1 and state["extra"] == {"kimg": 1.5}
    assert torch.equal(state["w"], torch.full((2,), 3.0)) and "rng_ranks" not in state


def test_restored_rng_continues_the_saved_streams(tmp_path):
    run = RunDir(tmp_path, World(), log=lambda *a: None)
    run.prepare()
    torch.manual_seed(7)
    random.seed(7)
    run.save(1, lambda: {})
    expected = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    state, path = run.load_latest()
    assert path.name == "ckpt-00000001.pt"
    assert run.restore_rng(state, reseed=123) is True
    got = (torch.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def test_other_world_size_reseeds_with_a_warning(tmp_path):
    msgs = []
    run = RunDir(tmp_path, World(), log=msgs.append)
    run.prepare()
    run.save(1, {})
    state, _ = run.load_latest()
    state["rng_ranks"] = [state["rng"], state["rng"]]  # as written by two processes
    assert run.restore_rng(state, reseed=5) is False
    assert any("2 process(es)" in m and "reseeded" in m for m in msgs)
    a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))


def test_resume_falls_back_past_corrupt_checkpoints_and_refuses_when_all_are(tmp_path):
    msgs = []
    run = RunDir(tmp_path, World(), keep=5, log=msgs.append)
    assert run.load_latest() is None and any("starting from step 0" in m for m in msgs)
    run.prepare()
    run.save(1, {"x": 1})
    run.save(2, {"x": 2})
    newest = list_checkpoints(run.ckpt_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:50])
    state, path = run.load_latest()
    assert state["x"] == 1 and path.name == "ckpt-00000001.pt"
    for p in list_checkpoints(run.ckpt_dir):
        p.write_bytes(b"garbage")
    with pytest.raises(SnsError, match="no usable checkpoint"):
        run.load_latest()


def test_a_payload_function_that_raises_writes_nothing(tmp_path):
    run = RunDir(tmp_path, World(), log=lambda *a: None)
    run.prepare()

    def bad():
        raise SnsError("weights became non-finite")

    with pytest.raises(SnsError, match="non-finite"):
        run.save(1, bad)
    assert list_checkpoints(run.ckpt_dir) == []


def test_prepare_removes_half_written_temporaries_and_config_is_written(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".ckpt-00000004.pt.tmp-123"
    stale.write_bytes(b"half")
    run = RunDir(tmp_path, World())
    run.prepare()
    assert not stale.exists()
    path = run.write_config({"seed": 3, "method": "sns"})
    assert path.read_text().splitlines() == ["seed: 3", "method: sns"]


def test_stop_signal_sets_a_flag_then_gives_up_on_the_second():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
