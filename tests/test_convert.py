"""`sns convert`: an official StyleGAN2-ADA pickle becomes a teacher directory whose networks give the same outputs."""

import hashlib
import json

import torch
from test_pickle_import import (
    EDITED_SRC,
    HARMLESS_SHA,
    EasyDict,
    _as_official,
    _tiny_official_d_kwargs,
    _tiny_official_kwargs,
    _write,
    official_style_pickle,
    stand_in_source_is_official,  # noqa: F401 (autouse fixture: the tests' stand-in source counts as official)
)

from squeezespan.cli import main
from squeezespan.teachers.directory import TEACHER_FORMAT, load_teacher_dir
from squeezespan.teachers.load import load_teacher
from squeezespan.teachers.pickle_import import load_stylegan2_pickle
from squeezespan.teachers.stylegan2 import Discriminator
from squeezespan.teachers.stylegan2 import Generator as OurGenerator


def _official_snapshot(with_d: bool = True) -> dict:
    torch.manual_seed(0)
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw)
    G_ema = _as_official(OurGenerator(**g_kw), g_kw)
    d_kw = _tiny_official_d_kwargs()
    D = _as_official(Discriminator(**d_kw), d_kw)
    with torch.no_grad():  # zero-initialised biases/noise strengths would hide a mix-up
        for p in [*G.parameters(), *G_ema.parameters(), *D.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
    snap = dict(G=G, G_ema=G_ema, training_set_kwargs=EasyDict(resolution=8, use_labels=False))
    if with_d:
        snap["D"] = D
    return snap


def test_convert_writes_a_teacher_dir_with_the_pickles_outputs(tmp_path, capsys):
    pkl = _write(tmp_path, official_style_pickle(_official_snapshot()))
    out = tmp_path / "teacher"
    assert main(["convert", str(pkl), str(out)]) == 0
    assert "--teacher" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "D.safetensors",
        "G.safetensors",
        "G_ema.safetensors",
        "teacher.json",
    ]
    meta = json.loads((out / "teacher.json").read_text())
    assert (
        meta["format"] == TEACHER_FORMAT
        and meta["source"] == "stylegan2-ada-pickle"
        and len(meta["pickle_sha256"]) == 64
    )
    assert meta["training_set_kwargs"]["resolution"] == 8
    assert [e["official"] for e in meta["embedded_source"]] == ["tests/HARMLESS_SRC"]
    assert meta["embedded_source"][0]["sha256"] == HARMLESS_SHA
    assert {"Generator", "Discriminator"} <= set(meta["embedded_source"][0]["classes"])

    G_ema, D, _ = load_teacher_dir(out)
    G, _, _ = load_teacher_dir(out, generator="G")
    z = torch.randn(4, 8)
    with torch.no_grad():
        img = load_stylegan2_pickle(pkl)(z, None, noise_mode="const")
        assert torch.equal(G_ema(z, None, noise_mode="const"), img)
        assert torch.equal(
            G(z, None, noise_mode="const"), load_stylegan2_pickle(pkl, key="G")(z, None, noise_mode="const")
        )
        assert not torch.equal(G(z, None, noise_mode="const"), img)  # G and G_ema kept apart
        assert torch.equal(D(img, None), load_stylegan2_pickle(pkl, key="D")(img, None))
    # later runs take the directory as --teacher: no pickle involved
    images, feats = load_teacher(str(out)).run(z)
    images_pkl, feats_pkl = load_teacher(f"stylegan2-pkl:{pkl}").run(z)
    assert torch.equal(images, images_pkl) and all(torch.equal(a, b) for a, b in zip(feats, feats_pkl))


def test_convert_one_line_errors(tmp_path, capsys):
    def err(*argv):
        assert main(["convert", *map(str, argv)]) == 2
        text = capsys.readouterr().err
        assert text.startswith("error: ") and text.count("\n") == 1
        return text

    assert "no such file" in err(tmp_path / "missing.pkl", tmp_path / "a")
    damaged = _write(tmp_path, official_style_pickle(_official_snapshot())[:-200], "cut.pkl")
    assert "could not be read" in err(damaged, tmp_path / "b")
    assert "not a binary pickle" in err(_write(tmp_path, b"hello", "text.pkl"), tmp_path / "c")
    no_d = _write(tmp_path, official_style_pickle(_official_snapshot(with_d=False)), "no_d.pkl")
    assert "no 'D'" in err(no_d, tmp_path / "d")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    pkl = _write(tmp_path, official_style_pickle(_official_snapshot()))
    assert "not empty" in err(pkl, busy) and "--force" in err(pkl, busy)
    assert main(["convert", str(pkl), str(busy), "--force"]) == 0
    assert (busy / "teacher.json").exists()


def test_convert_refuses_an_edited_source_unless_allowed_and_records_it(tmp_path, capsys):
    pkl = _write(tmp_path, official_style_pickle(_official_snapshot(), module_src=EDITED_SRC))
    edited_sha = hashlib.sha256(EDITED_SRC.encode()).hexdigest()
    assert main(["convert", str(pkl), str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "embedded for Generator (and " in err and f"has sha256 {edited_sha}" in err
    assert "--allow-unknown-source" in err
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "allowed"
    assert main(["convert", str(pkl), str(out), "--allow-unknown-source"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and edited_sha in err and err.count("\n") == 1
    meta = json.loads((out / "teacher.json").read_text())
    assert [(e["sha256"], e["official"]) for e in meta["embedded_source"]] == [(edited_sha, None)]


def test_convert_refuses_absurd_sizes_in_one_line(tmp_path, capsys):
    snap = _official_snapshot()
    snap["D"]._init_kwargs["channel_max"] = 1 << 40
    pkl = _write(tmp_path, official_style_pickle(snap))
    assert main(["convert", str(pkl), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {pkl}['D']: channel_max = {1 << 40} is outside 1..8192 " + (
        "(official networks stay far inside; refusing a size that would allocate more than any real network)\n"
    )
