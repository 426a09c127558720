"""CLI habits: --version, `sns config show`, the run manifest (manifest.json) and -q/--quiet."""

import json
from pathlib import Path

import pytest
import tiny
import torch
import yaml

import squeezespan
from squeezespan import cli
from squeezespan.cli import main
from squeezespan.errors import SnsError
from squeezespan.manifest import MANIFEST_NAME, environment, git_commit, run_manifest, write_manifest

TINY = [*tiny.overrides(), "--device", "cpu"]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"sns {squeezespan.__version__}"


def test_config_show_resolves_like_a_run(capsys):
    assert main(["config", "show", "--method", "kd", "lr=0.1", "augment.blur_p=0"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    # kd's own defaults fill the keys left at null, as config.yaml of the run would record them
    assert cfg["method"] == "kd" and cfg["lr"] == 0.1 and cfg["augment"]["blur_p"] == 0
    assert cfg["syn_ratio"] == 1.0 and cfg["squeeze_depth"] == 0 and cfg["w_var"] == 0.0
    assert main(["config", "show", "--preset", "gan-digits", "kimg=3"]) == 0  # the preset's kind: gan
    gan = yaml.safe_load(capsys.readouterr().out)
    assert gan["kimg"] == 3 and "z_dim" in gan and "method" not in gan
    assert main(["config", "show", "--kind", "eval", "--preset", "digits"]) == 2
    assert main(["config", "show", "bogus_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "unknown key 'bogus_key'" in err


def test_manifest_records_environment_and_command(tmp_path):
    (tmp_path / "run").mkdir()
    path = write_manifest(tmp_path / "run", ["pretrain", "--out", "run dir"], kind="pretrain")
    doc = json.loads(path.read_text())
    assert doc["command"] == "sns pretrain --out 'run dir'" and doc["kind"] == "pretrain"
    assert doc["squeezespan"] == squeezespan.__version__ and doc["torch"] == torch.__version__
    assert doc["cpu"] and doc["started"].endswith("Z") and "torchvision" in doc
    if torch.cuda.is_available():
        assert doc["gpus"] and doc["cuda"]
    # this checkout: the commit of the package's own repository
    repo = Path(squeezespan.__file__).resolve().parents[2]
    if (repo / ".git").exists():
        assert len(doc["git"]["commit"]) == 40
        assert environment()["git"]["commit"] == doc["git"]["commit"]
    assert git_commit(tmp_path) is None  # not a checkout: no commit
    # a second segment (a resumed run) keeps the first under `previous`
    write_manifest(tmp_path / "run", ["pretrain", "--resume"])
    doc2 = json.loads(path.read_text())
    assert doc2["command"] == "sns pretrain --resume" and doc2["previous"][0]["command"] == doc["command"]


def test_run_manifest_status_and_failed_start_leaves_no_trace(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError):
        with run_manifest(run, ["pretrain"]):
            (run / ".lock").write_text("")  # hidden entries are not results
            raise ValueError("config error before anything was written")
    assert not (run / MANIFEST_NAME).exists()  # the directory can be reused without --force
    with run_manifest(run, ["pretrain"]) as ending:
        (run / "summary.json").write_text("{}")
        ending["status"] = "interrupted"
    doc = json.loads((run / MANIFEST_NAME).read_text())
    assert doc["status"] == "interrupted" and doc["ended"] >= doc["started"]
    before = (run / MANIFEST_NAME).read_bytes()
    with pytest.raises(SnsError):  # a refused command (bad input, damaged checkpoint) changes nothing
        with run_manifest(run, ["pretrain", "--resume"]):
            raise SnsError("checkpoint is damaged")
    assert (run / MANIFEST_NAME).read_bytes() == before
    with pytest.raises(RuntimeError):
        with run_manifest(run, ["pretrain", "--resume"]):
            raise RuntimeError("crash")
    doc = json.loads((run / MANIFEST_NAME).read_text())
    assert doc["status"] == "failed" and doc["previous"][0]["status"] == "interrupted"


def test_pretrain_writes_manifest_and_quiet_prints_only_the_summary(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "-q", "--method", "vicreg", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["steps"] == 2  # stdout holds the summary alone: no progress lines
    doc = json.loads((run / MANIFEST_NAME).read_text())
    assert doc["kind"] == "pretrain" and doc["status"] == "finished" and "--method vicreg" in doc["command"]


def test_train_gan_writes_manifest_and_quiet_keeps_warnings(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_train_gan(cfg, run_dir, resume=False, progress=True, log=print):
        seen["progress"] = progress
        log("kimg 0.1 of 1: loss 0.5")
        log("warning: something the user must know")
        (Path(run_dir) / "summary.json").write_text("{}")
        return {"interrupted": True}

    monkeypatch.setattr(cli, "train_gan", fake_train_gan)
    run = tmp_path / "gan"
    assert main(["train-gan", "--quiet", "--out", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert seen["progress"] is False and "warning: something" in out and "kimg 0.1" not in out
    doc = json.loads((run / MANIFEST_NAME).read_text())
    assert doc["kind"] == "train-gan" and doc["status"] == "interrupted" and doc["command"].startswith("sns train-gan")
