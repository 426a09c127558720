"""Experiment trackers (`loggers`): an MLflow run (file store in the run directory) and a W&B run (offline) hold
every metrics.jsonl line at its step, the config and the exported backbone, and --resume continues the same tracker
run; a tracker whose package is missing is a one-line error before --out is touched."""

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

import pytest
import yaml
from test_cli import TINY
from test_train_gan import TINY as TINY_GAN
from test_train_gan import tiny_dataset

from squeezespan.checks import check_pretrain_config
from squeezespan.cli import main
from squeezespan.engine.logging import MetricsLogger
from squeezespan.errors import SnsError
from squeezespan.gan.config import check_config as check_gan_config
from squeezespan.gan.train import train_gan
from squeezespan.methods import resolve_method
from squeezespan.pretraining import pretrain


@pytest.fixture(autouse=True)
def tracker_env(monkeypatch, tmp_path):
    """The defaults a user without tracker settings gets; W&B's own caches and logs inside tmp_path."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")


def _jsonl(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _series(lines):
    """metrics.jsonl as {name: [(step, value), ...]} (the time field is not a metric)."""
    out = {}
    for line in lines:
        for k, v in line.items():
            if k not in ("step", "time"):
                out.setdefault(k, []).append((line["step"], v))
    return out


def test_loggers_value_is_checked_for_pretrain_and_train_gan(tiny_pretrain_cfg):
    check_pretrain_config(resolve_method(tiny_pretrain_cfg(method="vicreg", loggers=[])))  # no logger at all is fine
    for bad in ("mlflow", ["tensorbord"], ["jsonl", "jsonl"], [1]):
        with pytest.raises(SnsError, match=r"^loggers=.* must be a list of distinct names from tensorboard, jsonl"):
            check_pretrain_config(resolve_method(dict(tiny_pretrain_cfg(method="vicreg"), loggers=bad)))
    with pytest.raises(SnsError, match=r"^train-gan loggers=\['tb'\] must be a list"):
        check_gan_config({"loggers": ["tb"]})


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_tracker_package_is_one_line_error_before_out_is_touched(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now fails as if it were not installed
    out = tmp_path / "run"
    argv = ["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(out), f"loggers=[jsonl,{name}]"]
    assert main(argv + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"loggers lists {name} but its package is not installed" in err
    assert f"pip install 'squeezespan[{name}]'" in err
    assert not out.exists()
    assert main(["train-gan", "--data", "digits", "--out", str(out), f"loggers=[{name}]"]) == 2
    assert f"train-gan loggers lists {name}" in capsys.readouterr().err and not out.exists()


def test_only_rank_0_opens_trackers(tmp_path):
    pytest.importorskip("mlflow")
    logger = MetricsLogger(tmp_path, enabled=False, loggers=["jsonl", "mlflow"], config={"a": 1})
    logger.log(1, {"loss": 1.0})
    logger.log_artifact("backbone", [tmp_path])
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_a_tracker_failing_mid_run_is_dropped_with_a_warning_and_jsonl_goes_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    logger = MetricsLogger(tmp_path, loggers=["jsonl", "mlflow"], config={"lr": 0.1})

    def server_gone(*args):
        raise ConnectionError("server gone")

    logger._trackers[0].log = server_gone
    logger.log(1, {"loss": 1.0})
    logger.log(2, {"loss": 0.5})
    logger.close()
    assert capsys.readouterr().err.count("warning: mlflow log failed (ConnectionError: server gone)") == 1
    assert [ln["step"] for ln in _jsonl(tmp_path)] == [1, 2]


def _mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # one tracker run across both segments
    return client, runs[0]


def test_mlflow_run_continues_on_resume_with_every_step_config_and_backbone(tmp_path, tiny_pretrain_cfg, monkeypatch):
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    cfg = tiny_pretrain_cfg(method="vicreg", steps=4, loggers=["jsonl", "mlflow"])
    assert pretrain(cfg, run_dir, progress=False, log=lambda *a: None, stop_after=2)["interrupted"]
    client, run = _mlflow_run(run_dir)
    assert run.info.status == "KILLED" and not (run_dir / "tb").exists()  # tensorboard was not asked for
    first_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"]
    assert run.info.run_id == first_id

    pretrain(cfg, run_dir, resume=True, progress=False, log=lambda *a: None)
    client, run = _mlflow_run(run_dir)
    assert run.info.run_id == first_id and run.info.status == "FINISHED"
    series = _series(_jsonl(run_dir))
    assert [s for s, _ in series["loss"]] == [1, 2, 3, 4]
    for name, points in series.items():  # the same names, steps and values as metrics.jsonl
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == points, name
    params = run.data.params
    assert params["method"] == "vicreg" and params["steps"] == "4" and params["augment.blur_p"] == str(0.5)
    assert json.loads(params["loggers"]) == ["jsonl", "mlflow"]
    got = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "got")))
    for name in ("backbone.safetensors", "backbone.json"):
        assert (got / "backbone" / name).read_bytes() == (run_dir / name).read_bytes()
    assert yaml.safe_load((got / "config.yaml").read_text()) == yaml.safe_load((run_dir / "config.yaml").read_text())


def _wandb_records(path):
    """The records of a W&B transaction log (.wandb): a LevelDB-style log of protobuf Records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_continues_on_resume_with_every_step_config_and_backbone(tmp_path, capsys):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    first = ["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(run_dir), "log_every=1"]
    assert main(first + TINY + ["loggers=[jsonl,wandb]"]) == 0  # 2 steps, then 2 more on resume
    assert main(["pretrain", "--out", str(run_dir), "--resume", "--no-progress", "steps=4"]) == 0
    run_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]["run_id"]
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)

    history, configs, artifacts = [], [], []
    for seg in segments:
        for r in _wandb_records(seg / f"run-{run_id}.wandb"):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                assert r.run.run_id == run_id and r.run.project == "squeezespan"
                configs.append({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "history":
                row = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                history.append({k: v for k, v in row.items() if not k.startswith("_")})
            elif kind == "artifact":
                artifacts.append(r.artifact)
    lines = _jsonl(run_dir)
    assert [h["step"] for h in history] == [ln["step"] for ln in lines] == [1, 2, 3, 4]
    assert _series(history) == _series(lines)
    assert configs[0]["steps"] == 2 and configs[1]["steps"] == 4 and configs[1]["method"] == "vicreg"
    assert configs[1]["augment"]["blur_p"] == 0.5
    art = artifacts[-1]  # each finished segment gives its backbone; the last is the run's
    assert art.type == "model" and art.name == f"backbone-{run_id}"
    for entry in art.manifest.contents:
        staged = (run_dir / "wandb" / "data").resolve()
        assert staged in Path(entry.local_path).resolve().parents  # files stay in the run
        want = (run_dir / entry.path).read_bytes()
        assert base64.b64encode(hashlib.md5(want).digest()).decode() == entry.digest
    assert sorted(e.path for e in art.manifest.contents) == ["backbone.json", "backbone.safetensors"]


def test_train_gan_logs_to_mlflow_across_resume_and_gives_the_teacher(tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "gan"
    common = dict(TINY_GAN, loggers=["jsonl", "mlflow"])
    kw = dict(progress=False, dataset=tiny_dataset(), log=lambda *_: None)
    assert train_gan(dict(common, kimg=0.004), out, **kw)["steps"] == 1
    assert train_gan(dict(common, kimg=0.012), out, resume=True, **kw)["steps"] == 3
    client, run = _mlflow_run(out)
    assert run.info.status == "FINISHED" and run.data.tags["sns.command"] == "train-gan"
    assert "sns.changed_at_step_1" in run.data.tags  # kimg changed on resume: MLflow keeps the first params
    for name, points in _series(_jsonl(out)).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == points, name
    teacher = {a.path for a in client.list_artifacts(run.info.run_id, "teacher")}
    assert "teacher/G_ema.safetensors" in teacher
