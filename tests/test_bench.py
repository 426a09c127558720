"""Tests of the Fashion-MNIST bench (the bench.fashion package, = `sns bench fashion`) and its figures: plans,
cache skip/force, tables, quick configs; and of `sns bench` finding the bench package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from squeezespan import bench as sns_bench
from squeezespan.errors import SnsError
from squeezespan.methods import method_settings

sns_bench.load("figures")  # puts the source checkout on sys.path: bench imports as a package
from bench import common  # noqa: E402
from bench import figures as figures_module  # noqa: E402
from bench.fashion import cells, cli, plan, render, train  # noqa: E402


def test_unknown_bench_and_row_are_one_line_errors():
    with pytest.raises(SnsError, match="benches: fashion, throughput, figures"):
        sns_bench.load("nope")
    with pytest.raises(SnsError, match="matches no row"):
        plan.select_rows("sns,nosuchrow")
    assert [r.name for r in plan.select_rows("vicreg-*")] == ["vicreg-real", "vicreg-syn", "vicreg-mixed"]
    assert plan.select_rows(None)[0].name == "sns"  # core rows first


def test_quick_configs_share_one_budget_of_student_passes():
    q = plan.mode_settings("quick")
    for name in ("sns", "vicreg-real", "simsiam-mixed", "squeeze", "kd-noaug", "supervised"):
        row = plan.ROW_BY_NAME[name]
        cfg = plan.resolve_run_config(row, "scarce", 0.1, 1, "quick", teacher="T")
        assert cfg["real_subset"] == 2000 and cfg["width"] == 0.25 and cfg["batch_size"] == 64
        assert cfg["lr"] == 0.1 and cfg["seed"] == 1 and cfg["final_eval"] is False
    sns = plan.resolve_run_config(plan.ROW_BY_NAME["sns"], "full", 0.1, 0, "quick", "T")
    vic = plan.resolve_run_config(plan.ROW_BY_NAME["vicreg-real"], "full", 0.1, 0, "quick", "T")
    sq = plan.resolve_run_config(plan.ROW_BY_NAME["squeeze"], "full", 0.1, 0, "quick", "T")
    # 2048 passes: vicreg 64 images x 2 views; sns 32 syn + 32 real x 2; squeeze 64 syn x 1
    assert (vic["steps"], sns["steps"], sq["steps"]) == (16, 21, 32) and q["budget_passes"] == 2048
    assert sns["teacher"] == "T" and vic["teacher"] is None and sns["real_subset"] == 0
    assert plan.resolve_run_config(plan.ROW_BY_NAME["kd-noaug"], "full", 0.1, 0, "quick", "T")["augment_syn"] is False
    perbatch = plan.resolve_run_config(plan.ROW_BY_NAME["sns-perbatch"], "full", 0.1, 0, "quick", "T")
    assert perbatch["augment"]["per_sample"] is False and sns["augment"]["per_sample"] is True
    assert {k: v for k, v in perbatch.items() if k != "augment"} == {k: v for k, v in sns.items() if k != "augment"}
    full = plan.resolve_run_config(plan.ROW_BY_NAME["vicreg-real"], "full", 0.03, 0, "full")
    assert full["steps"] == 2344 and full["width"] == 0.5  # 10 epochs of 60k images in two views, B=256
    with pytest.raises(SnsError, match="expected full or scarce"):
        plan.resolve_run_config(plan.ROW_BY_NAME["sns"], "half", 0.1, 0, "quick")


def test_bank_row_is_squeeze_from_a_60k_bank_at_squeeze_budget_and_a_small_bank_when_quick():
    row = plan.ROW_BY_NAME["squeeze-bank"]
    live = plan.resolve_run_config(plan.ROW_BY_NAME["squeeze"], "full", 0.1, 0, "full", "T")
    bank = plan.resolve_run_config(row, "full", 0.1, 0, "full", "T")
    assert bank["teacher_bank"] == 60000 and live["teacher_bank"] == 0
    assert {k: v for k, v in bank.items() if k != "teacher_bank"} == {
        k: v for k, v in live.items() if k != "teacher_bank"
    }
    quick = plan.resolve_run_config(row, "full", 0.1, 0, "quick", "T")
    assert quick["teacher_bank"] == 1024 >= quick["batch_size"]  # smoke-sized: sampling 60k took 5-6 min here
    assert ("squeeze", "squeeze-bank", "sns", "sns-bank") in dict(render.TABLES).values()
    sns = plan.resolve_run_config(plan.ROW_BY_NAME["sns-bank"], "full", 0.1, 0, "full", "T")
    assert sns["teacher_bank"] == 60000 and sns["method"] == "sns" and sns["steps"] == 3125


def test_rho_sweep_rows_run_sns_between_vicreg_and_squeeze_at_one_budget():
    rhos, passes = [], []
    for name in plan.RHO_ROWS:
        cfg = plan.resolve_run_config(plan.ROW_BY_NAME[name], "scarce", 0.1, 0, "sitting", "T")
        rho = method_settings(cfg)["syn_ratio"]
        rhos.append(rho)
        passes.append(cfg["steps"] * plan.passes_per_step(cfg["method"], rho, cfg["batch_size"]))
        assert cfg["method"] == {"vicreg-real": "vicreg", "squeeze": "squeeze"}.get(name, "sns")
    assert rhos == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert max(passes) - min(passes) <= 384  # one step's worth of the 120k-pass budget at most
    assert plan.RHO_ROWS in dict(render.TABLES).values()  # the sweep is one of the rendered tables


def test_each_mode_has_its_own_budget_fingerprint_and_heading():
    row, cfgs, fps = plan.ROW_BY_NAME["sns"], {}, {}
    for mode in plan.MODES:
        cfgs[mode] = plan.resolve_run_config(row, "full", 0.1, 0, mode, "T")
        fps[mode] = cells.cell_fingerprint(row, "full", mode, cfgs[mode], "sha")
    assert len(set(fps.values())) == len(plan.MODES)  # no mode reuses another's cached cells
    # sns passes 384 images per step of 256 (128 syn x 1 + 128 real x 2): 120k / 384 and 360k / 384 steps
    assert (cfgs["sitting"]["steps"], cfgs["long"]["steps"]) == (312, 938)
    assert cfgs["long"]["knn_every"] == 150 and cfgs["sitting"]["knn_every"] == 500  # the preset's
    for mode, (heading, _) in render.MODE_TEXT.items():
        md = render.render_markdown({"mode": mode, "rows": {}, "settings": {}})
        assert md.startswith(f"# Fashion-MNIST bench: {heading}") and "SMOKE" not in md


def test_plan_sweeps_seed0_first_then_seeds_at_best_lr(monkeypatch):
    monkeypatch.setitem(plan.FULL, "lrs", (0.03, 0.1, 0.3))
    row = plan.ROW_BY_NAME["sns"]
    assert plan.plan_runs(row, "full", {}) == [(0.03, 0), (0.1, 0), (0.3, 0)]
    cached = {(0.03, 0): {"val_knn_top1": 70.0}, (0.1, 0): {"val_knn_top1": 75.0}}
    assert plan.plan_runs(row, "full", cached) == [(0.3, 0)]  # seeds wait for the full sweep
    cached[(0.3, 0)] = {"val_knn_top1": 74.0}
    assert plan.plan_runs(row, "full", cached) == [(0.1, 1), (0.1, 2)]
    cached[(0.1, 1)] = {"val_knn_top1": 1.0}
    assert plan.plan_runs(row, "full", cached) == [(0.1, 2)]
    assert plan.plan_runs(plan.ROW_BY_NAME["kd-aug"], "full", cached) == []  # one seed only
    assert plan.plan_runs(plan.ROW_BY_NAME["raw-pixels"], "full", {}) == [(0.0, 0)]
    assert plan.plan_runs(plan.ROW_BY_NAME["sns-sharedbn"], "full", {}) == [(0.03, 0), (0.1, 0), (0.3, 0)]
    assert plan.best_lr((0.03, 0.1), {(0.03, 0): {"val_knn_top1": 5.0}, (0.1, 0): {"val_knn_top1": 5.0}}) == 0.03


def test_cache_is_skipped_when_valid_and_redone_with_force_or_new_config(tmp_path):
    p = tmp_path / "runs" / "full__sns__lr0.1__s0.json"
    assert cells.load_cached(p, "abc") is None  # nothing cached
    common.write_json(p, {"fingerprint": "abc", "knn_top1": 1.0})
    assert cells.load_cached(p, "abc") == {"fingerprint": "abc", "knn_top1": 1.0}
    assert cells.load_cached(p, "other") is None  # config changed: stale
    p.write_text("{torn")
    assert cells.load_cached(p, "abc") is None
    assert cells.fingerprint({"a": 1, "b": [2]}) == cells.fingerprint({"b": [2], "a": 1})


def _fake_run_one(calls):
    def run_one(row, track, lr, seed, cfg, ev, work, force, progress, log):
        calls.append((row.name, track, lr, seed, force))
        return {
            "knn_top1": 50.0 + seed,
            "linear_top1": 60.0 + seed,
            "val_knn_top1": 40.0 + lr,
            "wall_s": 2.0,
            "steps": (cfg or {}).get("steps"),
        }

    return run_one


def test_run_bench_runs_each_cell_once_then_skips_and_force_redoes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "run_one", _fake_run_one(calls))
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    kw = dict(
        mode="quick",
        rows="vicreg-real,raw-pixels",
        tracks=("full",),
        work=tmp_path / "w",
        results_dir=tmp_path / "res" / "fashion-quick",
        log=lambda *a: None,
    )
    table = cli.run_bench(**kw)
    assert calls == [
        ("vicreg-real", "full", 0.1, 0, False),
        ("vicreg-real", "full", 0.1, 1, False),
        ("raw-pixels", "full", 0.0, 0, False),
    ]
    assert table["smoke"] is True and table["complete"] is True
    rows = {r["row"]: r for r in table["rows"]["full"]}
    assert rows["vicreg-real"]["status"] == "done" and rows["vicreg-real"]["knn_top1"]["mean"] == 50.5
    md = (tmp_path / "res" / "fashion-quick.md").read_text()
    assert "SMOKE RUN" in md and "| vicreg-real | 60.50 ± 0.71 | 50.50 ± 0.71 |" in md
    calls.clear()
    cli.run_bench(**kw)
    assert calls == []  # everything cached
    cli.run_bench(**dict(kw, force=True, rows="raw-pixels"))
    assert calls == [("raw-pixels", "full", 0.0, 0, True)]  # redone once, not looped
    saved = json.loads((tmp_path / "res" / "fashion-quick" / "runs" / "full__raw-pixels__lr0__s0.json").read_text())
    assert saved["smoke"] is True and saved["fingerprint"]


def test_a_resumed_cell_reports_the_wall_time_of_all_its_segments(tmp_path, monkeypatch):
    # the trainer reports 1000 s of training of which this segment was 1 s (an earlier segment was stopped)
    monkeypatch.setattr(train, "pretrain", lambda *a, **k: {"steps": 4, "train_time_s": 1000.0, "segment_time_s": 1.0})
    monkeypatch.setattr(train, "load_backbone", lambda path: None)
    monkeypatch.setattr(train, "evaluate_backbone", lambda m, ev, normalize: {"knn_top1": 1.0})
    out = train.run_one(
        plan.ROW_BY_NAME["vicreg-real"], "full", 0.1, 0, {}, None, tmp_path, False, False, lambda *a: None
    )
    assert out["train_time_s"] == 1000.0
    assert 999.0 <= out["wall_s"] < 1030.0  # 999 s of earlier training + this invocation


def test_table_names_the_teachers_of_cells_from_earlier_sittings(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "run_one", _fake_run_one([]))
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    kw = dict(
        mode="quick",
        rows="raw-pixels",
        tracks=("full",),
        work=tmp_path,
        results_dir=tmp_path / "r",
        log=lambda *a: None,
    )
    cli.run_bench(**kw)
    cell = tmp_path / "r" / "runs" / "full__raw-pixels__lr0__s0.json"
    cell.write_text(json.dumps(dict(json.loads(cell.read_text()), teacher={"spec": "T", "fd_ref": 3.0})))
    table = cli.run_bench(**kw)  # this sitting resolves no teacher: the table still names the cell's
    assert table["teachers"] == {"full": {"spec": "T", "fd_ref": 3.0}}
    assert 'Teachers: full: {"spec": "T", "fd_ref": 3.0}' in (tmp_path / "r.md").read_text()
    assert table["teacher_rows"] == {}  # one teacher: no note


def test_table_says_when_cells_of_a_track_used_different_teachers():
    runs = [
        {"track": "full", "row": "sns", "teacher": {"spec": "A", "G_ema_sha256": "aa", "fd_ref": 3.0}},
        {"track": "full", "row": "squeeze", "teacher": {"spec": "B", "G_ema_sha256": "bb", "fd_ref": 9.0}},
        {"track": "full", "row": "sns", "teacher": {"spec": "A", "G_ema_sha256": "aa", "fd_ref": 3.0}},
        {"track": "scarce", "row": "sns", "teacher": {"spec": "S", "G_ema_sha256": "ss"}},
        {"track": "full", "row": "vicreg-real", "teacher": None},
    ]
    named, mixed = cells.teachers_of(runs, {})
    assert named == {"full": runs[2]["teacher"], "scarce": runs[3]["teacher"]}
    assert list(mixed) == ["full"] and [(e["teacher"]["spec"], e["rows"]) for e in mixed["full"]] == [
        ("A", ["sns"]),
        ("B", ["squeeze"]),
    ]
    md = render.render_markdown({"rows": {}, "teachers": named, "teacher_rows": mixed})
    assert (
        "the full track's cells used 2 different teachers: A (G_ema aa, FD-ref 3.0) for sns; "
        "B (G_ema bb, FD-ref 9.0) for squeeze." in md
    )
    # this sitting's teacher is named only if a cell used it: one no cell used says nothing about the table
    assert cells.teachers_of(runs, {"full": {"spec": "C", "G_ema_sha256": "cc"}})[0]["full"] == runs[2]["teacher"]
    now_b = {"spec": "B", "G_ema_sha256": "bb", "fd_ref": 9.5}
    assert cells.teachers_of(runs, {"full": now_b})[0]["full"] == now_b
    assert cells.teachers_of([], {"full": {"spec": "C"}})[0]["full"] == {"spec": "C"}  # no cell yet: name it


def test_teacher_spec_is_recorded_relative_to_the_repository(tmp_path):
    inside = common.RESULTS / "teachers" / "fashion-full"
    assert cells.teacher_identity(str(inside))["spec"] == "bench/results/teachers/fashion-full"
    assert cells.teacher_identity(str(tmp_path))["spec"] == str(tmp_path)
    old_cell = [{"track": "full", "row": "sns", "teacher": {"spec": str(inside), "G_ema_sha256": "aa"}}]
    assert cells.teachers_of(old_cell, {})[0]["full"]["spec"] == "bench/results/teachers/fashion-full"


def test_budget_minutes_stops_before_starting_a_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "run_one", _fake_run_one(calls))
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    table = cli.run_bench(
        mode="quick",
        rows="raw-pixels",
        tracks=("full",),
        budget_minutes=0,
        work=tmp_path,
        results_dir=tmp_path / "r",
        log=lambda *a: None,
    )
    assert calls == [] and table["complete"] is False


def test_aggregate_and_markdown_by_hand():
    row = plan.ROW_BY_NAME["sns"]
    runs = [
        {"lr": 0.03, "seed": 0, "val_knn_top1": 80.0, "knn_top1": 81.0, "linear_top1": 85.0, "wall_s": 60.0},
        {"lr": 0.1, "seed": 0, "val_knn_top1": 82.0, "knn_top1": 83.0, "linear_top1": 86.0, "wall_s": 120.0},
        {"lr": 0.1, "seed": 1, "val_knn_top1": 10.0, "knn_top1": 85.0, "linear_top1": 88.0, "wall_s": 180.0},
    ]
    agg = cells.aggregate(row, runs, (0.03, 0.1), max_seeds=3)
    assert agg["lr"] == 0.1 and agg["seeds"] == [0, 1] and agg["status"].startswith("partial")
    assert agg["knn_top1"]["mean"] == 84.0 and round(agg["knn_top1"]["std"], 4) == round(2**0.5, 4)
    assert cells.aggregate(row, runs, (0.03, 0.1), max_seeds=2)["status"] == "done"
    assert cells.aggregate(plan.ROW_BY_NAME["sns-sharedbn"], [], (0.1,))["status"] == "not run"
    table = {"smoke": False, "rows": {"full": [agg]}, "machine": {}, "settings": {}}
    md = render.render_markdown(table)
    assert "SMOKE" not in md
    assert "| sns | 87.00 ± 1.41 | 84.00 ± 1.41 | 2.0-3.0 | 0.1 | 2 |" in md
    assert "| squeeze | - | - | - |" in md  # rows not run still appear


def test_sns_bench_subcommand_forwards_flags_and_errors_in_one_line(capsys):
    from squeezespan.cli import main

    assert main(["bench", "fashion", "--rows", "zzz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --rows zzz matches no row") and "\n" not in err
    assert main(["bench", "fashion", "--quick", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --precision bf16 does not apply to --mode quick") and "\n" not in err
    assert main(["bench", "fashion", "--list"]) == 0
    assert "squeeze-novarcov" in capsys.readouterr().out


def test_sns_bench_finds_the_checkout_and_says_in_one_line_when_there_is_none(tmp_path, monkeypatch, capsys):
    from squeezespan.cli import main

    repo = common.REPO
    assert sns_bench.checkout() == repo  # this test runs from a source checkout
    # an installed package (its folder holds no bench/), run from a folder that is no checkout either
    monkeypatch.delenv("SNS_BENCH_DIR", raising=False)
    monkeypatch.setattr(sns_bench, "SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "fashion", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sns bench needs a source checkout") and "\n" not in err
    monkeypatch.setenv("SNS_BENCH_DIR", str(repo / "bench"))  # pointed at one: found
    assert sns_bench.checkout() == repo
    monkeypatch.delenv("SNS_BENCH_DIR")
    monkeypatch.chdir(repo)  # or run from the repository root
    assert sns_bench.checkout() == repo
    with pytest.raises(SnsError, match="benches: fashion, throughput, figures, teachers"):
        sns_bench.load("nope")


def test_python_m_bench_fashion_runs_its_main(monkeypatch, capsys):
    import runpy
    import sys

    # what `python -m bench.fashion --list` runs from the repository root (in this process: no second torch import)
    monkeypatch.setattr(sys, "argv", ["bench.fashion", "--list"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("bench.fashion", run_name="__main__")
    assert done.value.code == 0 and "squeeze-novarcov" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["bench.fashion", "--rows", "zzz"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("bench.fashion", run_name="__main__")
    assert done.value.code == 2 and capsys.readouterr().err.startswith("error: --rows zzz matches no row")


def test_cache_survives_a_new_key_at_its_default_but_not_a_changed_value(tmp_path, monkeypatch):
    row = plan.ROW_BY_NAME["vicreg-real"]
    cfg = plan.resolve_run_config(row, "full", 0.1, 0, "quick")
    path = cells.result_path(tmp_path, "full", row.name, 0.1, 0)
    common.write_json(path, {"fingerprint": "older-rule", "config": dict(cfg, key_from_before=None)})
    cached, _ = cells.cached_cells(row, "full", "quick", None, tmp_path)
    assert cached[(0.1, 0)] is not None and cached[(0.1, 1)] is None
    common.write_json(path, {"fingerprint": "older-rule", "config": dict(cfg, width=1.0)})
    cached, _ = cells.cached_cells(row, "full", "quick", None, tmp_path)
    assert cached[(0.1, 0)] is None  # a real config change: run again
    # the engine gains a key whose default keeps the old behaviour: results written before it stay valid
    common.write_json(path, {"fingerprint": "older-rule", "config": cfg})
    monkeypatch.setitem(cells.PRETRAIN_DEFAULTS, "new_switch", 0)
    cached, _ = cells.cached_cells(row, "full", "quick", None, tmp_path)
    assert cached[(0.1, 0)] is not None
    # ... but a run that sets it to another value is a different cell
    other = cells.cell_fingerprint(row, "full", "quick", dict(cfg, new_switch=5), None)
    assert other != cells.cell_fingerprint(row, "full", "quick", dict(cfg, new_switch=0), None)


def _fake_fashion(n: int, split: str):
    from squeezespan.data import ImageDataset

    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    images = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    return ImageDataset("fashion-mnist", split, [images], labels, [str(i) for i in range(10)], (0.5,), (0.25,), 1, 32)


def test_eval_data_subsets_and_scarce_dataset_run_on_a_real_dataset_object(monkeypatch):
    monkeypatch.setattr(
        train,
        "load_dataset",
        lambda name, split="train", resolution=None, **kw: _fake_fashion(5000 if split == "train" else 1500, split),
    )
    ev = train.eval_data("quick")
    q = plan.mode_settings("quick")
    assert (len(ev.train), len(ev.test), len(ev.val_idx)) == (q["eval_train"], q["eval_test"], q["val_images"])
    assert ev.train.images.shape[1:] == (1, 32, 32) and int(ev.val_idx.max()) < len(ev.train)
    scarce = train.scarce_dataset(_fake_fashion(5000, "train"))
    assert len(scarce) == plan.SCARCE_IMAGES and scarce.images.dtype == torch.uint8
    from squeezespan.eval import RawPixels

    res = train.evaluate_backbone(RawPixels(1, 32), ev, normalize=True)
    assert 0.0 <= res["linear_top1"] <= 100.0 and res["feature_dim"] == 32 * 32


def test_figures_knn_curves_and_umap_panels_are_drawn_from_run_records(tmp_path):
    import numpy as np

    figures = figures_module
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "knn_top1": 61.5}\nnot json\n')
    run = {
        "row": "sns",
        "track": "full",
        "lr": 0.1,
        "seed": 0,
        "run_dir": str(run_dir),
        "steps": 40,
        "knn_top1": 70.0,
        "linear_top1": 75.0,
    }
    pts, final = figures.knn_curve(run, passes_per_step=384)
    assert pts == [(20 * 384, 61.5)] and final == (40 * 384, 70.0)
    # a result that kept its curve draws it without the run directory (a clean clone has none)
    kept = dict(run, run_dir=str(tmp_path / "gone"), knn_monitor=[[30, 65.0]])
    assert figures.knn_curve(kept, passes_per_step=384)[0] == [(30 * 384, 65.0)]
    table = {"rows": {"full": [{"row": "sns", "lr": 0.1}]}, "runs": [run, dict(run, seed=1), dict(run, lr=0.3)]}
    assert list(figures.chosen_runs(table, "full")) == ["sns"]  # seed 0 at the chosen lr only
    # UMAP panels need a backbone on this machine: the lowest seed at the chosen lr that has one
    assert figures.backbone_runs(table, "full") == {}
    for seed in (1, 2):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "backbone.safetensors").write_bytes(b"x")
    table["runs"] += [
        dict(run, seed=2, run_dir=str(tmp_path / "s2")),
        dict(run, seed=1, run_dir=str(tmp_path / "s1")),
        dict(run, lr=0.3, seed=0, run_dir=str(tmp_path / "s1")),
    ]
    assert figures.backbone_runs(table, "full")["sns"]["seed"] == 1
    png = figures.plot_knn_curves({"sns": (pts, final), "vicreg-real": ([], (40 * 512, 68.0))}, tmp_path / "k.png", "t")
    xy = np.random.default_rng(0).normal(size=(20, 2))
    png2 = figures.plot_umaps([("a", xy, np.arange(20) % 10)], [str(i) for i in range(10)], tmp_path / "u.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG" and png2.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SnsError, match="fashion-sitting.json does not exist; run `sns bench fashion --mode sitting`"):
        figures.make_figures("sitting", results=tmp_path / "fashion-sitting", log=lambda *a: None)
    with pytest.raises(SnsError, match="run `sns bench fashion --mode long --precision fp32` first"):
        figures.make_figures("long-fp32", results=tmp_path / "fashion-long-fp32", log=lambda *a: None)


def test_figures_only_redraws_the_figures_asked_for_and_keeps_the_others(tmp_path):
    figures = figures_module
    results = tmp_path / "fashion"
    run = {
        "row": "sns",
        "track": "full",
        "lr": 0.3,
        "seed": 0,
        "run_dir": str(tmp_path / "gone"),  # a clean clone: no run directory, the record keeps its curve
        "steps": 40,
        "knn_top1": 70.0,
        "linear_top1": 75.0,
        "knn_monitor": [[20, 61.5]],
        "config": {"method": "supervised", "batch_size": 8},
    }
    results.with_suffix(".json").write_text(json.dumps({"rows": {"full": [{"row": "sns", "lr": 0.3}]}, "runs": [run]}))
    (results / "figures").mkdir(parents=True)
    umap_png = results / "figures" / "umap_full.png"
    umap_png.write_bytes(b"an earlier UMAP")
    written = figures.make_figures("full", results=results, tracks=("full",), log=lambda *a: None, kinds=("knn",))
    assert written == [results / "figures" / "knn_curves_full.png"]
    assert written[0].read_bytes()[:4] == b"\x89PNG" and umap_png.read_bytes() == b"an earlier UMAP"
    with pytest.raises(SnsError, match="--only: expected some of knn, umap, rho, got umpa"):
        figures.main(["--results", str(results), "--only", "knn,umpa"])


def test_rho_figure_places_each_sweep_row_at_its_syn_ratio(tmp_path):
    figures = figures_module

    def row(name, lin, std=0.5, lr=0.1):
        return {
            "row": name,
            "lr": lr,
            "linear_top1": {"mean": lin, "std": std, "n": 2},
            "knn_top1": {"mean": lin - 4, "std": None, "n": 1},
        }

    table = {
        "rows": {
            "scarce": [
                row("squeeze", 86.0),
                row("sns", 84.0, lr=0.03),
                row("vicreg-real", 83.0),
                row("sns-syn75", 85.0),
                {"row": "sns-syn25", "status": "not run"},
                row("kd-aug", 70.0),
            ]
        }
    }
    pts = figures.rho_points(table, "scarce", "sitting")
    assert [(r, m, n) for r, m, _, n, _ in pts["linear_top1"]] == [
        (0.0, 83.0, "vicreg-real"),
        (0.5, 84.0, "sns"),
        (0.75, 85.0, "sns-syn75"),
        (1.0, 86.0, "squeeze"),
    ]
    assert pts["knn_top1"][0][1:3] == (79.0, 0.0)  # one seed: no std, drawn without an error bar
    assert [p[4] for p in pts["linear_top1"]] == [0.1, 0.03, 0.1, 0.1]  # each row's chosen lr, drawn beside it
    png = figures.plot_rho({"scarce": pts}, tmp_path / "rho.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"

    # the table's runs give every row a run at lr 0.1: the curve uses those runs only (rho varies, lr does not)
    def run(name, lr, seed, lin):
        return {"row": name, "track": "scarce", "lr": lr, "seed": seed, "linear_top1": lin, "knn_top1": lin - 4}

    table["runs"] = [
        run("squeeze", 0.1, 0, 86.0),
        run("sns", 0.03, 0, 84.0),
        run("sns", 0.03, 1, 84.0),
        run("sns", 0.1, 0, 82.0),
        run("sns", 0.1, 1, 83.0),
        run("vicreg-real", 0.1, 0, 83.0),
        run("sns-syn75", 0.1, 0, 85.0),
        run("kd-aug", 0.3, 0, 70.0),
    ]
    pts = figures.rho_points(table, "scarce", "sitting")
    assert [(n, m, lr) for _, m, _, n, lr in pts["linear_top1"]] == [
        ("vicreg-real", 83.0, 0.1),
        ("sns", 82.5, 0.1),
        ("sns-syn75", 85.0, 0.1),
        ("squeeze", 86.0, 0.1),
    ]
    assert abs(pts["linear_top1"][1][2] - 0.7071) < 1e-3  # std over sns's two lr-0.1 seeds
    assert list(figures.rho_sweeps(table, ("scarce",), "sitting")) == ["scarce"]
    two = dict(table, rows={"scarce": [r for r in table["rows"]["scarce"] if r["row"] in ("sns", "vicreg-real")]})
    assert figures.rho_sweeps(two, ("scarce",), "sitting") == {}  # SnS and VICReg-real alone: no sweep figure
    table["runs"] = [r for r in table["runs"] if not (r["row"] == "sns" and r["lr"] == 0.1)]
    assert [p[4] for p in figures.rho_points(table, "scarce", "sitting")["linear_top1"]] == [0.1, 0.03, 0.1, 0.1]


def test_targets_section_compares_sns_with_both_real_baselines_with_the_seed_pair_range():
    def row(name, mean, n=2, spread=0.5):
        lin = {"mean": mean, "std": spread, "n": n, "min": mean - spread, "max": mean + spread}
        return {"row": name, "linear_top1": lin}

    table = {
        "rows": {
            "full": [row("sns", 86.0), row("vicreg-real", 84.0), row("simsiam-real", 84.6)],
            "scarce": [row("sns", 85.0, 1, 0.0), row("vicreg-real", 83.0, 1, 0.0), {"row": "simsiam-real"}],
        }
    }
    md = "\n".join(render.render_targets(table))
    # +1.4 over SimSiam misses the +1.5 target; range: SnS 85.5-86.5 against SimSiam 84.1-85.1
    assert "| full | +1.5 | +2.00 [+1.00, +3.00] | +1.40 [+0.40, +2.40] | no |" in md
    assert "| scarce | +3 | +2.00 | - | - |" in md  # one seed each: no range; a baseline not run: no verdict
    table["rows"]["full"][2] = row("simsiam-real", 84.5, 3, 0.2)
    assert "| full | +1.5 | +2.00 [+1.00, +3.00] | +1.50 [+0.80, +2.20] | yes |" in "\n".join(
        render.render_targets(table)
    )
    table["rows"]["full"][0]["status"] = "partial: sweep 1/3, seeds 1"  # --mode full, built across sittings
    assert "+1.50 [+0.80, +2.20] | yes (partial rows) |" in "\n".join(render.render_targets(table))


def test_summary_puts_the_tracks_side_by_side_with_the_target_verdicts():
    def row(name, lin, knn, n, lr=0.1, status="done"):
        return {
            "row": name,
            "lr": lr,
            "status": status,
            "linear_top1": {"mean": lin, "std": 0.5, "n": n},
            "knn_top1": {"mean": knn, "std": 0.25, "n": n},
        }

    table = {
        "rows": {
            "full": [
                row("sns", 86.0, 80.0, 3),
                row("vicreg-real", 84.0, 79.0, 3),
                row("simsiam-real", 84.5, 78.0, 2, lr=0.3),
                {"row": "squeeze", "status": "not run"},
                row("raw-pixels", 84.45, 82.1, 1, lr=None),
            ],
            "scarce": [
                row("sns", 85.0, 79.0, 1, status="partial: sweep 1/3, seeds 1"),
                row("vicreg-real", 83.0, 78.0, 1),
                {"row": "simsiam-real"},
            ],
        }
    }
    lines = render.render_summary(table)
    assert lines[0] == (
        "| row | full track (60k real): linear / kNN | lr | seeds | scarce track (2k real): linear / kNN | lr | seeds |"
    )
    assert "| sns | 86.00 ± 0.50 / 80.00 ± 0.25 | 0.1 | 3 | 85.00 / 79.00 | 0.1 | 1 |" in lines
    assert "| simsiam-real | 84.50 ± 0.50 / 78.00 ± 0.25 | 0.3 | 2 | - |  |  |" in lines
    assert "| raw-pixels | 84.45 / 82.10 | - | 1 | - |  |  |" in lines
    assert not any(line.startswith("| squeeze ") for line in lines)  # no result on either track: left out
    # full: +2.00 over VICReg, +1.50 over SimSiam, both >= 1.5; scarce: SimSiam not run, so no verdict
    assert lines[-1] == (
        "| **SnS - VICReg-real / SnS - SimSiam-real** | **+2.00 / +1.50** (target +1.5: met) |  |  "
        "| **+2.00 / -** (target +3: no verdict) |  |  |"
    )  # no verdict, so nothing to mark partial


def test_precision_fp32_is_a_separate_table_trained_and_evaluated_in_fp32(tmp_path, monkeypatch):
    assert plan.with_precision("sitting", None) == plan.with_precision("sitting", "bf16") == "sitting"
    assert plan.with_precision("full", "fp32") == "full-fp32"
    for native, expected in ((False, "long-fp32"), (True, "long")):
        monkeypatch.setattr(plan, "bf16_native", lambda device, native=native: native)
        assert plan.with_precision("long", "auto") == expected
    assert plan.with_precision("quick", "auto") == "quick"
    with pytest.raises(SnsError, match="--precision fp32 does not apply to --mode quick"):
        plan.with_precision("quick", "fp32")
    with pytest.raises(SnsError, match="--precision 'fp16': expected one of bf16, fp32, auto"):
        plan.with_precision("full", "fp16")
    # the same run but for its precision: trained (precision key) and evaluated (features) in fp32
    row = plan.ROW_BY_NAME["sns"]
    bf, fp = (plan.resolve_run_config(row, "full", 0.1, 0, m, "T") for m in ("sitting", "sitting-fp32"))
    assert (bf["precision"], fp["precision"]) == ("bf16", "fp32") and dict(bf, precision="fp32") == fp
    assert plan.mode_settings("sitting")["eval_bf16"] and not plan.mode_settings("sitting-fp32")["eval_bf16"]
    assert plan.resolve_run_config(row, "full", 0.1, 0, "quick", "T")["precision"] == "auto"  # smoke: fast anywhere
    assert "--precision fp32" in render.render_markdown({"mode": "full-fp32", "rows": {}, "settings": {}})
    # its own results and work folders; the bf16 table stays as it was
    calls = []
    monkeypatch.setattr(
        train,
        "run_one",
        lambda row, track, lr, seed, cfg, ev, work, *a: (
            calls.append(work) or {"knn_top1": 50.0, "linear_top1": 60.0, "val_knn_top1": 40.0, "wall_s": 2.0}
        ),
    )
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    results = tmp_path / "bench" / "results"
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.chdir(tmp_path)
    table = cli.run_bench(mode="full", precision="fp32", rows="raw-pixels", tracks=("full",), log=lambda *a: None)
    assert calls == [Path("runs") / "bench-fashion-full-fp32"] and table["mode"] == "full-fp32"
    assert (results / "fashion-full-fp32" / "runs" / "full__raw-pixels__lr0__s0.json").exists()
    md = (results / "fashion-full-fp32.md").read_text()
    assert md.startswith("# Fashion-MNIST bench: the issue's protocol (--mode full) in fp32")
    assert not (results / "fashion.json").exists()


def test_render_only_rewrites_the_tables_from_cached_cells_and_runs_nothing(tmp_path, monkeypatch):
    results = tmp_path / "bench" / "results"
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    monkeypatch.setattr(
        train, "run_one", lambda *a: {"knn_top1": 50.0, "linear_top1": 60.0, "val_knn_top1": 40.0, "wall_s": 2.0}
    )
    cli.run_bench(mode="sitting", rows="raw-pixels", tracks=("full",), log=lambda *a: None)
    md = results / "fashion-sitting.md"
    md.write_text("stale")

    def no_training(*a, **k):
        raise AssertionError("--render-only ran a cell")

    monkeypatch.setattr(cli, "run_cells", no_training)
    table = cli.run_bench(mode="sitting", render_only=True, log=lambda *a: None)
    assert table["complete"] and "| raw-pixels | 60.00 | 50.00 |" in md.read_text()
    assert cli.build_parser().parse_args(["--render-only"]).render_only


def test_teacher_precision_bf16_is_its_own_sitting_table_with_the_teacher_under_bf16(tmp_path):
    assert plan.with_teacher_precision("sitting", None) == plan.with_teacher_precision("sitting", "fp32") == "sitting"
    mode = plan.with_teacher_precision("sitting", "bf16")
    assert mode == "sitting-teacher-bf16" and plan.split_mode(mode) == ("sitting", False) and plan.teacher_bf16(mode)
    for other in ("full", "sitting-fp32", "quick"):
        with pytest.raises(SnsError, match="--teacher-precision bf16 runs only with --mode sitting"):
            plan.with_teacher_precision(other, "bf16")
    with pytest.raises(SnsError, match="--teacher-precision 'fp16': expected one of fp32, bf16"):
        plan.with_teacher_precision("sitting", "fp16")
    # the same run but for the teacher's precision; another fingerprint, so fp32-teacher cells are never reused
    row = plan.ROW_BY_NAME["squeeze"]
    fp32, bf16 = (plan.resolve_run_config(row, "full", 0.1, 0, m, "T") for m in ("sitting", mode))
    assert bf16["teacher_precision"] == "bf16" and dict(bf16, teacher_precision=fp32["teacher_precision"]) == fp32
    assert cells.cell_fingerprint(row, "full", "sitting", fp32, "sha") != cells.cell_fingerprint(
        row, "full", mode, bf16, "sha"
    )
    md = render.render_markdown({"mode": mode, "rows": {}, "settings": {}})
    assert md.startswith("# Fashion-MNIST bench: one-sitting budget (--mode sitting), teacher in bf16")
    assert "--teacher-precision bf16" in md
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--teacher-precision", "fp16"])


def test_lrs_widens_the_sweep_of_selected_rows_and_the_table_uses_every_swept_lr(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "run_one", _fake_run_one(calls))
    monkeypatch.setattr(train, "eval_data", lambda quick: train.EvalData(None, None, None, {}))
    kw = dict(
        mode="quick",
        rows="vicreg-real",
        tracks=("full",),
        work=tmp_path / "w",
        results_dir=tmp_path / "res" / "fashion-quick",
        log=lambda *a: None,
    )
    cli.run_bench(**kw)
    assert [c[2:4] for c in calls] == [(0.1, 0), (0.1, 1)]
    calls.clear()
    table = cli.run_bench(**dict(kw, lrs=(0.1, 0.3)))
    assert [c[2:4] for c in calls][0] == (0.3, 0)  # only the new lr at seed 0; lr 0.1 stays cached
    row = {r["row"]: r for r in table["rows"]["full"]}["vicreg-real"]
    assert set(row["sweep"]) == {"0.1", "0.3"}
    md = render.render_markdown(table)  # the sweep is shown: held-out kNN picks lr 0.3 (40.3 > 40.1), in bold
    assert "| row | lr 0.1 | lr 0.3 | chosen |" in md
    assert "| vicreg-real | 40.10 / 60.00 | **40.30 / 60.00** | 0.3 |" in md
    assert render.render_sweeps([dict(row, sweep={"0.1": 40.1})]) == []  # one lr: nothing to show
    with pytest.raises(SnsError, match="--lrs 'x': expected a comma list"):
        cli.main(["--quick", "--lrs", "x"])


def test_monitor_curve_skips_torn_lines_and_collect_reads_every_cell(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 150, "knn_top1": 71.25}\n{"step": 200, "loss": 1.0}\n{"ste')
    assert cells.monitor_curve(run_dir) == [[150, 71.25]] and cells.monitor_curve(tmp_path / "none") == []
    res = {
        "row": "sns",
        "track": "full",
        "lr": 0.1,
        "seed": 0,
        "steps": 300,
        "knn_top1": 75.0,
        "linear_top1": 80.0,
        "val_knn_top1": 74.0,
        "wall_s": 60.0,
        "knn_monitor": [[150, 71.25]],
        "config": {"method": "sns"},
    }
    common.write_json(cells.result_path(tmp_path / "res", "full", "sns", 0.1, 0), res)
    (tmp_path / "res" / "runs" / "full__sns__lr0.1__s1.json").write_text("{torn")  # a cell cut off by a kill
    table = cells.collect(tmp_path / "res", "long")
    assert table["mode"] == "long" and len(table["runs"]) == 1 and "config" not in table["runs"][0]
    assert table["runs"][0]["knn_monitor"] == [[150, 71.25]]
    sns = {r["row"]: r for r in table["rows"]["full"]}["sns"]
    assert sns["status"] == "done" and sns["linear_top1"]["mean"] == 80.0  # long: one lr, one seed
    # the CPU model of every cell: from its result file, 'unrecorded' for cells older than that record
    assert table["runs"][0]["cpu"] == "unrecorded"
    common.write_json(
        cells.result_path(tmp_path / "res", "full", "sns", 0.1, 1), dict(res, seed=1, machine={"cpu": "Some CPU"})
    )
    table = cells.collect(tmp_path / "res", "long")
    assert sorted(r["cpu"] for r in table["runs"]) == ["Some CPU", "unrecorded"]
    assert (
        "CPU model of the cells (each cell's result file records it): Some CPU: 1 cell; unrecorded: 1 (cells run "
        "before result files recorded the CPU model)." in render.render_markdown(table)
    )
    # one model name, with and without bf16 hardware: two kinds of cell (what common.machine() records)
    for seed, native in ((2, True), (3, False), (4, True)):
        machine = {"cpu": "AMD EPYC", "bf16_native": native}
        common.write_json(
            cells.result_path(tmp_path / "res", "full", "sns", 0.1, seed), dict(res, seed=seed, machine=machine)
        )
    assert (
        "CPU model of the cells (each cell's result file records it): AMD EPYC (bf16 hardware): 2 cells; AMD EPYC "
        "(no bf16 hardware): 1 cell; Some CPU: 1 cell; unrecorded: 1"
        in render.render_markdown(cells.collect(tmp_path / "res", "long"))
    )


def test_teachers_are_the_committed_ones_or_trained_with_the_gan_preset_in_its_vocabulary(tmp_path, monkeypatch):
    from squeezespan.gan.config import check_config

    committed = common.RESULTS / "teachers" / "fashion-full"
    assert train.ensure_teacher("full", "sitting", tmp_path, None, print) == str(committed)
    assert train.ensure_teacher("full", "quick", tmp_path, "GIVEN", print) == "GIVEN"
    seen = []

    def fake_train_gan(cfg, run_dir, resume=False, progress=True, dataset=None, log=print):
        seen.append((check_config(cfg), len(dataset)))  # every override is a train-gan key with a valid value
        return {"kimg": cfg["kimg"]}

    monkeypatch.setattr(train, "train_gan", fake_train_gan)
    monkeypatch.setattr(train, "load_dataset", lambda name, split="train", resolution=None: _fake_fashion(3000, split))
    run_dir = train.ensure_teacher("scarce", "quick", tmp_path, None, lambda *a: None)
    assert run_dir == str(tmp_path / "teachers" / "fashion-scarce-quick")
    cfg, images = seen[0]
    assert images == plan.SCARCE_IMAGES and cfg["device"] == "cpu" and cfg["kimg"] == 2 and cfg["ada_target"] == 0.6


def test_an_interrupted_teacher_is_never_committed(tmp_path, monkeypatch):
    from bench.fashion import train

    monkeypatch.setattr(train, "train_gan", lambda *a, **k: {"interrupted": True, "step": 3})
    monkeypatch.setattr(train, "load_dataset", lambda name, split="train", resolution=None: _fake_fashion(3000, split))
    committed = tmp_path / "results" / "teachers" / "fashion-full"
    monkeypatch.setattr(train.common, "RESULTS", tmp_path / "results")
    with pytest.raises(SnsError, match="was interrupted; run the same command again"):
        train.ensure_teacher("full", "sitting", tmp_path / "work", None, lambda *a: None)
    assert not committed.exists()


def test_todo_lists_the_cells_still_to_run_in_run_order_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plan, "bf16_native", lambda device: True)  # the same lines on any CPU (see the next test)
    # a copy of some committed full-mode cells: vicreg-real with its sweep done, sns with one lr of three
    res = tmp_path / "fashion"
    (res / "runs").mkdir(parents=True)
    committed = common.RESULTS / "fashion" / "runs"
    names = [f"full__vicreg-real__lr{lr}__s0.json" for lr in ("0.03", "0.1", "0.3")] + ["full__sns__lr0.1__s0.json"]
    for name in names:
        (res / "runs" / name).write_bytes((committed / name).read_bytes())
    walls = {n: json.loads((committed / n).read_text())["wall_s"] for n in names}
    argv = ["--mode", "full", "--tracks", "full", "--results", str(res), "--work", str(tmp_path / "work"), "--todo"]
    assert cli.main([*argv, "--rows", "vicreg-real,sns,random-init"]) == 0
    out = capsys.readouterr().out.splitlines()
    vicreg_h = sum(w for n, w in walls.items() if "vicreg" in n) / 3 / 3600
    sns_h = walls["full__sns__lr0.1__s0.json"] / 3600
    assert out == [
        "Cells still to run for fashion (--mode full), in the order this command runs them:",
        "[full] sns: lr 0.03 seed 0, lr 0.3 seed 0 (the lr sweep); then seeds 1-2 at the lr it picks, where not cached "
        f"(cached: lr 0.1: seeds 0); ~{sns_h:.1f} h per cell (mean wall of its 1 cached cell)",
        # held-out kNN picked lr 0.1 for vicreg-real: its seeds 1 and 2 are due
        f"[full] vicreg-real: lr 0.1 seed 1, lr 0.1 seed 2; ~{vicreg_h:.1f} h per cell (mean wall of its 3 cached "
        "cells)",
        "[full] random-init: lr 0 seed 0; no cached cell of this row to estimate its time",
        f"Due now: 5 cells, about {(2 * vicreg_h + 2 * sns_h):.1f} h at the cached cells' pace (1 without an "
        "estimate); seeds that wait for a sweep are not counted.",
    ]
    assert sorted(p.name for p in (res / "runs").iterdir()) == sorted(names)  # nothing ran, no table written
    assert not (tmp_path / "work").exists() and not res.with_suffix(".md").exists()
    assert cli.main([*argv, "--rows", "vicreg-real", "--lrs", "0.1"]) == 0  # --lrs narrows the sweep like a run
    assert capsys.readouterr().out.splitlines()[1].startswith("[full] vicreg-real: lr 0.1 seed 1, lr 0.1 seed 2;")
    # a cell an earlier sitting stopped part-way resumes at its newest checkpoint: it owes only the steps left
    total = plan.resolve_run_config(plan.ROW_BY_NAME["vicreg-real"], "full", 0.1, 1, "full")["steps"]
    ckpts = tmp_path / "work" / "full" / "vicreg-real" / "lr0.1-s1" / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (100, total // 4):
        (ckpts / f"ckpt-{step:08d}.pt").write_bytes(b"")  # --todo reads the names only
    assert cli.main([*argv, "--rows", "vicreg-real"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"[full] vicreg-real: lr 0.1 seed 1 (resumes at step {total // 4} of {total}), lr 0.1 seed 2; "
        f"~{vicreg_h:.1f} h per cell (mean wall of its 3 cached cells)",
        f"Due now: 2 cells, about {vicreg_h * (2 - (total // 4) / total):.1f} h at the cached cells' pace (part-way "
        "cells: the steps they have left).",
    ]
    shutil.rmtree(tmp_path / "work")
    # one lr (a sitting): no sweep to wait for
    work = ["--work", str(tmp_path / "work"), "--tracks", "scarce", "--todo"]
    assert cli.main(["--mode", "sitting", "--results", str(tmp_path / "s"), "--rows", "vicreg-real", *work]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "[scarce] vicreg-real: lr 0.1 seed 0; then seed 1 at that lr; no cached cell of this row to estimate its time",
        "Due now: 1 cell (no estimate).",
    ]
    # a quick run trains its own teachers: none in this work folder yet
    assert cli.main(["--mode", "quick", "--results", str(tmp_path / "q"), "--rows", "sns", *work]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "[scarce] sns: every cell, once the scarce track's teacher is trained",
        "Due now: 0 cells; first the teacher of the scarce track.",
    ]


def test_a_bf16_bench_on_a_cpu_without_bf16_hardware_warns_before_it_plans_or_trains(tmp_path, capsys, monkeypatch):
    # the cached cells' hours were measured with bf16 hardware: where torch emulates bf16 they do not hold
    monkeypatch.setattr(plan, "bf16_native", lambda device: False)
    work = ["--work", str(tmp_path / "work"), "--tracks", "scarce", "--rows", "vicreg-real"]
    assert cli.main(["--mode", "sitting", "--results", str(tmp_path / "s"), *work, "--todo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "Due now: 1 cell (no estimate)."
    assert out[-1].startswith("Warning: this CPU has no bf16 hardware (no AVX-512 BF16 / AMX) and --mode sitting ")
    assert "do not hold here" in out[-1] and out[-1].endswith("or give --precision fp32 for a separate fp32 table.")
    # the fp32 table, and quick (bf16 only where native), never emulate: no warning
    for mode in (["--mode", "sitting", "--precision", "fp32"], ["--mode", "quick"]):
        assert cli.main([*mode, "--results", str(tmp_path / "x"), *work, "--todo"]) == 0
        assert "Warning" not in capsys.readouterr().out
    # nothing left to run: nothing to warn about
    assert plan.emulated_bf16_warning("full") is not None
    res = tmp_path / "fashion"
    (res / "runs").mkdir(parents=True)
    for cell in (common.RESULTS / "fashion" / "runs").glob("scarce__vicreg-real__*.json"):  # its sweep + seeds
        (res / "runs" / cell.name).write_bytes(cell.read_bytes())
    assert cli.main(["--mode", "full", "--results", str(res), *work, "--todo"]) == 0
    assert capsys.readouterr().out.splitlines() == ["nothing to run: every selected cell of fashion is cached"]
    # a run logs the warning before its first cell
    seen = []
    monkeypatch.setattr(cli, "run_cells", lambda *a: (seen.append("cells"), ({}, False))[1])
    cli.run_bench(
        "sitting",
        rows="vicreg-real",
        tracks=("scarce",),
        work=tmp_path / "w",
        results_dir=tmp_path / "r",
        log=seen.append,
    )
    assert seen[0].startswith("Warning: this CPU has no bf16 hardware") and seen[1] == "cells"
