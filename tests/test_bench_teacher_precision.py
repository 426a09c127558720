"""`sns bench teacher-precision`: what a bf16 teacher changes, end to end on a tiny teacher and run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from squeezespan import pretrain
from squeezespan.errors import SnsError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import teacher_precision  # noqa: E402


def tiny_teacher(path: Path, seed: int) -> Path:
    from squeezespan.gan import GAN_DEFAULTS
    from squeezespan.teachers.directory import build_networks, network_kwargs, save_teacher_dir

    gan_cfg = dict(GAN_DEFAULTS, resolution=16, channel_base=256, channel_max=16, z_dim=16, w_dim=16, mapping_layers=1)
    G_kwargs, D_kwargs = network_kwargs(gan_cfg, img_channels=1)
    torch.manual_seed(seed)
    G, D = build_networks(G_kwargs, D_kwargs)
    save_teacher_dir(path / "teacher", G, G, D, G_kwargs, D_kwargs, {})
    return path


def cell(row: str, seed: int, linear: float, knn: float) -> dict:
    return {"row": row, "track": "full", "lr": 0.1, "seed": seed, "linear_top1": linear, "knn_top1": knn}


def test_teacher_precision_bench_measures_images_taps_targets_and_reads_both_tables(tmp_path, tiny_pretrain_cfg):
    teacher = tiny_teacher(tmp_path / "gan", seed=0)
    run = tmp_path / "run"
    pretrain(
        tiny_pretrain_cfg(method="squeeze", teacher=str(teacher), ckpt_every=4, steps=4),
        run,
        progress=False,
        log=lambda *a: None,
    )
    (ckpt,) = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    fp32 = {"runs": [cell("sns", 0, 84.0, 80.0), cell("sns", 1, 85.0, 81.0), cell("squeeze", 0, 86.0, 82.0)]}
    bf16 = {"runs": [cell("sns", 0, 84.5, 80.5), cell("sns", 1, 84.0, 80.0)]}
    for name, table in (("fp32", fp32), ("bf16", bf16)):
        (tmp_path / f"{name}.json").write_text(json.dumps(table))
    out = tmp_path / "tp.json"
    args = ["--teacher", str(teacher), "--images", "16", "--out", str(out)]
    args += ["--fp32-table", str(tmp_path / "fp32.json"), "--bf16-table", str(tmp_path / "bf16.json")]
    assert teacher_precision.main([*args, "--checkpoint", str(ckpt)]) == 0
    res = json.loads(out.read_text())
    im = res["images"]
    # bf16 rounds the generator's arithmetic: the images move, by a little
    assert 0 < im["max_abs"] < 0.2 and 0 < im["uint8_pixels_changed"] < 1
    assert list(res["taps"]) == ["synthesis.b4", "synthesis.b8", "synthesis.b16"]
    assert all(0 < r < 0.1 for r in res["taps"].values())
    assert 0 < res["targets_init"]["rel_l2"] < 0.2 and res["targets_init"]["cosine_mean"] > 0.95
    (trained,) = res["targets_trained"]
    assert trained["method"] == "squeeze" and trained["step"] == 4 and 0 < trained["rel_l2"] < 0.2
    # the squared distance between the two targets is what separates the two invariance terms
    gap = abs(trained["invariance_bf16_targets"] - trained["invariance_fp32_targets"])
    assert trained["target_sq_distance"] > 0 and gap < 1e-2
    (acc,) = res["accuracy"]
    assert (acc["fp32_table"], acc["bf16_table"]) == ("fp32.json", "bf16.json")
    sns, squeeze = acc["rows"]["sns"], acc["rows"]["squeeze"]
    assert sns["linear_diff"] == {"mean": -0.25, "range": [-1.0, 0.5]}  # (84.25 - 84.5); pairs 84.5-84, ..., 84-85
    assert sns["knn_diff"]["mean"] == -0.25 and "linear_diff" not in squeeze  # squeeze: no bf16 cell
    md = out.with_suffix(".md").read_text()
    assert "| sns | 84.50 ± 0.71 / 80.50 ± 0.71 | 84.25 ± 0.35 / 80.25 ± 0.35 | 2, 2 | -0.25 [-1.00, +0.50] |" in md
    assert "| squeeze | 86.00 / 82.00 | not run | 1, 0 | - | - |" in md
    assert "fp32 teacher (`fp32.json`) against the teacher in bf16 (`bf16.json`)" in md
    # two fp32 tables (a same-code control and older cells): one comparison each
    args += ["--fp32-table", str(tmp_path / "bf16.json")]
    assert teacher_precision.main(args) == 0
    res = json.loads(out.read_text())
    assert [a["fp32_table"] for a in res["accuracy"]] == ["fp32.json", "bf16.json"]
    assert res["accuracy"][1]["rows"]["sns"]["linear_diff"]["mean"] == 0 and res["targets_trained"] == []
    # a checkpoint trained on another teacher's taps is refused by name
    other = tiny_teacher(tmp_path / "other", seed=1)
    with pytest.raises(SnsError, match="its run's teacher .* is not --teacher"):
        teacher_precision.main(["--teacher", str(other), "--checkpoint", str(ckpt), "--out", str(out)])
