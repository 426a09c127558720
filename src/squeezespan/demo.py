"""`sns demo`: teacher on digits, Squeeze and Span vs VICReg at equal budget, probes, and a report.

The teacher trains for a fixed number of images (``kimg``), never against the clock, so the same seed gives the
same teacher and the same table at any load on one kind of CPU (another precision or vector unit rounds
differently: docs/results/demo.md). Every finished stage is reused by a rerun, an interrupted one resumes from its
checkpoint, and <run_dir>/timings.json keeps the wall time of every run (the first run's stays as it was; a
rerun's is added beside it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import ALIASES, resolve_config
from .engine.device import PRECISIONS
from .engine.run import save_config
from .errors import SnsError
from .eval.run import EVAL_DEFAULTS, run_eval
from .files import write_json
from .gan import GAN_DEFAULTS, train_gan
from .pretraining import PRETRAIN_DEFAULTS, pretrain
from .report.demo import write_demo_report

DEMO_DEFAULTS: dict[str, Any] = {
    "gan_preset": "gan-digits",  # teacher preset for `sns train-gan` (its max_minutes is ignored: kimg decides)
    "pretrain_preset": "digits",  # student preset shared by every method (same budget)
    "methods": ["sns", "vicreg"],
    "teacher": None,  # reuse an existing teacher instead of training one
    "steps": 0,  # >0 overrides the preset's pretraining steps
    "gan_kimg": 0.0,  # >0 overrides the teacher preset's training length (kimg)
    # auto/bf16/fp16/fp32 for the teacher and every student; null: the presets' own (auto). bf16=true/false/auto:
    # the old spelling
    "precision": None,
    "gan_overrides": [],  # key=value strings applied to the teacher's config after the preset
    "pretrain_overrides": [],  # key=value strings applied to every student's config after the preset
    "seed": 0,
    "device": "auto",
}

TIMINGS_FILE = "timings.json"


def _done(path: Path) -> bool:
    return path.exists()


def _has_checkpoint(run: Path) -> bool:
    return (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())


def _check(cfg: dict[str, Any]) -> None:
    if cfg["precision"] is not None and cfg["precision"] not in PRECISIONS:
        raise SnsError(
            f"demo precision={cfg['precision']!r}: expected {', '.join(PRECISIONS)} or null (the presets' own)"
        )
    for key in ("gan_overrides", "pretrain_overrides"):
        bad = [o for o in cfg[key] if not isinstance(o, str) or "=" not in o]
        if not isinstance(cfg[key], list) or bad:
            raise SnsError(f"demo {key}: expected a list of key=value strings, e.g. [fd_ref_kimg=null], got {bad}")
    if not cfg["methods"]:
        raise SnsError("demo methods: name at least one method, e.g. [sns, vicreg]")


def _rerun_hint(run_dir: Path) -> str:
    if run_dir.resolve() == Path("runs/demo").resolve():
        return "run `sns demo` again to continue"
    return f"run `sns demo --out {run_dir} --resume` to continue"


def teacher_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The teacher's train-gan config: the preset, the demo's budget and overrides, and never a time limit."""
    overrides = [f"seed={cfg['seed']}"] + ([f"kimg={cfg['gan_kimg']}"] if cfg["gan_kimg"] else [])
    overrides += list(cfg["gan_overrides"]) + ["max_minutes=null"]  # a fixed budget: same teacher at any load
    extra = {"device": cfg["device"], "precision": cfg["precision"]}
    return resolve_config(GAN_DEFAULTS, "gan", cfg["gan_preset"], None, overrides, extra)


def student_config(cfg: dict[str, Any], method: str, teacher: str) -> dict[str, Any]:
    """A student's pretraining config: the shared preset and budget, with ``method``."""
    overrides = [f"method={method}", f"seed={cfg['seed']}"] + ([f"steps={cfg['steps']}"] if cfg["steps"] else [])
    overrides += list(cfg["pretrain_overrides"])
    extra = {"teacher": teacher, "device": cfg["device"], "precision": cfg["precision"]}
    return resolve_config(PRETRAIN_DEFAULTS, "pretrain", cfg["pretrain_preset"], None, overrides, extra)


class Timings:
    """<run_dir>/timings.json: one entry per `sns demo` run, each stage's wall time and what the run did with it
    ("ran", "resumed" from a checkpoint, "reused" a finished one, "interrupted"). Earlier runs are never rewritten."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / TIMINGS_FILE
        self.runs: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                self.runs = list(json.loads(self.path.read_text())["runs"])
            except (ValueError, KeyError, TypeError):
                self.runs = []  # an unreadable record is replaced, never a reason to fail the demo
        self.t_start = time.time()
        self.current: dict[str, Any] = {
            "run": len(self.runs) + 1,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.t_start)),
            "stages": {},
            "total_s": None,
        }
        self.runs.append(self.current)

    def stage(self, name: str, status: str, seconds: float = 0.0) -> None:
        self.current["stages"][name] = {"status": status, "seconds": round(seconds, 1)}
        self.save()

    def finish(self) -> None:
        self.current["total_s"] = round(time.time() - self.t_start, 1)
        self.save()

    def save(self) -> None:
        write_json(self.path, {"runs": self.runs})


def run_demo(cfg: dict[str, Any], run_dir: str | Path, progress: bool = True, log=print) -> dict[str, Any]:
    """Train (or reuse) the teacher, pretrain every method at the same budget, probe, write report.md."""
    given = {k: v for k, v in cfg.items() if k in DEMO_DEFAULTS or k in ALIASES}
    cfg = resolve_config(DEMO_DEFAULTS, "demo", None, None, [], given)
    _check(cfg)
    run_dir = Path(run_dir)
    save_config(run_dir, cfg)
    timings = Timings(run_dir)

    def stage(name: str, run: Path, done: bool, work) -> None:
        if done:
            timings.stage(name, "reused")
            return
        status = "resumed" if _has_checkpoint(run) else "ran"
        t0 = time.time()
        result = work(status == "resumed")
        if result.get("interrupted"):
            timings.stage(name, "interrupted", time.time() - t0)
            raise SnsError(f"demo interrupted during {name}; {_rerun_hint(run_dir)}")
        timings.stage(name, status, time.time() - t0)

    # 1. the teacher: reuse a finished one, else train it for its kimg (resumable)
    teacher = cfg["teacher"]
    n = len(cfg["methods"])
    if not teacher:
        teacher_run = run_dir / "teacher"
        done = _done(teacher_run / "teacher" / "teacher.json")
        if done:
            log(f"== 1/4 reusing the teacher in {teacher_run} ==")
        else:
            gcfg = teacher_config(cfg)
            log(f"== 1/4 training the digits teacher (StyleGAN2, {float(gcfg['kimg']):g} kimg) ==")
            teacher_run.mkdir(parents=True, exist_ok=True)
        stage(
            "teacher",
            teacher_run,
            done,
            lambda resume: train_gan(gcfg, teacher_run, resume=resume, progress=progress, log=log),
        )
        teacher = str(teacher_run)

    # 2. every method, same student, same budget
    backbones = []
    pcfg: dict[str, Any] = {}
    for i, method in enumerate(cfg["methods"]):
        out = run_dir / method
        pcfg = student_config(cfg, method, teacher)
        done = _done(out / "summary.json")
        if done:
            log(f"== 2/4 reusing {method} in {out} ==")
        else:
            log(f"== 2/4 pretraining {method} ({i + 1}/{n}, {pcfg['steps']} steps) ==")
            out.mkdir(parents=True, exist_ok=True)
        stage(
            method,
            out,
            done,
            lambda resume, pcfg=pcfg, out=out: pretrain(pcfg, out, resume=resume, progress=progress, log=log),
        )
        backbones.append(str(out))

    # 3. linear probes and kNN: raw pixels and every method (seconds: always run, so the table is always fresh)
    log("== 3/4 linear probe + kNN on the digits test split ==")
    ecfg = resolve_config(
        EVAL_DEFAULTS,
        "eval",
        None,
        None,
        [],
        {
            "data": pcfg["data"],
            "resolution": pcfg["resolution"],
            "backbones": ["raw"] + backbones,
            "device": cfg["device"],
            "seed": cfg["seed"],
        },
    )
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(exist_ok=True)
    t0 = time.time()
    rows = run_eval(ecfg, eval_dir, progress=False, log=log)
    timings.stage("probes", "ran", time.time() - t0)

    # 4. report
    log("== 4/4 report ==")
    timings.finish()
    report = write_demo_report(run_dir, teacher, cfg["methods"], rows, timings.runs, log=log)
    log(f"report: {report}")
    return {"rows": rows, "timings": timings.runs, "report": str(report)}
