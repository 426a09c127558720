"""Tests of the teacher-quality bench (bench.teacher_quality = `sns bench teachers`): cells, cache, table, figure."""

from __future__ import annotations

import json

import pytest

from squeezespan import bench as sns_bench
from squeezespan.errors import SnsError

sns_bench.load("teachers")  # puts the source checkout on sys.path: bench imports as a package
from bench.fashion import train  # noqa: E402
from bench.teacher_quality import cells, teachers  # noqa: E402

SNAPSHOTS = ["fashion-full-kimg20", "fashion-full"]  # committed: kimg 20 (FD-ref 25.39) and kimg 60 (3.36)


def _fake(calls):
    def run_one(row, track, lr, seed, cfg, ev, work, force, progress, log):
        calls.append((row.name, (cfg["teacher"] or "-").rsplit("/", 1)[-1], seed, force))
        better = 60.0 if (cfg["teacher"] or "").endswith("fashion-full") else 40.0
        return {
            "knn_top1": better + seed,
            "linear_top1": better + 10 + seed,
            "val_knn_top1": 1.0,
            "wall_s": 90.0,
            "steps": cfg["steps"],
        }

    return run_one


@pytest.fixture
def fake_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(train, "run_one", _fake(calls))
    monkeypatch.setattr(train, "eval_data", lambda mode: train.EvalData(None, None, None, {"mode": mode}))
    return calls


def _kw(tmp_path, **extra):
    return dict(
        dict(
            quick=True,
            teachers=SNAPSHOTS,
            work=tmp_path / "w",
            results_dir=tmp_path / "res" / "tq",
            figure=tmp_path / "fig" / "tq.png",
            log=lambda *a: None,
        ),
        **extra,
    )


def test_each_cell_runs_once_is_then_cached_and_force_redoes_it(tmp_path, fake_runs):
    table = cells.run_teacher_quality(**_kw(tmp_path))
    assert fake_runs == [("squeeze", "fashion-full-kimg20", 0, False), ("squeeze", "fashion-full", 0, False)]
    assert table["complete"] and [t["kimg"] for t in table["teachers"]] == [20.0, 60.0]
    assert [round(t["fd_ref"], 2) for t in table["teachers"]] == [25.39, 3.36]
    fake_runs.clear()
    cells.run_teacher_quality(**_kw(tmp_path))
    assert fake_runs == []  # every cell cached
    cells.run_teacher_quality(**_kw(tmp_path, teachers=SNAPSHOTS[:1], force=True))
    assert fake_runs == [("squeeze", "fashion-full-kimg20", 0, True)]
    fake_runs.clear()
    cells.run_teacher_quality(**_kw(tmp_path, rows="squeeze,sns", seeds=2))
    # squeeze seed 0 stays cached; sns and seed 1 are new cells; every teacher's seed 0 before any seed 1
    assert fake_runs == [
        ("sns", "fashion-full-kimg20", 0, False),
        ("sns", "fashion-full", 0, False),
        ("squeeze", "fashion-full-kimg20", 1, False),
        ("sns", "fashion-full-kimg20", 1, False),
        ("squeeze", "fashion-full", 1, False),
        ("sns", "fashion-full", 1, False),
    ]
    saved = json.loads(next((tmp_path / "res" / "tq" / "runs").glob("squeeze__kimg20__*__s0.json")).read_text())
    assert saved["fingerprint"] and saved["teacher"]["G_ema_sha256"] == table["teachers"][0]["G_ema_sha256"]


def test_table_markdown_and_figure_carry_kimg_and_fd_ref(tmp_path, fake_runs):
    cells.run_teacher_quality(**_kw(tmp_path, rows="squeeze,sns", seeds=2))
    table = json.loads((tmp_path / "res" / "tq.json").read_text())
    sq = table["teachers"][1]["rows"]["squeeze"]
    assert sq["knn_top1"]["mean"] == 60.5 and sq["seeds"] == [0, 1] and sq["linear_top1"]["n"] == 2
    md = (tmp_path / "res" / "tq.md").read_text()
    assert "SMOKE RUN" in md
    assert "| 20 | 25.39 | squeeze | 50.50 ± 0.71 | 40.50 ± 0.71 | 1.5 ± 0.0 | 32 | 2 |" in md
    assert "| 60 | 3.36 | sns | 70.50 ± 0.71 | 60.50 ± 0.71 |" in md
    png = (tmp_path / "fig" / "tq.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_run_config_rebudgets_the_fashion_preset_for_each_teacher():
    sq = cells.run_config("squeeze", "T", 0, quick=False, budget=30_000)
    sns = cells.run_config("sns", "T", 1, quick=False, budget=30_000)
    # squeeze: 256 synthetic images x 1 pass per step; sns: 128 synthetic + 128 real x 2 views
    assert (sq["steps"], sns["steps"]) == (117, 78) and sq["teacher"] == "T" and sns["seed"] == 1
    assert sq["lr"] == 0.1 and sq["width"] == 0.5 and sq["warmup_steps"] == 23 and sq["final_eval"] is False
    fp = cells.cell_fingerprint("squeeze", sq, "sha-a", False, 30_000)
    assert fp != cells.cell_fingerprint("squeeze", sq, "sha-b", False, 30_000)  # another teacher's weights
    assert fp != cells.cell_fingerprint(
        "squeeze", cells.run_config("squeeze", "T", 0, False, 60_000), "sha-a", False, 60_000
    )


def test_unknown_teacher_or_row_is_a_one_line_error_naming_it(tmp_path, fake_runs):
    with pytest.raises(SnsError) as e:
        cells.run_teacher_quality(**_kw(tmp_path, teachers=["fashion-full", "/no/such/teacher"]))
    assert "/no/such/teacher" in str(e.value) and "\n" not in str(e.value)
    assert fake_runs == []  # checked before any cell runs
    with pytest.raises(SnsError, match="--rows vicreg-real: .*with --sitting"):
        cells.run_teacher_quality(**_kw(tmp_path, rows="vicreg-real"))
    with pytest.raises(SnsError, match="--sitting takes the fashion bench's sitting budget"):
        cells.run_teacher_quality(**_kw(tmp_path, quick=False, sitting=True, budget_passes=1000))
    with pytest.raises(SnsError, match="--ten-epochs takes the fashion bench's full budget"):
        cells.run_teacher_quality(**_kw(tmp_path, quick=False, ten_epochs=True, budget_passes=1000))
    with pytest.raises(SnsError, match="--sitting and --ten-epochs are two budgets"):
        cells.run_teacher_quality(**_kw(tmp_path, quick=False, sitting=True, ten_epochs=True))
    with pytest.raises(SnsError, match="needs a trained teacher"):
        teachers.resolve_teachers(["random"], tmp_path)


def test_random_teacher_is_kimg0_of_the_same_architecture_and_loads(tmp_path, monkeypatch):
    measured = []

    def fake_fd(G, base, log=print):
        measured.append(G.z_dim)
        return 321.0, None

    monkeypatch.setattr(teachers, "measure_fd_ref", fake_fd)
    first = teachers.resolve_teachers(["random", "fashion-full-kimg20"], tmp_path)
    assert [t.kimg for t in first] == [0.0, 20.0] and first[0].fd_ref == 321.0
    assert first[0].sha != first[1].sha and measured == [128]
    again = teachers.resolve_teachers(["random", "fashion-full-kimg20"], tmp_path)
    assert measured == [128] and again[0].sha == first[0].sha  # reused, and the same seeded init
    from squeezespan.teachers.load import load_teacher

    images, feats = load_teacher(first[0].spec).sample(1, seed=0)
    assert tuple(images.shape) == (1, 1, 32, 32) and len(feats) == 4


def test_sitting_cells_are_the_fashion_benchs_and_reuse_its_results(tmp_path, fake_runs, monkeypatch):
    """--sitting: each teacher's cell is the fashion bench's sitting cell (same config and fingerprint), so a cell
    that bench already ran is reused; vicreg-real (rho 0, no teacher) runs once per seed; the table says what
    span changes per teacher, with the seed range."""
    from bench.fashion import cells as fashion_cells
    from bench.fashion import plan

    ran = tmp_path / "fashion-sitting"
    monkeypatch.setattr(cells, "span_results", lambda span: ran)
    spec = str(teachers.TEACHER_DIR / "fashion-full")
    cfg = plan.resolve_run_config(plan.ROW_BY_NAME["squeeze"], "full", 0.1, 0, "sitting", spec)
    sha = fashion_cells.teacher_identity(spec)["G_ema_sha256"]
    fp = fashion_cells.cell_fingerprint(plan.ROW_BY_NAME["squeeze"], "full", "sitting", cfg, sha)
    theirs = {"seed": 0, "fingerprint": fp, "config": cfg, "linear_top1": 86.5, "knn_top1": 83.0, "wall_s": 1200.0}
    fashion_cells.result_path(ran, "full", "squeeze", 0.1, 0).parent.mkdir(parents=True)
    fashion_cells.result_path(ran, "full", "squeeze", 0.1, 0).write_text(json.dumps(theirs))

    kw = _kw(tmp_path, quick=False, sitting=True, rows="squeeze,sns,vicreg-real", seeds=2)
    table = cells.run_teacher_quality(**kw)
    assert fake_runs == [  # kimg 60 squeeze seed 0 is the fashion bench's cell: not run again
        ("squeeze", "fashion-full-kimg20", 0, False),
        ("sns", "fashion-full-kimg20", 0, False),
        ("sns", "fashion-full", 0, False),
        ("vicreg-real", "-", 0, False),
        ("squeeze", "fashion-full-kimg20", 1, False),
        ("sns", "fashion-full-kimg20", 1, False),
        ("squeeze", "fashion-full", 1, False),
        ("sns", "fashion-full", 1, False),
        ("vicreg-real", "-", 1, False),
    ]
    assert cells.run_config("sns", spec, 0, False, 0, span="sitting")["warmup_steps"] == 100  # not re-budgeted
    sq60 = table["teachers"][1]["rows"]["squeeze"]["linear_top1"]
    assert (sq60["min"], sq60["max"]) == (71.0, 86.5)  # the reused cell (86.5) and this bench's seed 1 (71.0)
    assert table["references"]["vicreg-real"]["seeds"] == [0, 1]
    md = (tmp_path / "res" / "tq.md").read_text()
    assert "When does span pay?" in md and "SMOKE" not in md
    # kimg 20: sns 50.5 +- 0.71 (50, 51) vs squeeze the same: +0.00, seed-pair range [-1, +1]
    assert "| 20 | 25.39 | 50.50 ± 0.71 / 40.50 ± 0.71 | 50.50 ± 0.71 / 40.50 ± 0.71 | +0.00 [-1.00, +1.00] |" in md
    assert "rho = 0 (vicreg-real, real images only, no teacher; lr 0.1): linear 50.50 ± 0.71" in md
    fake_runs.clear()
    cells.run_teacher_quality(**kw)
    assert fake_runs == []
    table = cells.run_teacher_quality(**dict(kw, seeds=3, render_only=True))  # a third seed: nothing runs
    assert fake_runs == [] and table["complete"] is False
    assert "**Incomplete: 10 of 15 cells so far.**" in (tmp_path / "res" / "tq.md").read_text()


def test_ten_epochs_cells_are_the_fashion_benchs_full_cells_and_reuse_its_results(tmp_path, fake_runs, monkeypatch):
    """--ten-epochs: the span-pays cells at the fashion bench's 10-epoch budget (--mode full, lr 0.1), its cells
    reused from its full-mode results, in a table of their own."""
    from bench.fashion import cells as fashion_cells
    from bench.fashion import plan

    ran = tmp_path / "fashion"
    seen = []
    monkeypatch.setattr(cells, "span_results", lambda span: seen.append(span) or ran)
    spec = str(teachers.TEACHER_DIR / "fashion-full")
    full = cells.run_config("squeeze", spec, 0, False, 0, span="full")
    assert full == plan.resolve_run_config(plan.ROW_BY_NAME["squeeze"], "full", 0.1, 0, "full", spec)
    assert full["steps"] > cells.run_config("squeeze", spec, 0, False, 0, span="sitting")["steps"] * 9
    sha = fashion_cells.teacher_identity(spec)["G_ema_sha256"]
    fp = fashion_cells.cell_fingerprint(plan.ROW_BY_NAME["squeeze"], "full", "full", full, sha)
    assert cells.cell_fingerprint("squeeze", full, sha, False, 0, span="full") == fp
    theirs = {"seed": 0, "fingerprint": fp, "config": full, "linear_top1": 88.08, "knn_top1": 84.94, "wall_s": 9e3}
    fashion_cells.result_path(ran, "full", "squeeze", 0.1, 0).parent.mkdir(parents=True)
    fashion_cells.result_path(ran, "full", "squeeze", 0.1, 0).write_text(json.dumps(theirs))
    kw = _kw(tmp_path, quick=False, ten_epochs=True, rows="squeeze,sns", teachers=["fashion-full"])
    table = cells.run_teacher_quality(**kw)
    assert fake_runs == [("sns", "fashion-full", 0, False)] and set(seen) == {"full"}
    assert table["teachers"][0]["rows"]["squeeze"]["linear_top1"]["mean"] == 88.08
    md = (tmp_path / "res" / "tq.md").read_text()
    assert md.startswith(
        "# When does span pay? Squeeze vs Squeeze and Span against teacher quality (Fashion-MNIST, "
        "ten epoch-equivalents)"
    )
    assert "`sns bench fashion --mode full`" in md
