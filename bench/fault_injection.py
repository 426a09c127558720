"""SIGKILL a real `sns pretrain` run at random moments, resume each with --resume, count bit-identical endings.

Every trial starts the same tiny Squeeze-and-Span run (digits, 16 px, tiny random StyleGAN2 teacher,
ckpt_every=1, kNN monitor and final evaluation on) as a subprocess, kills it and every process it started
(torchrun's workers too) with SIGKILL, then runs the same command with --resume (or, if the kill came
before the run directory held anything, the plain command again) and compares the result with one uninterrupted run:
exported backbone,
and the final checkpoint's student, objective (projector, squeeze module) and optimizer state, all with
torch.equal. Kill moments are uniform over the uninterrupted run's wall time; --targeted adds kills aimed
at the moments most likely to tear a file (while a checkpoint or the export is being written).
Writes bench/results/fault_injection.json.

Usage: python bench/fault_injection.py [--trials 8] [--targeted] [--nproc 1] [--steps 60] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from squeezespan.cliutil import ArgumentParser

TEACHER_MODULE = '''"""A tiny random StyleGAN2 teacher for the fault-injection bench (quality is irrelevant here)."""
import torch

from squeezespan.teachers import build_stylegan2


def make():
    torch.manual_seed(1234)
    G, _ = build_stylegan2(resolution=16, img_channels=1, channel_base=256, channel_max=16, z_dim=16, w_dim=16,
                           mapping_layers=1)
    return G
'''


def run_args(steps: int) -> list[str]:
    return [
        "--method",
        "sns",
        "--data",
        "digits",
        "--teacher",
        "fi_teacher:make",
        "--device",
        "cpu",
        "--no-progress",
        "--seed",
        "0",
        "resolution=16",
        "width=0.125",
        "batch_size=16",
        "proj_hidden=32",
        "proj_dim=32",
        "squeeze_hidden=32",
        f"steps={steps}",
        "ckpt_every=1",
        "keep_ckpts=2",
        "knn_every=20",
        "knn_bank=500",
        "log_every=1",
        "final_eval=true",
    ]


def command(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "squeezespan", "pretrain"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "squeezespan",
        "pretrain",
    ]


def environment(work: Path) -> dict[str, str]:
    # one intra-op thread: results are bit-reproducible only for a fixed thread count (and it shares the machine)
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("WORLD_SIZE", None)
    return env


def start(nproc: int, out: Path, steps: int, env: dict, resume: bool = False) -> subprocess.Popen:
    cmd = command(nproc) + ["--out", str(out)] + run_args(steps) + (["--resume"] if resume else [])
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err)[-2000:]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc). torchrun starts each worker in a session of its own, so
    killing torchrun's process group would leave the workers running; a lost node loses all of them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the run and every process it started, all at once. True if it was still running."""
    alive = proc.poll() is None
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    return alive


def snapshot(out: Path) -> dict[str, Any]:
    """What the killed run left behind."""
    ck = out / "checkpoints"
    ckpts = sorted(p.name for p in ck.glob("ckpt-*.pt")) if ck.is_dir() else []
    temps = sorted(p.name for p in ck.glob(".ckpt-*")) if ck.is_dir() else []
    temps += sorted(p.name for p in out.glob(".*.tmp-*")) if out.is_dir() else []
    return {
        "files": bool(out.is_dir() and any(out.iterdir())),
        "config": (out / "config.yaml").exists(),
        "checkpoints": ckpts,
        "temporaries": temps,
        "export": (out / "backbone.safetensors").exists(),
        "summary": (out / "summary.json").exists(),
    }


def phase(snap: dict[str, Any], steps: int) -> str:
    if not snap["files"]:
        return "startup (run directory still empty)"
    if not snap["checkpoints"]:
        return "before the first checkpoint"
    last = int(snap["checkpoints"][-1][5:13])
    if last < steps:
        return f"training (last checkpoint step {last}/{steps})" + (", mid-write" if snap["temporaries"] else "")
    if not snap["export"]:
        return "after the last step, before/while exporting" + (" (temporary files)" if snap["temporaries"] else "")
    return "final evaluation" if not snap["summary"] else "exiting (summary.json written)"


def final_state(out: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint

    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    return {
        "backbone": load_file(str(out / "backbone.safetensors")),
        "step": state["step"],
        "student": state["student"],
        "objective": state["objective"],
        "optimizer": {
            f"{i}.{k}": v
            for i, s in state["optimizer"]["state"].items()
            for k, v in s.items()
            if isinstance(v, torch.Tensor)
        },
    }


def identical(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    import torch

    out = {"step": a["step"] == b["step"]}
    for part in ("backbone", "student", "objective", "optimizer"):
        x, y = a[part], b[part]
        out[part] = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return out


def metric_steps(out: Path) -> list[int]:
    steps = []
    for ln in (out / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            return [-1]
        if "loss" in rec:
            steps.append(rec["step"])
    return steps


def wait_for(proc: subprocess.Popen, cond, timeout: float, poll: float = 0.0005) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(poll)
    return False


def trial(
    i: int,
    how: str,
    when: float | None,
    nproc: int,
    steps: int,
    work: Path,
    env: dict,
    reference: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    out = work / f"trial-{i:02d}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    proc = start(nproc, out, steps, env)
    ck = out / "checkpoints"
    if how == "random":
        while time.time() - t0 < when and proc.poll() is None:
            time.sleep(0.001)
    elif how == "checkpoint-write":
        # a checkpoint's temporary file is on disk: the kill lands inside atomic_write_bytes
        step = random.Random(seed * 1000 + i).randint(3, steps - 3)
        wait_for(proc, lambda: (ck / f"ckpt-{step:08d}.pt").exists(), 600, 0.005)
        wait_for(proc, lambda: any(ck.glob(".ckpt-*")), 60)
    elif how == "export-write":
        # the export's temporary files exist only for milliseconds: poll fast, give up once the export is done
        done = out / "backbone.json"
        wait_for(proc, lambda: any(out.glob(".backbone.*.tmp-*")) or done.exists(), 900, 0.0002)
    killed_at = time.time() - t0
    snap = snapshot(out)
    was_running = kill(proc)
    snap_after = snapshot(out)  # (the kill itself may have raced one more file operation)
    resume = snap_after["files"]
    t1 = time.time()
    code, tail = finish(start(nproc, out, steps, env, resume=resume))
    rec = {
        "trial": i,
        "how": how,
        "kill_after_s": round(killed_at, 3),
        "was_running": was_running,
        "phase": phase(snap_after, steps),
        "left_behind": snap_after,
        "seen_just_before_kill": snap,
        "resumed_with": "--resume" if resume else "fresh start (nothing to resume)",
        "resume_exit": code,
        "resume_s": round(time.time() - t1, 1),
    }
    if code != 0:
        rec.update(identical=False, error=tail)
        return rec
    same = identical(reference, final_state(out))
    rec.update(
        checks=same, identical=all(same.values()), log_reads_as_one_run=metric_steps(out) == list(range(1, steps + 1))
    )
    return rec


def main() -> None:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8, help="kills at uniformly random moments")
    ap.add_argument("--targeted", action="store_true", help="also kill mid-checkpoint-write (2x) and mid-export (1x)")
    ap.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun, gloo) ")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one, deleted)")
    ap.add_argument("--out", default=None, help="default bench/results/fault_injection[_nprocN].json")
    args = ap.parse_args()
    if args.out is None:
        name = "fault_injection.json" if args.nproc == 1 else f"fault_injection_nproc{args.nproc}.json"
        args.out = str(Path(__file__).parent / "results" / name)

    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="sns-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "fi_teacher.py").write_text(TEACHER_MODULE)
    env = environment(work)
    try:
        ref_dir = work / "uninterrupted"
        shutil.rmtree(ref_dir, ignore_errors=True)
        t0 = time.time()
        code, tail = finish(start(args.nproc, ref_dir, args.steps, env))
        wall = time.time() - t0
        if code != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{tail}")
        reference = final_state(ref_dir)
        print(f"uninterrupted run: {wall:.1f} s, {args.steps} steps", flush=True)

        rng = random.Random(args.seed)
        plan = [("random", rng.uniform(0.0, wall)) for _ in range(args.trials)]
        if args.targeted:
            plan += [("checkpoint-write", None), ("checkpoint-write", None), ("export-write", None)]
        trials = []
        for i, (how, when) in enumerate(plan):
            rec = trial(i, how, when, args.nproc, args.steps, work, env, reference, args.seed)
            trials.append(rec)
            print(
                f"trial {i:2d} {how:16s} kill at {rec['kill_after_s']:6.2f} s  {rec['phase']:<48s} "
                f"{rec['resumed_with']:<10s} -> {'bit-identical' if rec['identical'] else 'DIFFERENT'}",
                flush=True,
            )
        killed = [t for t in trials if t["was_running"]]
        result = {
            "what": "SIGKILL a real `sns pretrain` run (subprocess and all its descendants) at random moments, "
            "resume it, "
            "compare exported backbone + final checkpoint (student, objective, optimizer) with torch.equal "
            "against one uninterrupted run",
            "command": " ".join(
                [
                    "sns pretrain"
                    if args.nproc == 1
                    else f"torchrun --nproc_per_node {args.nproc} -m squeezespan pretrain",
                    "--out RUN",
                ]
                + run_args(args.steps)
            ),
            "nproc": args.nproc,
            "steps": args.steps,
            "seed": args.seed,
            "uninterrupted_wall_s": round(wall, 1),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": 1,
            "trials": len(trials),
            "killed_while_running": len(killed),
            "resumed_bit_identical": sum(t["identical"] for t in killed),
            "all_bit_identical": all(t["identical"] for t in trials),
            "details": trials,
        }
        print(
            f"{result['resumed_bit_identical']}/{len(killed)} runs killed mid-run ended bit-identical "
            f"to the uninterrupted one",
            flush=True,
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
