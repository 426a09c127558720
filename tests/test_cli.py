"""The `sns` command end to end on tiny configs: conventions, outputs, and one-line errors."""

import json
import subprocess
import sys

import pytest
import yaml

from squeezespan.cli import main

TINY = [
    "resolution=16",
    "width=0.125",
    "batch_size=16",
    "steps=2",
    "proj_hidden=32",
    "proj_dim=32",
    "squeeze_hidden=32",
    "final_eval=false",
    "ckpt_every=0",
    "--no-progress",
    "--device",
    "cpu",
]


def test_python_dash_m_is_sns():
    out = subprocess.run([sys.executable, "-m", "squeezespan", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "train-gan" in out.stdout


def test_data_info_digits(capsys):
    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1437 images" in out and "360 images" in out and "channels    1" in out


def test_pretrain_then_resume_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(run), "--seed", "3"] + TINY) == 0
    assert (run / "backbone.safetensors").exists() and (run / "summary.json").exists()
    # a finished run directory is not overwritten without --resume/--force
    assert main(["pretrain", "--method", "vicreg", "--out", str(run)] + TINY) == 2
    assert "is not empty" in capsys.readouterr().err
    # a bare --resume continues with the run's own config (seed 3 included)
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    # overrides apply on top of the run's own config (here: train 2 more steps), not on top of the defaults
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress", "steps=4"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["steps"] == 4 and saved["seed"] == 3 and saved["width"] == 0.125
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()][-1] == 4
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--data",
                "digits",
                "--backbone",
                str(run),
                "--backbone",
                "raw",
                "--out",
                str(ev),
                "resolution=16",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((ev / "eval.json").read_text())["results"]
    assert [r["name"].split(" ")[0] for r in rows] == ["vicreg", "raw"]
    assert all(0 <= r["linear"]["top1"] <= 100 for r in rows)
    assert "| raw pixels | fast |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--method", "nope"], "--method 'nope' is unknown"),
        (["pretrain", "--preset", "nope"], "--preset 'nope' is unknown"),
        (["pretrain", "--data", "nope"], "nope"),
        (["pretrain", "lr=fast"], "'lr' must be float"),
        (["pretrain", "batchsize=3"], "unknown key 'batchsize'"),
        (["pretrain", "--device", "cuda:7"], "--device"),
        (["data", "info", "cifar10", "--root", "/nonexistent"], "cifar-10-batches-py"),
        (["eval", "--protocol", "fast", "--backbone", "/nonexistent/backbone.safetensors"], "nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    if argv[0] != "data":
        argv = argv + ["--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_bad_yaml_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: [0.1\n")
    assert main(["pretrain", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory's parent should be")
    assert main(["pretrain", "--method", "vicreg", "--out", str(blocker / "run")] + TINY) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "run" in err
    assert blocker.read_text().startswith("a file")  # nothing on disk was touched
