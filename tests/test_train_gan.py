"""GAN training: losses and R1/EMA against hand-computed values, DiffAugment, exact resume, teacher export/reload."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from squeezespan.data.diffaug import DiffAugment, augment_cutout, augment_translation, parse_policy
from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint
from squeezespan.errors import SnsError
from squeezespan.gan import GAN_DEFAULTS, train_gan
from squeezespan.gan.loss import (
    d_loss_logistic,
    ema_beta,
    ema_update,
    g_loss_nonsaturating,
    lazy_adam,
    r1_penalty,
)
from squeezespan.teachers.directory import build_networks, load_teacher_dir, network_kwargs, save_teacher_dir

# A GAN small enough for a few CPU steps per second: 8 px, 16/8 channels, batch 4.
TINY = dict(
    data="tiny",
    device="cpu",
    resolution=8,
    z_dim=8,
    w_dim=8,
    mapping_layers=1,
    channel_base=64,
    channel_max=16,
    batch_size=4,
    mbstd_group_size=2,
    r1_interval=2,
    r1_gamma=1.0,
    ema_kimg=0.01,
    fd_ref_kimg=None,
    sample_kimg=None,
    ckpt_every=0,
    grid_size=4,
    log_every=1,
    mirror=True,
    ada_target=0.6,
    ada_interval=1,
    ada_kimg=0.1,
    augment_p=0.5,
)


def tiny_dataset(n: int = 12) -> SimpleNamespace:
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(
        name="tiny",
        images=torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8),
        labels=torch.arange(n) % 2,
    )


def run(tmp_path, name, resume=False, **over):
    return train_gan(
        {**TINY, **over},
        tmp_path / name,
        resume=resume,
        progress=False,
        dataset=tiny_dataset(),
        log=lambda *_: None,
    )


def final_checkpoint(run_dir):
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])


def assert_same_tree(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------------------- losses


def test_logistic_losses_match_their_formulas():
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [-3.0]])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    assert g_loss_nonsaturating(fake).item() == pytest.approx((sp(-0.5) + sp(3.0)) / 2)
    assert d_loss_logistic(real, fake).item() == pytest.approx((sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2)


def test_r1_penalty_hand_computed():
    # D(x) = sum(w * x) + sum(x^2): grad = w + 2x, so the penalty is sum((w + 2x)^2) per sample.
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, -1.0]], requires_grad=True)
    logits = (x * w).sum(1, keepdim=True) + x.square().sum(1, keepdim=True)
    pen = r1_penalty(logits, x)
    expected = torch.tensor([1.0**2 + 0.0**2 + 4.5**2, 3.0**2 + 0.0**2 + (-1.5) ** 2])
    assert torch.allclose(pen, expected)
    pen.sum().backward()  # the penalty is differentiable (needed to train D on it)
    assert torch.allclose(x.grad, 2 * 2 * (w + 2 * x.detach()))


def test_ema_update_and_beta_hand_computed():
    G, G_ema = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        G.weight.copy_(torch.tensor([[1.0, 2.0]]))
        G.bias.fill_(4.0)
        G_ema.weight.copy_(torch.tensor([[3.0, -2.0]]))
        G_ema.bias.fill_(0.0)
    ema_update(G_ema, G, 0.75)
    assert torch.allclose(G_ema.weight, torch.tensor([[0.75 * 3 + 0.25 * 1, 0.75 * -2 + 0.25 * 2]]))
    assert G_ema.bias.item() == pytest.approx(1.0)
    # Half-life of ema_kimg thousand images: batch 32 with 10 kimg gives 0.5 ** (32 / 10000).
    assert ema_beta(32, 10**6, 10.0, None) == pytest.approx(0.5 ** (32 / 10000))
    # Rampup caps the half-life at rampup * images so far; at the start G_ema copies G.
    assert ema_beta(32, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 0, 10.0, 0.05) == 0.0


def test_lazy_adam_adjusts_lr_and_betas():
    p = [nn.Parameter(torch.zeros(1))]
    opt = lazy_adam(p, 0.0025, (0.0, 0.99), 1e-8, 16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert group["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert lazy_adam(p, 0.0025, (0.0, 0.99), 1e-8, None).param_groups[0]["lr"] == 0.0025


# ------------------------------------------------------------------------------------------------ DiffAugment


def test_diffaugment_keeps_shape_and_is_differentiable():
    x = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = DiffAugment("color,translation,cutout")(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # Colour changes stay bounded: brightness +-0.5, saturation x2, contrast x1.5 around the means.
    assert y.abs().max() <= 6.0
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_and_cutout_keep_the_range_and_move_pixels():
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    t = augment_translation(x, 0.125)
    c = augment_cutout(x, 0.5)
    for y in (t, c):
        assert y.shape == x.shape
        assert y.min() >= min(x.min().item(), 0.0) and y.max() <= max(x.max().item(), 0.0)
    # Every translated image is its source shifted by at most 2 px, so a matching shift exists.
    for i in range(8):
        assert any(
            torch.equal(t[i, :, 2:-2, 2:-2], x[i, :, 2 - dy : 14 - dy, 2 - dx : 14 - dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
    # Cutout zeroes a square of 8x8 (clipped at the border) and nothing else.
    zeroed = (c == 0) & (x != 0)
    assert all(0 < int(zeroed[i].sum()) <= 64 for i in range(8))


def test_diffaugment_p0_is_identity_and_policy_errors():
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(DiffAugment("color,translation,cutout", p=0.0)(x), x)
    assert parse_policy("none") == () and parse_policy("color, cutout") == ("color", "cutout")
    with pytest.raises(SnsError, match="unknown op"):
        parse_policy("color,rotate")


# --------------------------------------------------------------------------------------------- training loop


def test_one_training_step_changes_G_and_D(tmp_path):
    run(tmp_path, "one", kimg=0.004)  # one iteration of batch 4 (with R1: step 0 is a regularisation step)
    G_kwargs, D_kwargs = network_kwargs({**GAN_DEFAULTS, **TINY}, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY.get("seed", 0))
        G0, D0 = build_networks(G_kwargs, D_kwargs)
    ck = final_checkpoint(tmp_path / "one")
    assert ck["state"]["step"] == 1 and ck["state"]["cur_nimg"] == 4
    d_changed = [k for k, v in D0.state_dict().items() if not torch.equal(v, ck["D"][k])]
    assert any(k.startswith("b8.") for k in d_changed) and any(k.startswith("b4.") for k in d_changed)
    g_changed = [k for k, v in G0.state_dict().items() if not torch.equal(v, ck["G"][k])]
    assert any(k.startswith("synthesis.") for k in g_changed) and any(k.startswith("mapping.") for k in g_changed)


def test_resume_refuses_a_checkpoint_of_another_config_and_names_the_keys(tmp_path):
    run(tmp_path, "r", kimg=0.008)
    before = {p: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()}
    with pytest.raises(SnsError) as e:
        run(tmp_path, "r", resume=True, kimg=0.016, lr=0.01, channel_max=32)
    msg = str(e.value)
    assert "\n" not in msg and "no checkpoint in" in msg and "channel_max=16 (now 32)" in msg and "lr=" in msg
    assert {p: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()} == before
    assert run(tmp_path, "r", resume=True, kimg=0.016, log_every=2)["resumed_from_step"] == 2  # free keys


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full", kimg=0.016)  # 4 iterations
    run(tmp_path, "split", kimg=0.008)  # 2 iterations, stop ...
    resumed = run(tmp_path, "split", resume=True, kimg=0.016)  # ... resume for 2 more
    assert full["steps"] == 4 and resumed["steps"] == 4 and resumed["resumed_from_step"] == 2
    a, b = final_checkpoint(tmp_path / "full"), final_checkpoint(tmp_path / "split")
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "data_order", "augment_p", "state"):
        assert_same_tree(a[key], b[key], key)
    assert a["augment_p"] != TINY["augment_p"]  # ADA moved p, and the move was restored exactly
    # The metrics log reads as one uninterrupted run.
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_run_dir_holds_samples_teacher_and_summary(tmp_path):
    s = run(tmp_path, "r", kimg=0.008, sample_kimg=0.004)
    d = tmp_path / "r"
    assert (d / "samples" / "reals.png").exists() and s["samples"] and (d / "samples").glob("fakes-*.png")
    assert len(list((d / "samples").glob("fakes-*.png"))) == 3  # start, 4 and 8 images
    meta = json.loads((d / "teacher" / "teacher.json").read_text())
    assert meta["G_kwargs"]["img_resolution"] == 8 and meta["D_kwargs"]["img_channels"] == 1
    assert json.loads((d / "summary.json").read_text())["steps"] == 2


def test_saved_teacher_reloads_to_identical_outputs(tmp_path):
    G_kwargs, D_kwargs = network_kwargs({**GAN_DEFAULTS, **TINY}, 3)
    G, D = build_networks(G_kwargs, D_kwargs)
    G_ema = build_networks(G_kwargs, D_kwargs)[0]
    with torch.no_grad():  # non-trivial noise strengths so the const-noise buffers matter
        for m in G_ema.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.3)
    save_teacher_dir(tmp_path / "t", G, G_ema, D, G_kwargs, D_kwargs, {"dataset": "tiny"})
    G2, D2, meta = load_teacher_dir(tmp_path / "t")
    assert meta["dataset"] == "tiny"
    z, c, img = torch.randn(4, 8), torch.zeros(4, 0), torch.rand(4, 3, 8, 8) * 2 - 1
    G_ema.eval(), D.eval()
    with torch.no_grad():
        assert torch.equal(G_ema(z, c, noise_mode="const"), G2(z, c, noise_mode="const"))
        assert torch.equal(D(img, c), D2(img, c))
    assert not any(p.requires_grad for p in G2.parameters())
    # A run dir and teacher.json both resolve to the same teacher.
    (tmp_path / "run").mkdir()
    (tmp_path / "t").rename(tmp_path / "run" / "teacher")
    G3, _, _ = load_teacher_dir(tmp_path / "run")
    G4, _, _ = load_teacher_dir(tmp_path / "run" / "teacher" / "teacher.json")
    with torch.no_grad():
        assert torch.equal(G3(z, c, noise_mode="const"), G4(z, c, noise_mode="const"))


def test_clear_errors_for_bad_input(tmp_path):
    with pytest.raises(SnsError, match="unknown key"):
        train_gan({"lr_typo": 1.0}, tmp_path / "x", dataset=tiny_dataset(), progress=False)
    with pytest.raises(SnsError, match="resolution"):
        run(tmp_path, "y", resolution=16)
    with pytest.raises(SnsError, match="teacher.json"):
        load_teacher_dir(tmp_path)


def test_max_minutes_stops_cleanly_and_resume_continues(tmp_path):
    s = run(tmp_path, "t", kimg=0.012, max_minutes=1e-6)
    assert s["stopped_by_time"] and s["steps"] == 1
    assert (tmp_path / "t" / "teacher" / "G_ema.safetensors").exists()
    s = run(tmp_path, "t", resume=True, kimg=0.012)
    assert not s["stopped_by_time"] and s["steps"] == 3 and s["resumed_from_step"] == 1


def test_old_key_names_are_one_line_errors_for_python_callers(tmp_path):
    with pytest.raises(SnsError, match=r"config key 'batch' was renamed to 'batch_size'$"):
        run(tmp_path, "old", batch=4)
    with pytest.raises(SnsError, match=r"config key 'snapshot_kimg' was renamed to 'ckpt_every' \(now counted"):
        run(tmp_path, "old", snapshot_kimg=1.0)
    assert not (tmp_path / "old").exists()  # checked before the run directory is touched


def test_config_yaml_records_what_ran(tmp_path):
    run(tmp_path, "r", kimg=0.004, device="auto", channels=None, precision="auto")
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["channels"] == 1 and cfg["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert cfg["precision"] in ("bf16", "fp16", "fp32") and "bf16" not in cfg  # auto decided for this device
    assert cfg["batch_size"] == 4 and cfg["ckpt_every"] == 0 and "batch" not in cfg
    meta = json.loads((tmp_path / "r" / "teacher" / "teacher.json").read_text())
    assert meta["config"] == cfg


def test_checkpoint_every_counts_iterations(tmp_path):
    run(tmp_path, "c", kimg=0.02, ckpt_every=2, keep_ckpts=10, export_snapshots=True)
    names = [p.name for p in sorted((tmp_path / "c" / "checkpoints").iterdir())]
    assert names == [f"ckpt-{s:08d}.pt" for s in (2, 4, 5)]  # every 2 iterations, and the last (5)
    assert (tmp_path / "c" / "snapshots" / "kimg-000000" / "teacher.json").exists()


# ------------------------------------------------------------------------------------------- SIGINT / SIGTERM

GAN_CLI = ["resolution=8", "z_dim=8", "w_dim=8", "mapping_layers=1", "channel_base=64", "channel_max=16"]
GAN_CLI += ["batch_size=4", "mbstd_group_size=2", "r1_interval=2", "r1_gamma=1.0", "fd_ref_kimg=null"]
GAN_CLI += ["sample_kimg=null", "ckpt_every=0", "keep_ckpts=2", "log_every=1", "ada_target=0.6", "ada_interval=1"]
GAN_CLI += ["augment_p=0.5", "threads=1", "kimg=0.4"]  # 100 iterations: the signal lands long before the end


def _train_gan(out, *extra) -> list:
    cmd = [sys.executable, "-m", "squeezespan", "train-gan", "--data", "digits", "--device", "cpu", "--no-progress"]
    return cmd + ["--out", str(out), *GAN_CLI, *extra]


def _signalled_run(out: Path, sig: int, env: dict) -> dict:
    """Start a train-gan run, send ``sig`` once it is iterating; it must checkpoint, say so and exit 128 + sig."""
    proc = subprocess.Popen(_train_gan(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be signalled"
            time.sleep(0.01)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr[-2000:]  # 130 (Ctrl-C) or 143 (SIGTERM): not finished
    summary = json.loads(stdout[stdout.index("{") :])
    assert summary["interrupted"] is True and 3 <= summary["steps"] < 100
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == f"ckpt-{summary['steps']:08d}.pt"
    assert f"{signal.Signals(sig).name}: checkpoint saved at step {summary['steps']}" in stderr + stdout
    assert not (out / "teacher").exists() and not (out / "summary.json").exists()  # nothing half-finished exported
    return summary


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path):
    _signalled_run(tmp_path / "stopped", signal.SIGINT, dict(os.environ, OMP_NUM_THREADS="1"))


def test_sigterm_checkpoints_and_resume_continues_bit_identically(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # bit-identical needs the same intra-op thread count
    # the uninterrupted run, alongside (each process is mostly start-up)
    straight = subprocess.Popen(
        _train_gan(tmp_path / "straight"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        out = tmp_path / "stopped"
        stopped = _signalled_run(out, signal.SIGTERM, env)
        done = subprocess.run(_train_gan(out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout[done.stdout.index("{") :])["resumed_from_step"] == stopped["steps"]
        assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    finally:
        straight.kill()
        straight.communicate()
    a, b = final_checkpoint(tmp_path / "straight"), final_checkpoint(out)
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "data_order", "augment_p", "state"):
        assert_same_tree(a[key], b[key], key)
