"""--resume continues the run that is in --out, or says in one line why it cannot: the run's identity (its
resolved config and teacher checksum) is recorded in every checkpoint and compared before anything loads; on
--resume only the budget, logging, evaluation, device and precision keys may change."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_cli import TINY  # the CLI tests' tiny pretrain flags (tests/ is on sys.path)

from squeezespan.cli import main
from squeezespan.engine import RunDir, World, config_diff, describe_diff, state_fits, tensors_sha256
from squeezespan.errors import SnsError


def _run(tmp_path, name="run", seed="0"):
    out = tmp_path / name
    assert main(["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(out), "--seed", seed] + TINY) == 0
    return out


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize(
    "change, named",
    [
        (["width=0.25"], "width=0.125 (now 0.25)"),
        (["--data", "fashion-mnist"], "data='digits' (now 'fashion-mnist')"),
        (["--method", "simsiam"], "method='vicreg' (now 'simsiam')"),
        (["proj_dim=64"], "proj_dim=32 (now 64)"),
        (["lr=0.5"], "lr="),
        (["--seed", "4"], "seed=0 (now 4)"),
    ],
)
def test_resume_refuses_a_change_of_what_the_run_trains_before_touching_it(tmp_path, capsys, change, named):
    out = _run(tmp_path)
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress", *change]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --resume continues") and named in err
    assert "steps" in err and "log_every" in err  # it names what may change
    assert _snapshot(out) == before


def test_resume_may_extend_the_budget_and_change_logging(tmp_path, capsys):
    out = _run(tmp_path)
    argv = ["pretrain", "--out", str(out), "--resume", "--no-progress", "steps=3", "log_every=2", "knn_k=5"]
    assert main(argv) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (out / "checkpoints" / "ckpt-00000003.pt").is_file()


def test_an_edited_config_yaml_is_caught_by_the_checkpoints_identity(tmp_path, capsys):
    out = _run(tmp_path)
    cfg = out / "config.yaml"
    cfg.write_text(cfg.read_text().replace("width: 0.125", "width: 0.25"))
    ckpts = _snapshot(out / "checkpoints")
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no checkpoint in" in err and "width=0.125 (now 0.25)" in err
    assert _snapshot(out / "checkpoints") == ckpts  # nothing lost


def test_another_runs_checkpoint_copied_in_is_skipped_by_name(tmp_path, capsys):
    out, other = _run(tmp_path), _run(tmp_path, "other", seed="5")
    # the other run's (seed 5) checkpoint, disguised as this run's newest
    shutil.copy(other / "checkpoints" / "ckpt-00000002.pt", out / "checkpoints" / "ckpt-00000009.pt")
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress", "steps=3"]) == 0
    text = capsys.readouterr().out
    assert "ckpt-00000009.pt does not fit this run (it was trained with seed=5 (now 0))" in text
    assert "resumed from" in text and "ckpt-00000002.pt at step 2/3" in text


def test_a_checkpoint_of_other_shapes_without_identity_is_skipped_not_half_loaded(tmp_path):
    small, big = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    assert state_fits(small, small.state_dict(), "student") is None
    why = state_fits(small, big.state_dict(), "student")
    assert why == "its student weight has shape (2, 4), this run's (2, 3)"
    assert "unexpected" in state_fits(small, {**small.state_dict(), "x": torch.zeros(1)}, "student")
    run = RunDir(tmp_path, World(), log=lambda *_: None)
    run.prepare()
    run.save(1, {"student": big.state_dict()})
    with pytest.raises(SnsError, match=r"no checkpoint in .* fits this run: .*ckpt-00000001.pt: its student weight"):
        run.load_latest(lambda s: state_fits(small, s["student"], "student"))


def test_identity_diff_ignores_free_keys_and_keys_only_one_side_has():
    saved = {"width": 0.5, "steps": 10, "betas": (0.0, 0.99), "old_key": 1}
    now = {"width": 1.0, "steps": 20, "betas": [0.0, 0.99], "new_key": 2}
    assert config_diff(saved, now, {"steps"}) == {"width": (0.5, 1.0)}
    two = {"width": (0.5, 1.0), "method": ("sns", "kd")}
    assert describe_diff(two) == "width=0.5 (now 1.0), method='sns' (now 'kd')"


def test_teacher_fingerprint_follows_the_weights_not_the_path():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert tensors_sha256(a) == tensors_sha256(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert tensors_sha256(a) != tensors_sha256(b)
    assert tensors_sha256(torch.nn.BatchNorm1d(2))  # 0-dim buffers (num_batches_tracked) hash too
