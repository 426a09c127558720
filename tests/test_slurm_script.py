"""The README's Slurm job script works unchanged on its first submission and on every resubmission.

Simulated here: `srun` and `scontrol` are stand-ins on PATH (srun runs its command, scontrol names this host),
torchrun is the real one with 2 CPU processes (gloo), and the script's cluster paths, CIFAR-10 preset, official
pickle and 4 GPUs per node are swapped for the embedded digits, a tiny module:factory teacher and 2 processes,
with tiny key=value budgets after `$RESUME`. Its control flow (resume when checkpoints exist) and its command line
(--preset with --resume on resubmission) are the README's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TESTS = Path(__file__).resolve().parent
TINY = (
    "resolution=16 width=0.125 batch_size=16 steps=2 proj_hidden=32 proj_dim=32 squeeze_hidden=32 "
    "knn_every=0 final_eval=false ckpt_every=1 keep_ckpts=3 bf16=false --no-progress"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job_script(out: Path, root: Path) -> str:
    body = next(b for b in re.findall(r"^```bash\n(.*?)^```$", README.read_text(), flags=re.S | re.M) if "#SBATCH" in b)
    for old, new in {
        "/shared/runs/sns-c10": str(out),
        "--preset cifar10": "--preset digits",
        "stylegan2-pkl:/shared/cifar10.pkl": "tiny_teacher:make",
        "--root /shared/data": f"--root {root}",
        "--nproc_per_node 4": "--nproc_per_node 2",
        ":29500": f":{_free_port()}",
        "$RESUME": f"$RESUME {TINY}",
    }.items():
        assert old in body, f"the README's Slurm script no longer has {old!r}: update this test"
        body = body.replace(old, new)
    return body


def _submit(tmp_path: Path, job: int) -> subprocess.CompletedProcess:
    out, bin_dir = tmp_path / "run", tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(_job_script(out, tmp_path))
    (tmp_path / "tmpdir").mkdir(exist_ok=True)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(TESTS),  # tiny_teacher:make
        SLURM_JOB_NODELIST="node01",
        SLURM_NNODES="1",
        SLURM_JOB_ID=str(job),
        OMP_NUM_THREADS="1",
        TMPDIR=str(tmp_path / "tmpdir"),  # torchrun's elastic agent leaves a folder there: keep it in tmp_path
    )
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the run's summary, printed last
    return json.loads("\n".join(lines[start:]))


@pytest.mark.timeout(900)
def test_readme_slurm_script_runs_then_resumes_on_every_resubmission(tmp_path):
    first = _summary(_submit(tmp_path, 101))
    assert first["steps"] == 2 and first["resumed_at"] == 0
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "ckpt-00000002.pt").unlink()  # the job was killed after step 1's checkpoint
    second = _submit(tmp_path, 102)  # resubmitted: --resume and --preset together
    assert "resumed from" in second.stdout and _summary(second)["resumed_at"] == 1
    third = _summary(_submit(tmp_path, 103))  # once more after it finished: nothing left to train
    assert third["resumed_at"] == 2 and third["steps"] == 2
