"""Report plots: PNG files written where asked (folders made), figures freed."""

from squeezespan.report.plots import plot_bars, plot_curves, plt


def test_report_plots_write_pngs_into_new_folders_and_free_their_figures(tmp_path):
    before = len(plt.get_fignums())
    curves = plot_curves(
        {"sns": [(0, 10.0), (50, 40.5)], "vicreg": [(0, 11.0), (50, 38.0)], "empty": []}, tmp_path / "a" / "knn.png"
    )
    bars = plot_bars({"sns": 96.4, "vicreg": 97.5}, tmp_path / "b" / "c" / "bars.png", title="digits")
    for path in (curves, bars):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert len(plt.get_fignums()) == before


def test_accuracy_bars_take_probes_side_by_side_and_seed_spreads(tmp_path):
    values = {"raw pixels": {"linear probe": 97.2, "kNN": 97.5}, "sns": {"linear probe": [96.1, 96.9], "kNN": 94.0}}
    path = plot_bars(values, tmp_path / "bars.png", title="digits")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timing_table_has_a_column_per_run_and_keeps_the_first():
    from squeezespan.report.demo import timing_table

    runs = [
        {"run": 1, "started": "t1", "stages": {"teacher": {"status": "ran", "seconds": 200.0}}, "total_s": 250.0},
        {"run": 2, "started": "t2", "stages": {"teacher": {"status": "reused", "seconds": 0.0}}, "total_s": 5.0},
        {"run": 3, "started": "t3", "stages": {"teacher": {"status": "resumed", "seconds": 30.0}}, "total_s": None},
    ]
    lines = timing_table(runs, {"teacher": "teacher (12 kimg)"})
    assert lines[0] == "| stage | run 1 (t1) | run 2 (t2) | run 3 (t3) |"
    assert lines[2] == "| teacher (12 kimg) | 200 s (3 min 20 s) | reused | 30 s (resumed) |"
    assert lines[3] == "| **total** | **250 s (4 min 10 s)** | **5 s** | **unfinished** |"
