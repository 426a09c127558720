"""Several processes (torchrun, gloo on CPU) train the same model as one process with the same global batch."""

import json
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

from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint
from squeezespan.errors import SnsError

TESTS = Path(__file__).parent
# digits at 16 px, 1/8-width ResNet-18, tiny random StyleGAN2 teacher; one intra-op thread everywhere so
# that the only difference between the runs is how the batch is split over processes
TINY = [
    "--data",
    "digits",
    "--teacher",
    "tiny_teacher:make",
    "--device",
    "cpu",
    "--no-progress",
    "--seed",
    "0",
    *tiny.overrides(drop=("steps", "ckpt_every"), log_every=1),
]


def _env(scratch: Path) -> dict:
    """The subprocesses' environment; their TMPDIR is inside `scratch` (a test's tmp_path), because torchrun's
    elastic agent leaves a torchelastic_* folder in TMPDIR per run, which pytest then removes with the test."""
    tmp = scratch / "tmpdir"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        TMPDIR=str(tmp),
    )
    env.pop("WORLD_SIZE", None)
    return env


def _cmd(nproc: int) -> list:
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


def _pretrain(nproc: int, out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(
        _cmd(nproc) + ["--out", str(out), *TINY, *args],
        env=_env(out.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _initial_state(run_dir: Path) -> dict:
    """The student and objective of ``run_dir`` as built before its first step (its config.yaml, same seed)."""
    import yaml

    from squeezespan.pretraining import build_run

    run = build_run(yaml.safe_load((run_dir / "config.yaml").read_text()), torch.device("cpu"))
    return dict(student=run.student.state_dict(), objective=run.objective.state_dict())


def _assert_same_training(a: dict, b: dict, init: dict, share: float = 0.1, atol: float = 0.0) -> None:
    """Every float tensor of ``b`` lies within ``share`` of how far training moved it in ``a`` (per tensor), plus
    ``atol`` for tensors that training barely moved.

    Two processes sum the batch in another order than one, and three steps amplify that float32 round-off
    (seen: 1.6% of a tensor's movement at most, 1.8e-5 absolute on a BatchNorm running_var, on an AMD EPYC);
    a splitting bug moves a tensor differently by a share of the order of one (per-rank BatchNorm statistics:
    2.6 times bn1.bias's movement).
    """
    assert a.keys() == b.keys() == init.keys()
    for k, v in a.items():
        if not v.dtype.is_floating_point:
            assert torch.equal(v, b[k]), k
            continue
        moved = (v.double() - init[k].double()).abs().max().item()
        diff = (v.double() - b[k].double()).abs().max().item()
        msg = f"{k}: one and two processes differ by {diff:.3g}, training moved it {moved:.3g}"
        assert diff <= share * moved + atol, msg


def test_two_processes_train_the_same_model_as_one(tmp_path):
    # augmentation off: each rank draws its own augmentation parameters, so only with it off are the two runs
    # the same function of the data; everything else (teacher latents, real shards, BatchNorm and the
    # variance/covariance terms over the global batch, gradient scaling) must match
    args = ["--method", "sns", "steps=3", "lr=0.0003", "ckpt_every=0", "augment.enabled=false"]
    _pretrain(1, tmp_path / "one", *args)
    two = _pretrain(2, tmp_path / "two", *args)
    a, b = (
        load_file(str(tmp_path / "one" / "backbone.safetensors")),
        load_file(str(tmp_path / "two" / "backbone.safetensors")),
    )
    init = _initial_state(tmp_path / "one")
    moved = max((a[k] - v).abs().max().item() for k, v in init["student"].items() if k.endswith("conv1.weight"))
    assert moved > 1e-3  # the weights did move: the equality below is not the equality of two untrained nets
    _assert_same_training(a, b, init["student"])
    # the full objective (projector, squeeze module) agrees too
    ca = load_checkpoint(list_checkpoints(tmp_path / "one" / "checkpoints")[-1])
    cb = load_checkpoint(list_checkpoints(tmp_path / "two" / "checkpoints")[-1])
    _assert_same_training(ca["objective"], cb["objective"], init["objective"])
    assert cb["world_size"] == 2 and len(cb["rng_ranks"]) == 2
    # one voice: rank 0 alone wrote the log, one line per step, with the loss of the global batch
    la = [json.loads(ln) for ln in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lb] == [1, 2, 3]
    # step 1 starts from the same weights: its statistics of the global batch agree to float round-off; later
    # steps inherit the round-off of the weights (seen: real_cov 2.6e-4 apart, relative, at step 3)
    for x, y in zip(la, lb):
        rel = 1e-5 if x["step"] == 1 else 1e-3
        for key in ("loss", "syn_var", "syn_std", "real_cov"):
            assert abs(x[key] - y[key]) <= rel * abs(x[key]), (x["step"], key, x[key], y[key])
    assert two.stdout.count('"export"') == 1


def test_two_processes_train_a_timm_student_like_one(tmp_path):
    """A timm student (ImageNet stem, timm's fused BatchNormAct2d layers) splits over processes like one.

    One step only: at 16 px its last stages see 1x1 maps, BatchNorm then normalises over 8 values per channel,
    and three steps at this lr amplify round-off to the size of the movement itself, in one process as well
    (seen: 1 vs 2 intra-op threads of a single process differ by 0.84 of layer4's movement), so only the first
    step can tell a splitting error (per-rank BatchNorm statistics: of the order of the movement) from round-off
    (seen: at most 1.5e-4 of a tensor's movement).
    """
    args = ["--method", "sns", "arch=timm:test_efficientnet", "width=1.0", "batch_size=8", "lr=0.1", "steps=1"]
    args += ["ckpt_every=0", "augment.enabled=false"]
    _pretrain(1, tmp_path / "one", *args)
    _pretrain(2, tmp_path / "two", *args)
    a, b = (load_file(str(tmp_path / d / "backbone.safetensors")) for d in ("one", "two"))
    init = {k.removeprefix("net."): v for k, v in _initial_state(tmp_path / "one")["student"].items()}
    assert any(".bn" in k for k in a)  # the BatchNorm layers whose statistics must span both processes
    # atol: a last-BatchNorm bias of a block moved by 8e-9 in one step and 1.8e-8 is float round-off of it
    _assert_same_training(a, b, init, share=2e-3, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vicreg", "simsiam"])
def test_two_processes_equal_one_other_methods(tmp_path, method):
    args = ["--method", method, "steps=3", "lr=0.0003", "ckpt_every=0", "augment.enabled=false"]
    _pretrain(1, tmp_path / "one", *args)
    _pretrain(2, tmp_path / "two", *args)
    _assert_same_training(
        load_file(str(tmp_path / "one" / "backbone.safetensors")),
        load_file(str(tmp_path / "two" / "backbone.safetensors")),
        _initial_state(tmp_path / "one")["student"],
    )


# ---- the pieces, in two spawned processes


def _pieces_worker(rank: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    from squeezespan.engine.distributed import convert_batchnorm, gather_batch
    from squeezespan.methods import losses

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        res = {}
        torch.manual_seed(0)
        x = (torch.randn(8, 3, 5, 5) * 3 + 1)[rank * 4 : (rank + 1) * 4].requires_grad_(True)
        bn = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.3))
        with torch.no_grad():
            bn[0].weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        convert_batchnorm(bn, torch.device("cpu"))
        y = bn(x)
        w = torch.arange(8 * 3 * 25, dtype=torch.float32).reshape(8, 3, 5, 5).sin()
        # a loss of the global batch: each rank gathers the outputs
        (gather_batch(y) * w).sum().backward()
        for p in bn.parameters():  # what DDP does: average over ranks
            dist.all_reduce(p.grad)
            p.grad /= 2
        res.update(
            y=y.detach(),
            x_grad=x.grad,
            w_grad=bn[0].weight.grad,
            b_grad=bn[0].bias.grad,
            rm=bn[0].running_mean,
            rv=bn[0].running_var,
            kind=type(bn[0]).__name__,
        )
        torch.manual_seed(1)
        z1, z2 = (torch.randn(8, 6) @ torch.randn(6, 6)).chunk(2, dim=1)[0], torch.randn(8, 3)
        z1 = z1[rank * 4 : (rank + 1) * 4].requires_grad_(True)
        loss, _ = losses.vicreg(z1, z2[rank * 4 : (rank + 1) * 4])
        loss.backward()
        res.update(vic_loss=loss.detach(), vic_grad=z1.grad / 2)  # / world size: DDP's average
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _bf16_worker(rank: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    from squeezespan.engine import device as engine_device
    from squeezespan.engine.distributed import World

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        engine_device.bf16_native = lambda device: rank == 1  # mixed hardware: only rank 1 computes bf16 natively
        cfg = {"precision": "auto", "seed": rank}
        cfg = engine_device.decide_precision(cfg, World(rank=rank, size=2), log=lambda *a: None)
        torch.save(cfg, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_on_mixed_hardware_all_train_in_rank_0s_precision(tmp_path):
    # pretrain and train-gan decide precision=auto with decide_precision: rank 0 chooses, config.yaml records it
    import torch.multiprocessing as mp

    mp.spawn(_bf16_worker, args=(_rendezvous(tmp_path), str(tmp_path / "cfg")), nprocs=2, join=True)
    cfgs = [torch.load(tmp_path / f"cfg.{r}") for r in range(2)]
    assert cfgs == [{"precision": "fp32", "seed": 0}] * 2  # rank 1 would have chosen bf16 on its own


def _rendezvous(tmp_path: Path) -> str:
    """A file the spawned ranks meet at: unlike a free TCP port picked in advance, no other process can take it."""
    return f"file://{tmp_path / 'rendezvous'}"


def test_global_batchnorm_and_gathered_losses_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(
        _pieces_worker, args=(_rendezvous(tmp_path), str(tmp_path / "res")), nprocs=2, start_method="spawn"
    )
    r0, r1 = (torch.load(tmp_path / f"res.{r}") for r in range(2))
    assert r0["kind"] == "GlobalBatchNorm"
    # the same computation in one process with the whole batch and torch's BatchNorm2d
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 5, 5) * 3 + 1).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
    y = bn(x)
    w = torch.arange(8 * 3 * 25, dtype=torch.float32).reshape(8, 3, 5, 5).sin()
    (y * w).sum().backward()
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([r0["x_grad"], r1["x_grad"]]) / 2, x.grad, atol=1e-5, rtol=1e-5)
    for r in (r0, r1):  # parameters and running statistics: identical on both ranks, equal to one process
        torch.testing.assert_close(r["w_grad"], bn.weight.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(r["b_grad"], bn.bias.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(r["rm"], bn.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r["rv"], bn.running_var, atol=1e-6, rtol=1e-5)  # unbiased over all 200 values
    from squeezespan.methods import losses

    torch.manual_seed(1)
    z1, z2 = (torch.randn(8, 6) @ torch.randn(6, 6)).chunk(2, dim=1)[0], torch.randn(8, 3)
    z1.requires_grad_(True)
    loss, _ = losses.vicreg(z1, z2)
    loss.backward()
    assert torch.allclose(r0["vic_loss"], loss) and torch.allclose(r1["vic_loss"], loss)
    torch.testing.assert_close(torch.cat([r0["vic_grad"], r1["vic_grad"]]), z1.grad, atol=1e-6, rtol=1e-5)


def test_gather_and_batchnorm_are_plain_in_one_process():
    from squeezespan.engine.distributed import GlobalBatchNorm, World, convert_batchnorm, gather_batch

    z = torch.randn(4, 3)
    assert gather_batch(z) is z
    net = convert_batchnorm(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)), torch.device("cpu"))
    assert isinstance(net[1], GlobalBatchNorm)
    ref = torch.nn.BatchNorm1d(3)
    ref.load_state_dict(net[1].state_dict())  # same keys as BatchNorm1d
    x = torch.randn(6, 3)
    torch.testing.assert_close(net[1](x), ref(x))
    w = World(rank=1, size=4)
    assert w.shard(16) == slice(4, 8) and not w.is_main


def test_batch_must_split_evenly_over_processes():
    from squeezespan.pretraining import check_divisible

    check_divisible(16, 8, 8, 2)
    with pytest.raises(SnsError, match=r"synthetic images per step = 9 does not split evenly over WORLD_SIZE=2"):
        check_divisible(18, 9, 9, 2)


def test_world_size_without_torchrun_is_a_clear_error(monkeypatch):
    from squeezespan.engine.distributed import setup

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(SnsError, match="MASTER_ADDR is not set: launch multi-process runs with torchrun"):
        setup("cpu")


def _kill_tree(proc) -> None:
    """SIGKILL torchrun and its workers (each worker runs in a session of its own, so not its process group)."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    todo, tree = [proc.pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.mark.slow
def test_two_process_run_killed_and_resumed_is_bit_identical(tmp_path):
    """SIGKILL to torchrun and all its workers (as a node failure would), then `torchrun ... --resume`,
    augmentation on."""
    args = ["--method", "sns", "steps=6", "ckpt_every=1", "keep_ckpts=2"]
    _pretrain(2, tmp_path / "straight", *args)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(2) + ["--out", str(out), *TINY, *args],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while not (out / "checkpoints" / "ckpt-00000003.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
            time.sleep(0.02)
    finally:
        _kill_tree(proc)
    left = list_checkpoints(out / "checkpoints")
    time.sleep(1.0)
    assert list_checkpoints(out / "checkpoints") == left  # the workers died too: nothing moves any more
    assert not (out / "backbone.safetensors").exists()
    _pretrain(2, out, *args, "--resume")
    a, b = load_file(str(tmp_path / "straight" / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same checkpoint resumed by ONE process: it continues and says why it cannot be bit-identical
    one = subprocess.run(
        _cmd(1) + ["--out", str(out), "--resume", "--no-progress"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0 and "written by 2 process(es), this run has 1" in one.stdout + one.stderr


@pytest.mark.slow
def test_train_gan_two_processes_stay_in_sync_and_resume(tmp_path):
    # every checkpoint compares the weights of all ranks (train-gan raises if they differ), so two checkpoints
    # prove the gradients were averaged; then the run continues under torchrun with --resume
    gan = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "squeezespan",
        "train-gan",
        "--data",
        "digits",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "gan"),
        "resolution=8",
        "z_dim=8",
        "w_dim=8",
        "mapping_layers=1",
        "channel_base=64",
        "channel_max=16",
        "batch_size=8",
        "mbstd_group_size=2",
        "r1_interval=2",
        "r1_gamma=1.0",
        "fd_ref_kimg=null",
        "sample_kimg=null",
        "ckpt_every=2",
        "grid_size=4",
        "log_every=1",
        "ada_target=0.6",
        "ada_interval=1",
        "augment_p=0.5",
    ]
    first = subprocess.run(gan + ["kimg=0.032"], env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = list_checkpoints(tmp_path / "gan" / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    assert len(load_checkpoint(ckpts[-1])["rng_ranks"]) == 2
    assert (tmp_path / "gan" / "teacher" / "teacher.json").exists()
    more = subprocess.run(
        gan + ["kimg=0.048", "--resume"], env=_env(tmp_path), capture_output=True, text=True, timeout=240
    )
    assert more.returncode == 0, more.stderr[-3000:]
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # rank 0 alone logs, one line per step
