"""`sns bench throughput --paper-only`: the paper-size section runs end to end (here on a tiny teacher and student,
a couple of steps), its JSON and Markdown have their shape, and the targets block is computed from the measured
rows and builds."""

import copy
import json

import pytest
import torch

from squeezespan import bench as sns_bench
from squeezespan.errors import SnsError

sns_bench.load("throughput")  # puts the source checkout on sys.path: bench imports as a package
from bench.throughput import cli as throughput_cli  # noqa: E402
from bench.throughput import paper  # noqa: E402

TINY = ["--paper-only", "--paper-tiny", "--paper-batches", "8,16", "--paper-steps", "2", "--paper-bank-images", "16"]


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "throughput-paper.json"
    # the teacher_compile row and build run their code path without inductor's minutes (tests/test_teacher_compile.py
    # checks the compiled teacher itself)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "compile", lambda fn, **kw: fn)
        assert throughput_cli.main([*TINY, "--paper-threads", "1", "--paper-out", str(out)]) == 0
    return json.loads(out.read_text()), out


def test_the_paper_section_writes_its_rows_builds_and_targets(tiny_result):
    res, out = tiny_result
    assert res["benchmark"] == "throughput-paper" and res["tiny"] is True and res["threads"] == 1
    assert torch.get_num_threads() == 1  # the section's thread count is put back
    assert {"platform", "cpu", "cpus", "torch", "bf16_native"} <= set(res["machine"])
    assert res["uptime_before"] and res["uptime_after"] and len(res["loadavg_after"]) == 3
    assert res["peak"]["bf16"] > 0 and res["peak"]["fp32"] > 0
    assert res["teacher"]["flops_per_image"] > 0 and res["student"]["in_channels"] == 3
    assert res["student"]["flops"]["train"] > res["student"]["flops"]["forward"] > 0
    rows = [(r["batch"], r["row"]) for r in res["rows"]]
    assert rows == [(b, key) for b in (8, 16) for key in ("live-fp32", "live-bf16", "live-bf16-compile", "bank")]
    for r in res["rows"]:
        assert r["syn"] == r["batch"] // 2 and r["student_passes_per_step"] == r["syn"] + 2 * (r["batch"] - r["syn"])
        assert r["steps_timed"] == 2 and r["step_s_median"] >= r["student_s_median"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["step_s_median"], rel=0.01)
        assert r["vs_reference"] == pytest.approx(r["images_per_s"] / paper.REFERENCE["images_per_s"], abs=0.01)
        assert 0 <= r["teacher_share"] < 1 and r["student_fraction_of_flop_bound"] > 0
    live = {r["row"]: r for r in res["rows"] if r["batch"] == 8}
    assert live["live-fp32"]["teacher_precision"] == "fp32" and live["live-fp32"]["student_precision"] == "fp32"
    assert live["live-bf16-compile"]["teacher_compile"] is True and live["bank"]["mode"] == "bank"
    assert live["live-bf16"]["student_channels_last"] is True and live["live-bf16"]["student_precision"] == "bf16"
    builds = [(b["teacher_precision"], b["teacher_compile"]) for b in res["builds"]]
    assert builds == [("fp32", False), ("bf16", False), ("bf16", True)]
    for b in res["builds"]:
        assert b["images_timed"] == 16 and b["s_for_50k"] == pytest.approx(50_000 * b["s_per_image"], abs=1)
    assert [t["target"] for t in res["targets"]] == ["live", "bank_build", "bank_step", "student_fraction"]
    assert all((t["why"] is None) == t["met"] for t in res["targets"])
    md = out.with_suffix(".md").read_text()
    assert md == throughput_cli.render_markdown(res)  # the committed table re-renders from its JSON
    assert md.startswith("# Training-step throughput with the paper-size teacher\n")
    assert "Tiny smoke-test setting" in md and "## Targets (issue 28" in md and "4.03 s per step" in md
    assert md.count("\n| 8 | ") == 4 and md.count("\n| 16 | ") == 4


def test_the_targets_are_computed_from_the_measured_numbers(tiny_result):
    res, _ = tiny_result
    targets = {t["target"]: t for t in paper.compute_targets(res)}
    assert targets == {t["target"]: t for t in res["targets"]}
    at8 = [r for r in res["rows"] if r["batch"] == 8]  # no B = 32 here: the reference batch is the smallest
    assert targets["live"]["measured"] == max(r["images_per_s"] for r in at8 if r["mode"] == "live")
    assert targets["bank_build"]["measured"] == min(b["s_for_50k"] for b in res["builds"])
    assert targets["bank_step"]["measured"] == next(r["images_per_s"] for r in at8 if r["mode"] == "bank")
    bank16 = next(r for r in res["rows"] if r["batch"] == 16 and r["mode"] == "bank")
    assert targets["student_fraction"]["measured"] == bank16["student_fraction_of_flop_bound"]

    changed = copy.deepcopy(res)
    for r in changed["rows"]:
        r["images_per_s"] = 1000.0 if r["row"] == "live-bf16" else 1.0
    for b in changed["builds"]:
        b["s_for_50k"], b["s_per_image"] = 7200.0, 0.144
    changed["builds"][1]["s_for_50k"] = 1800.0
    t = {x["target"]: x for x in paper.compute_targets(changed)}
    assert t["live"]["met"] and t["live"]["measured"] == 1000.0 and t["live"]["from"] == "live-bf16"
    assert t["live"]["why"] is None and t["live"]["ratio"] == pytest.approx(1000 / 16, rel=1e-3)
    assert t["bank_build"]["met"] and t["bank_build"]["measured"] == 1800.0 and t["bank_build"]["ratio"] == 2.0
    assert not t["bank_step"]["met"] and t["bank_step"]["ratio"] == pytest.approx(1 / 80, abs=1e-3)
    assert "student passes of" in t["bank_step"]["why"] and "images/s at the bf16 matmul peak" in t["bank_step"]["why"]
    missed = paper._fmt_target(t["bank_step"])
    assert "**missed** (1% of the target, 80.0x short)" in missed
    changed["builds"][1]["s_for_50k"] = 7200.0
    t = {x["target"]: x for x in paper.compute_targets(changed)}
    assert not t["bank_build"]["met"] and "GFLOP per image bound a 50k build to" in t["bank_build"]["why"]
    assert "**missed** (2.0x the target time)" in paper._fmt_target(t["bank_build"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--paper-batches", "7"], "--paper-batches 7: each batch must be even and >= 8"),
        (["--paper-batches", "a,b"], "--paper-batches a,b: expected batch sizes like 32,128"),
        (["--paper-steps", "0"], "--paper-steps 0: must be >= 1"),
        (["--no-paper"], "--paper-only runs only the paper-size section: drop --no-paper / --bank-only"),
    ],
)
def test_bad_paper_flags_are_refused_before_measuring(args, message, tmp_path):
    with pytest.raises(SnsError, match=f"^{message}"):
        throughput_cli.main(["--paper-only", *args, "--paper-out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
