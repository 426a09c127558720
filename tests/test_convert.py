"""`sns convert`: an official StyleGAN2-ADA pickle becomes a teacher directory whose networks give the same outputs."""

import json

import torch
from test_pickle_import import (
    EasyDict,
    _as_official,
    _tiny_official_d_kwargs,
    _tiny_official_kwargs,
    _write,
    official_style_pickle,
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
