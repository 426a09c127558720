"""Impossible limits are refused before the run directory is touched (issue 25 item 6).

The bad values are generated from the limit tables of squeezespan.checks (pretrain) and gan.config (train-gan):
for every key, each wrong type and each value just outside its range, plus the non-finite numbers. Each must
end `sns` with exit 2 and one `error:` line naming the key, with a pre-existing run directory (given --force)
left byte-identical.
"""

from __future__ import annotations

import pytest

from squeezespan import checks
from squeezespan.cli import main
from squeezespan.errors import SnsError
from squeezespan.gan import config as gan_config
from squeezespan.methods import resolve_method
from squeezespan.pretraining import PRETRAIN_DEFAULTS

NON_FINITE = [".nan", "inf", "-inf"]


def _whole_bad(low: int, none_ok: bool, high: int = checks.INT_LIMIT) -> list[str]:
    bad = [str(low - 1), f"{low + 0.5}", "abc", "true", "[1]", str(high), *NON_FINITE]
    return bad if none_ok else [*bad, "null"]


def _real_bad(low, above: bool, high, below: bool, none_ok: bool) -> list[str]:
    bad = ["abc", "true", "[1.0]", *NON_FINITE]
    if low is not None:
        bad.append(repr(float(low)) if above else repr(low - 1e-6))
    if high is not None:
        bad.append(repr(float(high)) if below else repr(high + 1e-6))
    return bad if none_ok else [*bad, "null"]


def _cases(whole: dict, real: dict) -> list[tuple[str, str]]:
    out = []
    for key, (low, none_ok) in whole.items():
        out += [(key, v) for v in _whole_bad(low, none_ok)]
    for key, spec in real.items():
        out += [(key, v) for v in _real_bad(*spec)]
    out += [("seed", v) for v in ["-1", str(2**32), str(2**63), "1.5", "abc", "true", ".nan"]]
    return out


PRETRAIN_CASES = _cases(checks._PRETRAIN_WHOLE, checks._PRETRAIN_REAL) + [
    (k, v) for k in checks._PRETRAIN_FLAGS for v in ["2", "abc", "null"]
]
GAN_CASES = _cases(gan_config._WHOLE, gan_config._REAL) + [
    (k, v) for k in ("mirror", "export_snapshots") for v in ["2", "abc", "null"]
]


@pytest.fixture
def old_run(tmp_path):
    """A finished-looking run directory whose bytes must not change."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-00000003.pt").write_bytes(b"old weights")
    (run / "config.yaml").write_text("steps: 3\n")
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    return run


def _snapshot(path):
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def _refused(argv, run, key, capsys):
    before = _snapshot(run)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], err
    assert _snapshot(run) == before


@pytest.mark.parametrize("key, value", PRETRAIN_CASES, ids=[f"{k}={v}" for k, v in PRETRAIN_CASES])
def test_pretrain_refuses_impossible_limits_before_touching_out(old_run, capsys, key, value):
    argv = ["pretrain", "--method", "vicreg", "--out", str(old_run), "--force", "--no-progress", f"{key}={value}"]
    _refused(argv, old_run, key, capsys)


@pytest.mark.parametrize("key, value", GAN_CASES, ids=[f"{k}={v}" for k, v in GAN_CASES])
def test_train_gan_refuses_impossible_limits_before_touching_out(old_run, capsys, key, value):
    argv = ["train-gan", "--out", str(old_run), "--force", "--no-progress", f"{key}={value}"]
    _refused(argv, old_run, key, capsys)


def test_values_at_the_edges_are_accepted():
    edges = dict(seed=2**32 - 1, keep_ckpts=1, ckpt_every=0, log_every=1, momentum=0.0, weight_decay=0, steps=0)
    checks.check_pretrain_config(resolve_method(dict(PRETRAIN_DEFAULTS, method="vicreg", **edges)))
    cfg = gan_config.check_config(dict(seed=2**32 - 1, keep_ckpts=1, max_minutes=0, fd_ref_kimg=None, augment_p=1))
    assert cfg["seed"] == 2**32 - 1
    with pytest.raises(SnsError, match=r"train-gan max_minutes=-1 must be a finite number >= 0 or null"):
        gan_config.check_config(dict(max_minutes=-1))
