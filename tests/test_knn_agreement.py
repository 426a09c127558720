"""The in-training kNN monitor and `sns eval` agree on the final backbone (issue 26): same k rule, same t, the
final point in `sns eval`'s precision (fp32), and both name what they used."""

import json

import pytest

from squeezespan.config import resolve_config
from squeezespan.engine.logging import read_metrics
from squeezespan.eval import KNN_CAP_FRACTION
from squeezespan.eval.run import EVAL_DEFAULTS, run_eval
from squeezespan.pretraining import pretrain


def _quiet(*args, **kwargs):
    pass


@pytest.mark.parametrize("bf16", [False, True])
def test_monitor_final_point_is_the_eval_table_value(tmp_path, tiny_pretrain_cfg, bf16):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=2, knn_every=1, final_eval=True, bf16=bf16)
    summary = pretrain(cfg, tmp_path / "run", progress=False, log=_quiet)
    final = summary["knn"]
    # the summary names what the final point was made with: k used, t, rule, bank and precision
    assert final["bf16"] is False and final["t"] == 0.1 and final["knn_k"] == 200 and final["cap"] == KNN_CAP_FRACTION
    assert final["bank"] == 1437 and final["smallest_class"] == 138 and final["k"] == 55
    points = [m for m in read_metrics(tmp_path / "run") if "knn_top1" in m]
    assert [m["step"] for m in points] == [1, 2] and points[0]["knn_k"] == final["k"]
    assert points[-1]["knn_top1"] == final["top1"]  # the curve's last point is the summary's

    assert EVAL_DEFAULTS["bf16"] is False  # the precision the monitor's final point uses
    over = [f"backbones=[{tmp_path / 'run'}]", "resolution=16", "linear_epochs=1", "device=cpu"]
    (tmp_path / "ev").mkdir()
    run_eval(resolve_config(EVAL_DEFAULTS, "eval", overrides=over), tmp_path / "ev", progress=False, log=_quiet)
    row = json.loads((tmp_path / "ev" / "eval.json").read_text())["results"][0]
    assert row["bf16"] is False
    assert {key: row["knn"][key] for key in ("k", "t", "bank", "rule")} == {
        key: final[key] for key in ("k", "t", "bank", "rule")
    }
    # exported backbone (normalises inside) vs the student (normalised outside): the same votes, to rounding
    assert abs(row["knn"]["top1"] - final["top1"]) < 1e-3 and abs(row["knn"]["top5"] - final["top5"]) < 1e-3


def test_pretrain_exposes_the_knn_cap_and_checks_it():
    from squeezespan.checks import check_pretrain_config
    from squeezespan.errors import SnsError
    from squeezespan.eval import KNN_CAP_FRACTION
    from squeezespan.pretraining import PRETRAIN_DEFAULTS

    assert PRETRAIN_DEFAULTS["knn_cap"] == KNN_CAP_FRACTION
    with pytest.raises(SnsError, match="knn_cap"):
        check_pretrain_config(dict(PRETRAIN_DEFAULTS, knn_cap=1.5))
