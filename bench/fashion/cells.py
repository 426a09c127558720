"""The Fashion-MNIST bench's cells on disk: one JSON result per (track, row, lr, seed), the fingerprint that says
whether a cached result still answers the current config, the teacher a cell records, and the table collected
from all of a results folder's cells."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bench.common import git_commit, machine, repo_relative, stats
from squeezespan import PRETRAIN_DEFAULTS

from . import plan


def fingerprint(obj: Any) -> str:
    """Stable hash of what determines a result (config, teacher identity, evaluation settings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def result_path(results_dir: Path, track: str, row: str, lr: float, seed: int) -> Path:
    return Path(results_dir) / "runs" / f"{track}__{row}__lr{lr:g}__s{seed}.json"


def load_cached(path: Path, fp: str | None) -> dict | None:
    """A cached result if it exists, parses and (when ``fp`` is given) was made with the same fingerprint."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if fp is not None and res.get("fingerprint") != fp:
        return None
    return res


def teacher_identity(spec: str) -> dict[str, Any]:
    """What the results record about a teacher: spec (repo-relative when inside the repository), G_ema checksum,
    training length and FD-ref."""
    p = Path(spec)
    tdir = p / "teacher" if (p / "teacher" / "teacher.json").exists() else p
    out: dict[str, Any] = {"spec": repo_relative(spec)}
    g = tdir / "G_ema.safetensors"
    if g.exists():
        out["G_ema_sha256"] = hashlib.sha256(g.read_bytes()).hexdigest()[:16]
        out["G_ema_bytes"] = g.stat().st_size
    summ = tdir.parent / "summary.json" if tdir.name == "teacher" else tdir / "summary.json"
    for src in (tdir / "teacher.json", summ):
        try:
            meta = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for k in ("kimg", "fd_ref", "best_fd_ref", "best_kimg", "dataset", "images"):
            if k in meta and not isinstance(meta[k], (dict, list)):
                out.setdefault(k, meta[k])
    return out


def teacher_key(t: dict[str, Any]) -> str | None:
    """What tells two teachers apart in the table: the G_ema checksum, else the spec."""
    return t.get("G_ema_sha256") or t.get("spec")


def teachers_of(runs: list[dict[str, Any]], resolved: dict[str, dict[str, Any]]):
    """The teacher of each track and, per track, which rows each distinct teacher served.

    A cell's teacher comes from its result; ``resolved`` (this invocation's) is named only when a cell of that
    track used it or no cell of the track recorded a teacher (a teacher no cell used says nothing about the table).
    Cells of one track may have used different teachers (a --teacher override in one sitting): the second
    mapping then lists every teacher (by G_ema checksum, else spec) with the rows it served, so the table can
    say so instead of naming only one."""
    named: dict[str, dict[str, Any]] = {}
    served: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        t = r.get("teacher")
        if not t:
            continue
        # committed cells of the first sittings recorded absolute paths
        t = named[r["track"]] = {**t, "spec": repo_relative(t.get("spec", ""))}
        entry = served.setdefault(r["track"], {}).setdefault(teacher_key(t), {"teacher": t, "rows": []})
        if r["row"] not in entry["rows"]:
            entry["rows"].append(r["row"])
    for track, t in resolved.items():
        if track not in served or teacher_key(t) in served[track]:
            named[track] = t
    mixed = {track: list(by.values()) for track, by in served.items() if len(by) > 1}
    return named, mixed


def cell_fingerprint(row: plan.Row, track: str, mode: str, cfg: dict[str, Any] | None, teacher_sha: str | None) -> str:
    """Hash of what decides a cell's result: row, track, mode budget and evaluation, the run config (teacher by
    its weights' checksum, not its path). Null keys and keys at the engine's current default are left out, so a
    key the engine adds later (null or with a default that keeps the old behaviour) does not invalidate finished
    results, while a changed default does (the stored value no longer equals it)."""
    settings = plan.mode_settings(mode)
    if cfg is not None:
        cfg = {
            k: v
            for k, v in _bf16_spelling(cfg).items()
            if v is not None and not (k in PRETRAIN_DEFAULTS and same_setting(v, PRETRAIN_DEFAULTS[k]))
        }
        if cfg.get("teacher"):
            cfg["teacher"] = teacher_sha
    eval_key = [settings["eval_train"], settings["eval_test"], settings["val_images"]]
    key = {
        "row": row.name,
        "kind": row.kind,
        "config": cfg,
        "quick": mode == "quick",
        "budget": settings["budget_passes"],
        "eval": eval_key + (["bf16"] if settings["eval_bf16"] else []),
        "track": track,
    }
    if mode not in ("quick", "full"):
        key["mode"] = mode  # the quick and full keys predate modes: their committed cells keep their fingerprints
    return fingerprint(key)


def _bf16_spelling(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``precision`` as the bf16 flag the committed cells were fingerprinted with (bf16: true, auto:
    'auto', fp32: the old default, left out); fp16, which has no bf16 spelling, stays ``precision``."""
    old = {"bf16": True, "auto": "auto", "fp32": None}
    if cfg.get("precision") not in old:
        return cfg
    out = {k: v for k, v in cfg.items() if k != "precision"}
    if old[cfg["precision"]] is not None:
        out["bf16"] = old[cfg["precision"]]
    return out


def same_setting(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True == 1 is not "the same setting"


def cached_cells(
    row: plan.Row,
    track: str,
    mode: str,
    teacher: str | None,
    results_dir: Path,
    lrs: tuple[float, ...] | None = None,
    force: bool = False,
    redone: set[Path] = frozenset(),
):
    """Valid cached results of a row's cells, keyed (lr, seed) (None: to run), and each cell's fingerprint.
    ``force``: every cell is to run again, but those in ``redone`` (already redone by this invocation)."""
    cached, fps = {}, {}
    sha = teacher_identity(teacher).get("G_ema_sha256", teacher) if teacher else None
    for lr, seed in plan.cells_of(row, mode, lrs):
        cfg = None if row.kind in plan.UNTRAINED else plan.resolve_run_config(row, track, lr, seed, mode, teacher)
        fps[(lr, seed)] = fp = cell_fingerprint(row, track, mode, cfg, sha)
        path = result_path(results_dir, track, row.name, lr, seed)
        res = None if force and path not in redone else load_cached(path, None)
        cached[(lr, seed)] = res if res is not None and answers(res, row, track, mode, fp) else None
    return cached, fps


def answers(res: dict[str, Any], row: plan.Row, track: str, mode: str, fp: str) -> bool:
    """Whether a cached result answers the cell of fingerprint ``fp``. A stored fingerprint hashed under an older
    rule (seven committed sitting cells) is checked against the config and teacher the cell itself recorded."""
    if res.get("fingerprint") == fp:
        return True
    stored_sha = (res.get("teacher") or {}).get("G_ema_sha256")
    return cell_fingerprint(row, track, mode, res.get("config"), stored_sha) == fp


def monitor_curve(run_dir: str | Path) -> list[list[float]]:
    """The in-training kNN monitor of a run as [step, top-1] pairs (from its metrics.jsonl; [] if none). Kept in
    the cell's result so that the curves can be drawn from a clean clone, without the run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    pts = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
        if "knn_top1" in rec:
            pts.append([int(rec["step"]), float(rec["knn_top1"])])
    return pts


def aggregate(row: plan.Row, runs: list[dict], lrs, max_seeds: int = 3) -> dict[str, Any]:
    """One table row from a row's cached runs: best lr by held-out kNN, mean/std over seeds at that lr."""
    out: dict[str, Any] = {"row": row.name, "group": row.group, "kind": row.kind, "note": row.note}
    if not runs:
        out["status"] = "not run"
        return out
    by = {(r["lr"], r["seed"]): r for r in runs}
    if row.kind in plan.UNTRAINED:
        chosen, out["lr"] = [by[(0.0, 0)]] if (0.0, 0) in by else runs[:1], None
    else:
        swept = [lr for lr in lrs if (lr, 0) in by]
        if not swept:
            out["status"] = "sweep not started"
            return out
        best = plan.best_lr(swept, by)
        out["lr"] = best
        out["sweep"] = {f"{lr:g}": by[(lr, 0)]["val_knn_top1"] for lr in swept}
        out["sweep_linear"] = {f"{lr:g}": by[(lr, 0)]["linear_top1"] for lr in swept}  # shown, never used to choose
        chosen = [r for (lr, s), r in sorted(by.items()) if lr == best]
        done = len(swept) == len(lrs) and len(chosen) >= min(row.seeds, max_seeds)
        out["status"] = "done" if done else f"partial: sweep {len(swept)}/{len(lrs)}, seeds {len(chosen)}"
    if row.kind in plan.UNTRAINED:
        out["status"] = "done"
    for key in ("knn_top1", "linear_top1", "wall_s"):
        out[key] = stats([float(r[key]) for r in chosen])
    out["seeds"] = sorted(r["seed"] for r in chosen)
    return out


def cell_cpu(res: dict[str, Any]) -> str:
    """The CPU model a cell was measured on, from its result file ('unrecorded' for cells older than that record),
    with whether it had bf16 hardware where the file says: CPUs of one name differ there (lscpu calls an AVX2-only
    machine and an AVX-512 BF16 one both 'AMD EPYC'), and the former only emulates a bf16 cell's arithmetic."""
    machine = res.get("machine") or {}
    model = machine.get("cpu") or "unrecorded"
    if model == "unrecorded" or machine.get("bf16_native") is None:
        return model
    return f"{model} ({'bf16 hardware' if machine['bf16_native'] else 'no bf16 hardware'})"


def collect(results_dir: Path, mode: str, tracks=plan.TRACKS) -> dict[str, Any]:
    """Every cached run under ``results_dir``/runs, aggregated per track and row."""
    settings = plan.mode_settings(mode)
    runs = [r for p in sorted((Path(results_dir) / "runs").glob("*.json")) if (r := load_cached(p, None))]

    def swept(row_runs):  # the mode's lrs plus any a --lrs sitting added for this row
        return tuple(sorted(set(settings["lrs"]) | {r["lr"] for r in row_runs}))

    rows = {}
    for t in tracks:
        rows[t] = []
        for row in plan.ROWS:
            mine = [r for r in runs if r["track"] == t and r["row"] == row.name]
            lrs = swept(mine) if row.kind not in plan.UNTRAINED else settings["lrs"]
            rows[t].append(aggregate(row, mine, lrs, settings["seeds"]))
    return {
        "smoke": mode == "quick",
        "mode": mode,
        "benchmark": "fashion-mnist",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "commit": git_commit(),
        "rows": rows,
        "runs": [
            {**{k: v for k, v in r.items() if k not in ("config", "machine", "eval")}, "cpu": cell_cpu(r)} for r in runs
        ],
    }
