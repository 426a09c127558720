"""Experiment trackers beside metrics.jsonl: MLflow and Weights & Biases, each an optional extra.

``MetricsLogger`` (engine.logging) sends every metrics line of rank 0 to the trackers a run lists in its
``loggers`` key, with the same names and steps as metrics.jsonl; each tracker also gets the resolved config when
its run opens and the run's product (the exported backbone, the GAN's teacher/) as an artifact at the end. The
tracker runs' ids are kept in ``<run dir>/trackers.json``, so ``--resume`` continues the same tracker runs.

- MLflow: the run goes to ``$MLFLOW_TRACKING_URI`` when it is set, else to a file store in ``<run dir>/mlruns``,
  experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``squeezespan``). MLflow 3 keeps its file store in maintenance
  mode behind ``MLFLOW_ALLOW_FILE_STORE=true``, which a run sets for itself when it uses its own ``mlruns``.
  Params are the config flattened to dotted keys; MLflow never changes a param, so a key changed on resume is
  recorded as the tag ``sns.changed_at_step_<step>``, and ``config.yaml`` (an artifact) is the segment's config.
- W&B: ``wandb.init(dir=<run dir>, mode=$WANDB_MODE or offline, project=$WANDB_PROJECT or squeezespan)``; files
  under ``<run dir>/wandb/``. Metrics are logged against the run's own ``step`` (``define_metric``). Offline, W&B
  writes each segment of a resumed run as its own ``offline-run-*`` folder with the same run id:
  ``wandb sync --id <id> <run dir>/wandb/offline-run-*`` uploads them in order into one run.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import SnsError
from ..files import write_json

__all__ = ["LOGGERS", "TRACKERS", "Tracker", "open_trackers", "require_tracker"]

# every name `loggers` accepts; the trackers among them: logger name -> (module imported, pip extra)
LOGGERS = ("tensorboard", "jsonl", "mlflow", "wandb")
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
IDS_FILE = "trackers.json"
_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}  # MlflowClient.set_terminated


def require_tracker(name: str, prefix: str = "") -> Any:
    """The tracker's package, imported; a one-line SnsError naming the extra to install when it is missing."""
    module, extra = TRACKERS[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SnsError(
            f"{prefix}loggers lists {name} but its package is not installed ({e}): pip install 'squeezespan[{extra}]'"
        ) from None


class Tracker:
    """One tracker run: ``log`` a metrics line, ``artifact`` files at the end, ``close`` with the run's status.

    ``state`` is what trackers.json keeps to reopen the same tracker run on resume.
    """

    name = ""
    state: dict[str, Any]

    def log(self, step: int, metrics: dict[str, float], time: float) -> None:
        raise NotImplementedError

    def artifact(self, name: str, paths: Sequence[Path]) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        raise NotImplementedError


def flat_params(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: nested keys dotted (``augment.blur_p``), values as JSON-ish strings."""
    out: dict[str, str] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = (v if isinstance(v, str) else json.dumps(v))[:6000]
    return out


class MlflowTracker(Tracker):
    """An MLflow run through ``MlflowClient`` (no global active run, so it never clashes with the user's own)."""

    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict[str, Any], saved: dict[str, Any] | None, kind: str, step: int):
        require_tracker("mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self._Param = Param
        uri = saved["tracking_uri"] if saved else os.environ.get("MLFLOW_TRACKING_URI") or None
        if uri is None:  # the run's own file store (None in trackers.json: it moves with the run directory)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri or (run_dir / "mlruns").resolve().as_uri())
        run = self._reopen(saved["run_id"]) if saved else None
        params = flat_params(config)
        if run is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "squeezespan"
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            tags = {"sns.command": kind, "sns.run_dir": str(run_dir.resolve())}
            run = self.client.create_run(exp_id, run_name=run_dir.name, tags=tags)
            self._log_params(run.info.run_id, params)
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
            old = run.data.params
            self._log_params(run.info.run_id, {k: v for k, v in params.items() if k not in old})
            changed = {k: v for k, v in params.items() if k in old and old[k] != v}
            if changed:
                self.client.set_tag(run.info.run_id, f"sns.changed_at_step_{step}", json.dumps(changed)[:5000])
        self.run_id = run.info.run_id
        self.client.log_dict(self.run_id, config, "config.yaml")
        self.state = {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": run.info.experiment_id}

    def _reopen(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except Exception as e:  # noqa: BLE001 - deleted, or another store: a new tracker run, said out loud
            print(
                f"warning: mlflow run {run_id} of trackers.json cannot be reopened ({e}); starting a new one",
                file=sys.stderr,
            )
            return None

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [self._Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log(self, step: int, metrics: dict[str, float], time: float) -> None:
        from mlflow.entities import Metric

        ms = int(time * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ms, step) for k, v in metrics.items()])

    def artifact(self, name: str, paths: Sequence[Path]) -> None:
        for p in paths:
            if p.is_dir():  # its files under name/
                self.client.log_artifacts(self.run_id, str(p), artifact_path=name)
            else:
                self.client.log_artifact(self.run_id, str(p), artifact_path=name)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, _STATUS[status])


@contextlib.contextmanager
def _staging(run_dir: Path) -> Iterator[None]:
    """W&B copies artifact files into $WANDB_DATA_DIR (default ~/.local/share/wandb) until they are uploaded: keep
    them in the run directory unless the user chose a place."""
    if os.environ.get("WANDB_DATA_DIR"):
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(run_dir / "wandb" / "data")
    try:
        yield
    finally:
        os.environ.pop("WANDB_DATA_DIR", None)


class WandbTracker(Tracker):
    """A W&B run (offline unless WANDB_MODE says otherwise), metrics against the run's own ``step``."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: dict[str, Any], saved: dict[str, Any] | None, kind: str, step: int):
        wandb = require_tracker("wandb")
        self._wandb, self.run_dir = wandb, run_dir
        saved = saved or {}
        project = saved.get("project") or os.environ.get("WANDB_PROJECT") or "squeezespan"
        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            id=saved.get("run_id") or uuid.uuid4().hex[:8],
            name=run_dir.name,
            job_type=kind,
            config=config,
            resume="allow",
            mode=os.environ.get("WANDB_MODE") or "offline",
            settings=wandb.Settings(console="off"),  # the run's stdout stays the process's own (tqdm, -q)
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.state = {"run_id": self.run.id, "project": project}

    def log(self, step: int, metrics: dict[str, float], time: float) -> None:
        self.run.log({"step": step, **metrics})

    def artifact(self, name: str, paths: Sequence[Path]) -> None:
        with _staging(self.run_dir):
            art = self._wandb.Artifact(f"{name}-{self.run.id}", type="model")
            for p in paths:
                if p.is_dir():  # its files at the artifact's root
                    art.add_dir(str(p))
                else:
                    art.add_file(str(p))
            self.run.log_artifact(art)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


_CLASSES = {"mlflow": MlflowTracker, "wandb": WandbTracker}


def open_trackers(
    names: Sequence[str], run_dir: Path, config: dict[str, Any], resume_step: int | None, kind: str
) -> list[Tracker]:
    """Open (resume_step None: start; else reopen from trackers.json) the tracker runs among ``names``."""
    names = [n for n in names if n in TRACKERS]
    if not names:
        return []
    ids_path = run_dir / IDS_FILE
    saved: dict[str, Any] = {}
    if resume_step is not None and ids_path.exists():
        try:
            saved = json.loads(ids_path.read_text())
        except (OSError, ValueError) as e:
            print(f"warning: {ids_path} is unreadable ({e}); the trackers start new runs", file=sys.stderr)
    trackers: list[Tracker] = []
    try:
        for n in names:
            try:
                trackers.append(_CLASSES[n](run_dir, config, saved.get(n), kind, resume_step or 0))
            except (SnsError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - a server down, a bad URI: one line, before any step
                first = (str(e).strip().splitlines() or [""])[0][:300]
                raise SnsError(f"loggers: {n} could not open its run ({type(e).__name__}: {first})") from e
    except BaseException:
        for t in trackers:  # the ones already open end as failed, not as runs left running
            t.close("failed")
        raise
    write_json(ids_path, {**saved, **{t.name: t.state for t in trackers}})
    return trackers
