"""`sns demo`: a fixed teacher budget (never a time limit), the bf16 key reaching every stage, and a report that
names the teacher's kimg and keeps the first run's timings when a rerun reuses the finished stages."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from squeezespan.cli import main
from squeezespan.config import resolve_config
from squeezespan.demo import DEMO_DEFAULTS, run_demo, student_config, teacher_config
from squeezespan.errors import SnsError
from squeezespan.gan import GAN_DEFAULTS

# Tiny budgets through the demo's documented keys: 2 teacher iterations of a narrow G/D, 2 student steps.
TINY_GAN = "gan_overrides=[fd_ref_kimg=null, sample_kimg=null, channel_max=16, ckpt_every=0]"
TINY_STUDENT = "pretrain_overrides=[knn_every=0, batch_size=32, width=0.125, ckpt_every=0]"
TINY = ["gan_kimg=0.032", "steps=2", "bf16=false", "device=cpu", TINY_GAN, TINY_STUDENT]


def _demo_cfg(**over):
    return resolve_config(DEMO_DEFAULTS, "demo", extra=over)


def test_demo_teacher_trains_for_kimg_never_against_the_clock():
    preset = resolve_config(GAN_DEFAULTS, "gan", "gan-digits")
    assert preset["max_minutes"] is None and preset["kimg"] > 0
    # even a time limit asked for through the demo's overrides is dropped: the budget is kimg alone
    cfg = teacher_config(_demo_cfg(gan_overrides=["max_minutes=0.01"], gan_kimg=3.0))
    assert cfg["max_minutes"] is None and cfg["kimg"] == 3.0


def test_demo_precision_key_reaches_teacher_and_students():
    for value, expected in (("fp16", "fp16"), ("bf16", "bf16"), ("auto", "auto"), (None, "auto")):  # None: presets'
        cfg = _demo_cfg(precision=value)
        assert teacher_config(cfg)["precision"] == expected
        assert student_config(cfg, "sns", "runs/t")["precision"] == expected
    for value, expected in ((False, "fp32"), (True, "bf16"), ("auto", "auto")):  # bf16=: the old spelling
        cfg = _demo_cfg(bf16=value)
        assert teacher_config(cfg)["precision"] == student_config(cfg, "sns", "runs/t")["precision"] == expected
    with pytest.raises(SnsError, match="bf16"):
        run_demo(dict(DEMO_DEFAULTS, bf16="yes"), "unused")
    with pytest.raises(SnsError, match=r"demo precision='half': expected auto, bf16, fp16, fp32 or null"):
        run_demo(dict(DEMO_DEFAULTS, precision="half"), "unused")
    with pytest.raises(SnsError, match="pretrain_overrides"):
        run_demo(dict(DEMO_DEFAULTS, pretrain_overrides=["steps"]), "unused")


def test_demo_rerun_keeps_first_run_timings_and_report_names_teacher_kimg(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "--resume to continue" not in printed  # no time limit, so never the train-gan message
    first = json.loads((out / "timings.json").read_text())["runs"]
    assert len(first) == 1
    assert {s: v["status"] for s, v in first[0]["stages"].items()} == dict.fromkeys(
        ("teacher", "sns", "vicreg", "probes"), "ran"
    )
    report = (out / "report.md").read_text()
    assert "**0.032 kimg**" in report and "no time limit" in report and "teacher (StyleGAN2, 0.032 kimg)" in report
    assert "FD-ref not measured" in report and "fp32" in report
    # the sample grid is readable: 8 x 8 samples of 32 px, each drawn 3x (2 px padding)
    assert Image.open(out / "teacher_samples.png").size == ((8 * 34 + 2) * 3,) * 2

    # a rerun (`sns demo` with --resume: its own config.yaml) reuses every stage and adds its own column
    assert main(["demo", "--out", str(out), "--resume", "--no-progress"]) == 0
    runs = json.loads((out / "timings.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0] == first[0]
    assert {s: v["status"] for s, v in runs[1]["stages"].items()} == {
        "teacher": "reused",
        "sns": "reused",
        "vicreg": "reused",
        "probes": "ran",
    }
    report = (out / "report.md").read_text()
    assert "| stage | run 1 (" in report and "| run 2 (" in report
    teacher_row = next(line for line in report.splitlines() if line.startswith("| teacher (StyleGAN2"))
    assert teacher_row.endswith(" | reused |")
    assert f"| {first[0]['stages']['teacher']['seconds']:.0f} s" in teacher_row
