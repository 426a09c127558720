"""One run per run directory (engine.run.RunLock via prepare_run_dir) and --force starting clean."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import tiny

from squeezespan.cli import main
from squeezespan.engine.run import LOCK_NAME, REPLACED_PREFIX, RunLock, prepare_run_dir, release_run_dirs
from squeezespan.errors import SnsError

TINY = ["--method", "vicreg", *tiny.overrides(drop=("steps",), ckpt_every=1, keep_ckpts=5), "--no-progress"]
TINY += ["--device", "cpu"]

# A holder in another process that knows nothing of squeezespan (starts in milliseconds): flock + JSON, as RunLock
_HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}).encode())
print("held", flush=True)
time.sleep(60)
"""


def _snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(autouse=True)
def _no_leftover_locks():
    yield
    release_run_dirs()


def test_second_run_into_a_locked_dir_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("old run")
    with RunLock(out):  # another run holds it (a separate open file: flock treats it as another owner)
        before = _snapshot(out)
        assert main(["pretrain", "--out", str(out), "--force"] + TINY + ["steps=1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another run" in err[0] and f"pid {os.getpid()}" in err[0]
        assert _snapshot(out) == before  # the holder's lock file and the old run are untouched
        with pytest.raises(SnsError, match="in use by another run"):
            prepare_run_dir(out, resume=True)
    assert not (out / LOCK_NAME).exists()  # released: the file goes with the lock


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SnsError, match=f"in use by another run \\(pid {holder.pid} on {socket.gethostname()}"):
            prepare_run_dir(out)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock file stays, the kernel dropped its lock, so it is stale and taken over
    msgs = []
    prepare_run_dir(out, log=msgs.append)
    assert any("stale lock" in m and f"pid {holder.pid}" in m for m in msgs)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_run_dirs()
    assert not (out / LOCK_NAME).exists() and out.is_dir()  # the lock goes, the directory it did not create stays


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("steps: 2\n")
    pid = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    msgs = []
    assert prepare_run_dir(out, resume=True, log=msgs.append) == out
    assert len(msgs) == 1 and f"stale lock of pid {pid}" in msgs[0]
    release_run_dirs()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_a_dead_lock_from_another_host_is_taken_over_as_after_a_node_crash(tmp_path):
    """A Slurm resubmission after a node died: the lock file names the dead node, but nobody holds its flock."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("steps: 2\n")
    (out / LOCK_NAME).write_text(json.dumps({"pid": 12345, "host": "elsewhere.example", "started": "earlier"}))
    msgs = []
    assert prepare_run_dir(out, resume=True, log=msgs.append) == out
    assert len(msgs) == 1 and "pid 12345 on elsewhere.example" in msgs[0] and "taking over" in msgs[0]
    release_run_dirs()


def test_without_flock_a_lock_naming_another_host_is_refused_with_what_to_do(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 12345, "host": "elsewhere.example", "started": "earlier"}))
    with pytest.raises(SnsError, match="pid 12345 on elsewhere.example.*delete .*\\.lock"):
        prepare_run_dir(out, resume=True)
    assert json.loads((out / LOCK_NAME).read_text())["host"] == "elsewhere.example"


def test_lock_is_released_after_a_refused_command_and_an_empty_new_dir_is_removed(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["pretrain", "--out", str(out), "--force"] + TINY + ["steps=1", "batch_size=2"]) == 2
    assert "batch_size=2" in capsys.readouterr().err
    assert not out.exists()  # refused before --out was touched: not even the directory was made
    assert (
        main(["pretrain", "--out", str(out), "--data", "no-such-data"] + TINY + ["steps=1"]) == 2
    )  # refused after the lock
    assert not (out / LOCK_NAME).exists()
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "x").write_text("x")
    assert main(["pretrain", "--out", str(existing), "--resume", "--force"]) == 2
    assert "only one of them" in capsys.readouterr().err
    assert sorted(p.name for p in existing.iterdir()) == ["x"]


def test_force_moves_the_old_run_aside_and_resume_continues_the_new_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out)] + TINY + ["steps=4"]) == 0
    old_ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert old_ckpts[-1] == "ckpt-00000004.pt"
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--force"] + TINY + ["steps=2"]) == 0
    printed = capsys.readouterr().out
    assert "--force: the previous run's files" in printed
    (replaced,) = [p for p in out.iterdir() if p.name.startswith(REPLACED_PREFIX)]
    assert sorted(p.name for p in (replaced / "checkpoints").iterdir()) == old_ckpts  # nothing lost
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "at step 2/2" in printed and "step 4" not in printed
    assert not (out / LOCK_NAME).exists()


def test_force_refused_by_validation_leaves_the_old_run_byte_identical(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "ckpt-00000009.pt").write_bytes(b"old weights")
    (out / "config.yaml").write_text("steps: 9\n")
    before = _snapshot(out)
    mtime = time.time()
    assert main(["pretrain", "--out", str(out), "--force"] + TINY + ["steps=1", "keep_ckpts=0"]) == 2
    assert _snapshot(out) == before and not any(p.name.startswith(".") for p in out.iterdir())
    assert all(p.stat().st_mtime <= mtime for p in out.rglob("*"))


def test_force_that_fails_before_writing_puts_the_old_run_back(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-00000009.pt").write_bytes(b"old weights")
    (out / "config.yaml").write_text("steps: 9\n")
    before = _snapshot(out)
    assert main(["pretrain", "--out", str(out), "--force", "--data", "no-such-data"] + TINY + ["steps=1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _snapshot(out) == before and not any(p.name.startswith(".") for p in out.iterdir())
