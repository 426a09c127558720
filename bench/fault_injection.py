"""Interrupt a real `sns pretrain` or `sns train-gan` run at random moments, resume it, count bit-identical endings.

Every trial starts the same tiny run as a subprocess: `pretrain` is Squeeze and Span on digits at 16 px with a
tiny random StyleGAN2 teacher (ckpt_every=1, kNN monitor and final evaluation on); `train-gan` is a tiny StyleGAN2
on digits at 16 px (a checkpoint every iteration, teacher export at the end). The trial interrupts it:
- kill: SIGKILL to it and every process it started (torchrun's workers too): nothing gets to clean up;
- term / int: SIGTERM or SIGINT to the launcher, which must save a checkpoint, say so and exit 143 / 130;
- corrupt: SIGKILL, then the newest checkpoint left behind is damaged (bytes flipped), so --resume must fall back.
Then it runs the same command with --resume (or, if the run directory held nothing yet, the plain command again)
and compares the result with one uninterrupted run: pretrain's exported backbone and the final checkpoint's
student, objective and optimizer; train-gan's exported teacher (G_ema) and the final checkpoint's G, D, G_ema and
both optimizers, all with torch.equal. Moments are uniform over the uninterrupted run's wall time; --targeted adds
kills aimed at the moments most likely to tear a file (while a checkpoint or the export is being written).
Writes bench/results/fault_injection[_gan][_nprocN].json.

Usage: python bench/fault_injection.py [--command pretrain|train-gan] [--trials 8] [--signals kill,term,int,corrupt]
                                       [--targeted] [--nproc 1] [--steps 60] [--seed 0] [--out PATH]
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


def gan_args(steps: int) -> list[str]:
    """A tiny StyleGAN2 on digits: batch 8, so ``steps`` iterations are steps * 8 / 1000 kimg."""
    return [
        "--data",
        "digits",
        "--device",
        "cpu",
        "--no-progress",
        "--seed",
        "0",
        "resolution=16",
        "channel_base=256",
        "channel_max=16",
        "z_dim=16",
        "w_dim=16",
        "mapping_layers=1",
        "batch_size=8",
        "mbstd_group_size=4",
        f"kimg={steps * 8 / 1000:g}",
        "ckpt_every=1",
        "keep_ckpts=2",
        "log_every=1",
        "sample_kimg=null",
        "fd_ref_kimg=null",
        "precision=fp32",
    ]


COMMANDS = {"pretrain": run_args, "train-gan": gan_args}


def command(nproc: int, sub: str = "pretrain") -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "squeezespan", sub]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "squeezespan",
        sub,
    ]


def environment(work: Path) -> dict[str, str]:
    # one intra-op thread: results are bit-reproducible only for a fixed thread count (and it shares the machine)
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("WORLD_SIZE", None)
    return env


def start(
    nproc: int, out: Path, steps: int, env: dict, resume: bool = False, sub: str = "pretrain"
) -> subprocess.Popen:
    cmd = command(nproc, sub) + ["--out", str(out)] + COMMANDS[sub](steps) + (["--resume"] if resume else [])
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


def interrupt(proc: subprocess.Popen, sig: signal.Signals) -> tuple[bool, int | None]:
    """SIGTERM or SIGINT to the launcher alone (torchrun passes it on to its workers), as Slurm or Ctrl-C would;
    then wait for the run to save and exit. (was it running, its exit status)"""
    alive = proc.poll() is None
    if alive:
        proc.send_signal(sig)
    try:
        proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        kill(proc)
    return alive, proc.returncode


def corrupt_newest(out: Path) -> str | None:
    """Flip bytes in the middle of the newest checkpoint (a disk error after the write): its checksum no longer
    matches, so --resume must report it and fall back to the previous one. The file's name, or None."""
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pt")) if (out / "checkpoints").is_dir() else []
    if not ckpts:
        return None
    data = bytearray(ckpts[-1].read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    ckpts[-1].write_bytes(bytes(data))
    return ckpts[-1].name


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
        "export": (out / "backbone.safetensors").exists() or (out / "teacher" / "G_ema.safetensors").exists(),
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


def optimizer_tensors(opt: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {f"{i}.{k}": v for i, s in opt["state"].items() for k, v in s.items() if isinstance(v, torch.Tensor)}


def final_state(out: Path, sub: str = "pretrain") -> dict[str, Any]:
    from safetensors.torch import load_file

    from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint

    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    if sub == "train-gan":
        return {
            "teacher": load_file(str(out / "teacher" / "G_ema.safetensors")),
            "step": state["step"],
            **{k: state[k] for k in ("G", "D", "G_ema")},
            **{k: optimizer_tensors(state[k]) for k in ("opt_G", "opt_D")},
        }
    return {
        "backbone": load_file(str(out / "backbone.safetensors")),
        "step": state["step"],
        "student": state["student"],
        "objective": state["objective"],
        "optimizer": optimizer_tensors(state["optimizer"]),
    }


def identical(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    import torch

    out = {"step": a["step"] == b["step"]}
    for part in sorted(set(a) - {"step"}):
        x, y = a[part], b.get(part, {})
        out[part] = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return out


def metric_steps(out: Path, sub: str = "pretrain") -> list[int]:
    """The steps of the training lines of metrics.jsonl (pretrain: "loss"; train-gan: "loss/G")."""
    key = "loss/G" if sub == "train-gan" else "loss"
    steps = []
    for ln in (out / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            return [-1]
        if key in rec:
            steps.append(rec["step"])
    return steps


def wait_for(proc: subprocess.Popen, cond, timeout: float, poll: float = 0.0005) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(poll)
    return False


SIGNALS = {"term": signal.SIGTERM, "int": signal.SIGINT}


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
    sub: str = "pretrain",
    fault: str = "kill",
) -> dict[str, Any]:
    out = work / f"trial-{i:02d}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    proc = start(nproc, out, steps, env, sub=sub)
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
        done = out / ("teacher" if sub == "train-gan" else "backbone.json")
        pattern = ".*.tmp-*" if sub == "train-gan" else ".backbone.*.tmp-*"
        wait_for(
            proc, lambda: any(out.glob(pattern)) or any(out.glob(f"teacher/{pattern}")) or done.exists(), 900, 2e-4
        )
    killed_at = time.time() - t0
    snap = snapshot(out)
    exit_status = None
    if fault in SIGNALS:
        was_running, exit_status = interrupt(proc, SIGNALS[fault])
    else:
        was_running = kill(proc)
    snap_after = snapshot(out)  # (the kill itself may have raced one more file operation)
    damaged = corrupt_newest(out) if fault == "corrupt" else None
    resume = snap_after["files"]
    t1 = time.time()
    code, tail = finish(start(nproc, out, steps, env, resume=resume, sub=sub))
    rec = {
        "trial": i,
        "how": how,
        "fault": fault,
        "kill_after_s": round(killed_at, 3),
        "was_running": was_running,
        "phase": phase(snap_after, steps),
        "left_behind": snap_after,
        "seen_just_before_kill": snap,
        "resumed_with": "--resume" if resume else "fresh start (nothing to resume)",
        "resume_exit": code,
        "resume_s": round(time.time() - t1, 1),
    }
    if fault in SIGNALS:
        # a run the signal stopped exits 128 + signal after its checkpoint; one that had finished exits 0; during
        # start-up (torch still importing, --out untouched) Python's default handling ends it by the signal itself
        expected = (0, 128 + SIGNALS[fault].value) + ((-SIGNALS[fault].value,) if not snap_after["files"] else ())
        if nproc > 1:  # torchrun itself exits 1 when a signal stops it, whatever its workers returned
            expected += (1,)
        rec.update(exit_status=exit_status, exit_status_ok=exit_status in expected)
    if damaged:
        rec.update(corrupted=damaged, fell_back="falling back to the previous checkpoint" in tail or not resume)
    if code != 0:
        rec.update(identical=False, error=tail)
        return rec
    same = identical(reference, final_state(out, sub))
    rec.update(
        checks=same,
        identical=all(same.values()),
        log_reads_as_one_run=metric_steps(out, sub) == list(range(1, steps + 1)),
    )
    return rec


def main() -> None:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", choices=sorted(COMMANDS), default="pretrain", help="the sns command to interrupt")
    ap.add_argument("--trials", type=int, default=8, help="interruptions at uniformly random moments")
    ap.add_argument(
        "--signals",
        default="kill",
        help="comma list of kill, term, int, corrupt: the random trials cycle through them (default kill)",
    )
    ap.add_argument("--targeted", action="store_true", help="also kill mid-checkpoint-write (2x) and mid-export (1x)")
    ap.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun, gloo) ")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one, deleted)")
    ap.add_argument("--out", default=None, help="default bench/results/fault_injection[_gan][_nprocN].json")
    args = ap.parse_args()
    faults = [f.strip() for f in args.signals.split(",") if f.strip()]
    if not faults or any(f not in ("kill", "corrupt", *SIGNALS) for f in faults):
        ap.error(f"--signals {args.signals}: expected a comma list of kill, term, int, corrupt")
    sub = args.command
    if args.out is None:
        name = "fault_injection" + ("_gan" if sub == "train-gan" else "")
        name += "" if args.nproc == 1 else f"_nproc{args.nproc}"
        args.out = str(Path(__file__).parent / "results" / f"{name}.json")

    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="sns-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "fi_teacher.py").write_text(TEACHER_MODULE)
    env = environment(work)
    try:
        ref_dir = work / "uninterrupted"
        shutil.rmtree(ref_dir, ignore_errors=True)
        t0 = time.time()
        code, tail = finish(start(args.nproc, ref_dir, args.steps, env, sub=sub))
        wall = time.time() - t0
        if code != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{tail}")
        reference = final_state(ref_dir, sub)
        print(f"uninterrupted run: {wall:.1f} s, {args.steps} steps", flush=True)

        rng = random.Random(args.seed)
        plan = [("random", rng.uniform(0.0, wall), faults[k % len(faults)]) for k in range(args.trials)]
        if args.targeted:
            plan += [("checkpoint-write", None, "kill"), ("checkpoint-write", None, "kill")]
            plan += [("export-write", None, "kill")]
        trials = []
        for i, (how, when, fault) in enumerate(plan):
            rec = trial(i, how, when, args.nproc, args.steps, work, env, reference, args.seed, sub, fault)
            trials.append(rec)
            print(
                f"trial {i:2d} {how:16s} {fault:7s} at {rec['kill_after_s']:6.2f} s  {rec['phase']:<48s} "
                f"{rec['resumed_with']:<10s} -> {'bit-identical' if rec['identical'] else 'DIFFERENT'}",
                flush=True,
            )
        killed = [t for t in trials if t["was_running"]]
        by_fault = {
            f: {
                "trials": sum(t["fault"] == f for t in trials),
                "interrupted_while_running": sum(t["fault"] == f for t in killed),
                "resumed_bit_identical": sum(t["fault"] == f and t["identical"] for t in killed),
                "exit_status_as_documented": sum(t["fault"] == f and t.get("exit_status_ok", True) for t in trials),
            }
            for f in dict.fromkeys(t["fault"] for t in trials)
        }
        launcher = f"sns {sub}" if args.nproc == 1 else f"torchrun --nproc_per_node {args.nproc} -m squeezespan {sub}"
        result = {
            "what": f"interrupt a real `sns {sub}` run (SIGKILL to the subprocess and all its descendants, "
            "SIGTERM/SIGINT to the launcher, or SIGKILL then a damaged newest checkpoint) at random moments, resume "
            "it, compare the export and the final checkpoint with torch.equal against one uninterrupted run",
            "command": " ".join([launcher, "--out RUN"] + COMMANDS[sub](args.steps)),
            "sns_command": sub,
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
            "by_fault": by_fault,
            "details": trials,
        }
        print(
            f"{result['resumed_bit_identical']}/{len(killed)} runs interrupted mid-run ended bit-identical "
            f"to the uninterrupted one; by fault: {by_fault}",
            flush=True,
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
