"""`sns demo`: teacher on digits, Squeeze and Span vs VICReg at equal budget, probes, and a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import resolve_config
from .engine.run import save_config
from .errors import SnsError
from .eval.run import EVAL_DEFAULTS, run_eval
from .gan import GAN_DEFAULTS, train_gan
from .pretraining import PRETRAIN_DEFAULTS, pretrain
from .report.demo import write_demo_report

DEMO_DEFAULTS: dict[str, Any] = {
    "gan_preset": "gan-digits",  # teacher preset for `sns train-gan`
    "pretrain_preset": "digits",  # student preset shared by every method (same budget)
    "methods": ["sns", "vicreg"],
    "teacher": None,  # reuse an existing teacher instead of training one
    "steps": 0,  # >0 overrides the preset's pretraining steps
    "gan_kimg": 0.0,  # >0 overrides the teacher preset's training length
    "seed": 0,
    "device": "auto",
}


def _done(path: Path) -> bool:
    return path.exists()


def run_demo(cfg: dict[str, Any], run_dir: str | Path, progress: bool = True, log=print) -> dict[str, Any]:
    run_dir = Path(run_dir)
    save_config(run_dir, cfg)
    t_start = time.time()
    timings: dict[str, float] = {}

    # 1. the teacher: reuse a finished one, else train it (resumable)
    teacher = cfg["teacher"]
    if not teacher:
        teacher_run = run_dir / "teacher"
        if not _done(teacher_run / "teacher" / "teacher.json"):
            log("== 1/4 training the digits teacher (StyleGAN2) ==")
            overrides = [f"seed={cfg['seed']}"] + ([f"kimg={cfg['gan_kimg']}"] if cfg["gan_kimg"] else [])
            gcfg = resolve_config(GAN_DEFAULTS, "gan", cfg["gan_preset"], None, overrides, {"device": cfg["device"]})
            resume = (teacher_run / "checkpoints").is_dir() and any((teacher_run / "checkpoints").iterdir())
            teacher_run.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            if train_gan(gcfg, teacher_run, resume=resume, progress=progress).get("interrupted"):
                raise SnsError("demo interrupted while training the teacher; run `sns demo` again to continue")
            timings["teacher_s"] = round(time.time() - t0, 1)
        else:
            log(f"== 1/4 reusing the teacher in {teacher_run} ==")
        teacher = str(teacher_run)

    # 2. every method, same student, same budget
    backbones = []
    for i, method in enumerate(cfg["methods"]):
        out = run_dir / method
        overrides = [f"method={method}", f"seed={cfg['seed']}"] + ([f"steps={cfg['steps']}"] if cfg["steps"] else [])
        pcfg = resolve_config(
            PRETRAIN_DEFAULTS,
            "pretrain",
            cfg["pretrain_preset"],
            None,
            overrides,
            {"teacher": teacher, "device": cfg["device"]},
        )
        if not _done(out / "summary.json"):
            log(f"== 2/4 pretraining {method} ({i + 1}/{len(cfg['methods'])}) ==")
            resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            summary = pretrain(pcfg, out, resume=resume, progress=progress, log=log)
            if summary.get("interrupted"):
                raise SnsError(f"demo interrupted during {method}; run `sns demo` again to continue")
            timings[f"{method}_s"] = round(time.time() - t0, 1)
        backbones.append(str(out))

    # 3. linear probes: raw pixels and every method
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
    timings["eval_s"] = round(time.time() - t0, 1)

    # 4. report
    log("== 4/4 report ==")
    report = write_demo_report(run_dir, teacher, cfg["methods"], rows, timings, time.time() - t_start)
    log(f"report: {report}")
    return {"rows": rows, "timings": timings, "report": str(report)}
