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
