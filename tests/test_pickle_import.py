"""Safe import of StyleGAN2-ADA pickles: official format admitted, tensors mapped by name, code never run."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from squeezespan.cli import main
from squeezespan.errors import SnsError
from squeezespan.teachers.load import load_teacher
from squeezespan.teachers.pickle_import import (
    MAX_NESTING,
    OFFICIAL_SOURCES,
    OfficialSource,
    PersistentRecord,
    load_stylegan2_pickle,
    read_stylegan2_pickle,
    teacher_from_stylegan2_pickle,
)
from squeezespan.teachers.stylegan2 import Discriminator
from squeezespan.teachers.stylegan2 import Generator as OurGenerator

# ---------------------------------------------------------------------------------------------------------
# Writing pickles in the official persistence format without NVIDIA's code: each nn.Module is reduced to
# torch_utils.persistence._reconstruct_persistent_obj(meta) with meta = {type, version, module_src,
# class_name, state}, state being the module's __dict__ (with _init_args/_init_kwargs); tensors use
# torch's own reduction (_rebuild_tensor_v2 on storages from torch.storage._load_from_bytes).


def _reconstruct_persistent_obj(meta):  # stands at torch_utils.persistence while pickling only
    raise AssertionError("the loader called the pickled reconstruct function")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """The shape of dnnlib.EasyDict: a dict subclass."""


EasyDict.__module__ = "dnnlib.util"

HARMLESS_SRC = "raise RuntimeError('module_src must never be executed')\n"
HARMLESS_SHA = hashlib.sha256(HARMLESS_SRC.encode()).hexdigest()
# A fork's networks.py: the official text with an edit (here: the stand-in's text, edited).
EDITED_SRC = HARMLESS_SRC.replace("never", "NEVER")


@pytest.fixture(autouse=True)
def stand_in_source_is_official(monkeypatch):
    """HARMLESS_SRC plays NVIDIA's networks.py (whose text the project does not ship): its fingerprint joins
    the official ones for the test. The real fingerprints are checked against the official code by
    bench/official_parity.py (test_parity_with_official_checkout)."""
    monkeypatch.setitem(
        OFFICIAL_SOURCES, HARMLESS_SHA, OfficialSource("tests", "HARMLESS_SRC", "the test's", "stylegan2-ada")
    )


@contextlib.contextmanager
def _fake_official_modules():
    """Make torch_utils.persistence and dnnlib.util resolvable while pickling, and gone afterwards."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    fakes = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }
    assert not set(fakes) & set(sys.modules)
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            del sys.modules[name]


class _PersistencePickler(pickle.Pickler):
    def __init__(self, f, protocol, module_src, class_names):
        super().__init__(f, protocol)
        self.module_src = module_src
        self.class_names = class_names

    def reducer_override(self, obj):
        if not isinstance(obj, nn.Module):
            return NotImplemented
        state = dict(obj.__dict__)
        state.setdefault("_init_args", ())
        state.setdefault("_init_kwargs", EasyDict())
        meta = dict(
            type="class",
            version=6,
            module_src=self.module_src,
            class_name=self.class_names.get(id(obj), type(obj).__name__),
            state=state,
        )
        return _reconstruct_persistent_obj, (meta,)


def official_style_pickle(
    snapshot: dict, protocol: int = 4, module_src: str = HARMLESS_SRC, class_names: dict | None = None
) -> bytes:
    buf = io.BytesIO()
    with _fake_official_modules():
        _PersistencePickler(buf, protocol, module_src, class_names or {}).dump(snapshot)
    return buf.getvalue()


def _write(tmp_path: Path, data: bytes, name: str = "net.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# Minimal fake classes with official names: enough to check the record tree and the name mapping.
class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.randn(out_features))
        self.weight_gain = np.float64(1 / np.sqrt(in_features))  # official layers hold numpy floats
        self._init_args = (in_features, out_features)
        self._init_kwargs = EasyDict()


class MappingNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0 = FullyConnectedLayer(4, 3)
        self.register_buffer("w_avg", torch.arange(3.0))
        self.register_buffer("scratch", torch.ones(2), persistent=False)


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping = MappingNetwork()
        self.z_dim = 4
        self._init_kwargs = EasyDict(z_dim=4, c_dim=0, mapping_kwargs=EasyDict(num_layers=1))


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_reads_persistence_format_into_records_with_official_names(tmp_path, protocol):
    G = Generator()
    snapshot = dict(G_ema=G, training_set_kwargs=EasyDict(resolution=32, use_labels=False))
    path = _write(tmp_path, official_style_pickle(snapshot, protocol=protocol))

    data = read_stylegan2_pickle(path)

    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert type(data["training_set_kwargs"]) is dict and data["training_set_kwargs"]["resolution"] == 32
    rec = data["G_ema"]
    assert isinstance(rec, PersistentRecord) and rec.class_name == "Generator"
    assert rec.modules["mapping"].class_name == "MappingNetwork"
    assert rec.modules["mapping"].modules["fc0"].init_args == (4, 3)
    assert rec.modules["mapping"].modules["fc0"].attributes["weight_gain"] == pytest.approx(0.5)
    assert rec.attributes["z_dim"] == 4
    sd = rec.state_dict()
    assert sorted(sd) == sorted(G.state_dict()) == ["mapping.fc0.bias", "mapping.fc0.weight", "mapping.w_avg"]
    for name, t in G.state_dict().items():
        assert torch.equal(sd[name], t)
    kw = rec.kwargs()
    assert type(kw["mapping_kwargs"]) is dict and kw["mapping_kwargs"]["num_layers"] == 1
    # Official defaults the file left implicit are spelled out (ours differ for channel_base).
    assert kw["synthesis_kwargs"]["channel_base"] == 32768 and kw["mapping_kwargs"]["lr_multiplier"] == 0.01


def test_positional_init_args_get_official_names(tmp_path):
    G = Generator()
    G._init_args = (4, 0, 8, 16, 3)
    G._init_kwargs = EasyDict(synthesis_kwargs=EasyDict(channel_base=512))
    kw = read_stylegan2_pickle(_write(tmp_path, official_style_pickle(dict(G=G))))["G"].kwargs()
    assert (kw["z_dim"], kw["c_dim"], kw["w_dim"], kw["img_resolution"], kw["img_channels"]) == (4, 0, 8, 16, 3)
    assert kw["synthesis_kwargs"]["channel_base"] == 512 and kw["synthesis_kwargs"]["channel_max"] == 512


def _tiny_official_kwargs():
    return dict(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs=EasyDict(num_layers=2),
        synthesis_kwargs=EasyDict(channel_base=64, channel_max=16, num_fp16_res=4, conv_clamp=256),
    )


def _tiny_official_d_kwargs():
    return dict(
        c_dim=0,
        img_resolution=8,
        img_channels=3,
        channel_base=64,
        channel_max=16,
        epilogue_kwargs=EasyDict(mbstd_group_size=2),
    )


def _as_official(module, kwargs):
    """Give one of our networks the constructor record the persistence decorator would have kept."""
    module._init_args = ()
    module._init_kwargs = EasyDict(kwargs)
    return module


def test_builds_our_generator_and_discriminator_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw)
    d_kw = _tiny_official_d_kwargs()
    D = _as_official(Discriminator(**d_kw), d_kw)
    with torch.no_grad():  # zero-initialised biases/noise strengths would hide a mix-up
        for p in list(G.parameters()) + list(D.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
    path = _write(tmp_path, official_style_pickle(dict(G=G, D=D, G_ema=G)))

    G2 = load_stylegan2_pickle(path)
    D2 = load_stylegan2_pickle(path, key="D")

    assert isinstance(G2, OurGenerator) and not G2.training
    assert not any(p.requires_grad for p in G2.parameters())
    z = torch.randn(4, 8)
    with torch.no_grad():
        img = G.eval()(z, None, noise_mode="const")
        assert torch.equal(G2(z, None, noise_mode="const"), img)
        assert torch.equal(D2(img, None), D.eval()(img, None))


def test_teacher_from_pickle_taps_the_synthesis_blocks(tmp_path):
    torch.manual_seed(0)
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw).eval()
    path = _write(tmp_path, official_style_pickle(dict(G_ema=G)))

    teacher = teacher_from_stylegan2_pickle(path)
    z = torch.randn(3, 8)
    images, feats = teacher.run(z)

    blocks = {}
    hooks = [
        getattr(G.synthesis, f"b{r}").register_forward_hook(lambda m, i, o, r=r: blocks.__setitem__(r, o[0]))
        for r in (4, 8)
    ]
    with torch.no_grad():
        img = G(z, None, noise_mode="const")
    for h in hooks:
        h.remove()
    assert [f.shape[-1] for f in feats] == [4, 8]
    assert torch.equal(feats[0], blocks[4]) and torch.equal(feats[1], blocks[8])
    assert torch.allclose(images, ((img + 1) / 2).clamp(0, 1))
    with pytest.raises(SnsError, match="needs a generator"):
        teacher_from_stylegan2_pickle(path, key="D")


def _payload(tmp_path, callable_, *args):
    class Payload:
        def __reduce__(self):
            return callable_, args

    return _write(tmp_path, pickle.dumps({"G_ema": Payload()}), "evil.pkl")


def test_refuses_os_system_and_never_runs_it(tmp_path):
    target = tmp_path / "pwned"
    path = _payload(tmp_path, os.system, f"touch {target}")
    with pytest.raises(SnsError, match="refusing.*system"):
        load_stylegan2_pickle(path)
    assert not target.exists()
    pickle.loads(path.read_bytes())  # control: the same bytes do run code under a plain unpickler
    assert target.exists()


def test_refuses_builtins_exec_and_eval(tmp_path):
    target = tmp_path / "pwned"
    for fn in (builtins.exec, builtins.eval):
        with pytest.raises(SnsError, match="refusing"):
            read_stylegan2_pickle(_payload(tmp_path, fn, f"open({str(target)!r}, 'w').close()"))
    assert not target.exists()


def test_embedded_module_source_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    src = f"open({str(target)!r}, 'w').close()\n"
    path = _write(tmp_path, official_style_pickle(dict(G_ema=Generator()), module_src=src))
    rec = read_stylegan2_pickle(path)["G_ema"]
    assert rec.class_name == "Generator" and len(rec.source_sha256) == 64
    assert not target.exists()
    exec(src, {})  # control: that source does create the file when executed
    assert target.exists()


def test_refuses_unknown_persistent_class(tmp_path):
    target = tmp_path / "pwned"
    G = Generator()
    src = f"open({str(target)!r}, 'w').close()\nclass EvilNet: pass\n"
    path = _write(tmp_path, official_style_pickle(dict(G_ema=G), module_src=src, class_names={id(G): "EvilNet"}))
    with pytest.raises(SnsError, match="refusing persistent class 'EvilNet'"):
        read_stylegan2_pickle(path)
    assert not target.exists()


def test_refuses_plain_torch_modules_and_other_classes(tmp_path):
    with pytest.raises(SnsError, match=r"torch\.nn\.modules\.linear\.Linear"):
        read_stylegan2_pickle(_write(tmp_path, pickle.dumps({"G_ema": nn.Linear(2, 2)})))
    with pytest.raises(SnsError, match=r"refusing.*collections\.Counter"):
        read_stylegan2_pickle(_write(tmp_path, pickle.dumps({"G_ema": __import__("collections").Counter()})))


def test_storage_bytes_are_loaded_weights_only(tmp_path):
    target = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {target}",)

    class EvilStorage:  # what a storage looks like in the file, but with code inside its bytes
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(Payload(), protocol=2),)

    with pytest.raises(SnsError, match="storage could not be read safely"):
        read_stylegan2_pickle(_write(tmp_path, pickle.dumps({"G_ema": EvilStorage()})))
    assert not target.exists()


def test_refuses_tensor_larger_than_its_storage(tmp_path):
    class Overrun:
        def __reduce__(self):
            storage = torch.zeros(4)._typed_storage()
            return torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, OrderedDict())

    with pytest.raises(SnsError, match="does not fit its storage"):
        read_stylegan2_pickle(_write(tmp_path, pickle.dumps({"x": Overrun()})))


def test_clear_errors_for_wrong_files_and_keys(tmp_path):
    with pytest.raises(SnsError, match="no such file"):
        load_stylegan2_pickle(tmp_path / "missing.pkl")
    zipped = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(1)}, zipped)
    with pytest.raises(SnsError, match="zip"):
        load_stylegan2_pickle(zipped)
    with pytest.raises(SnsError, match="not a binary pickle"):
        load_stylegan2_pickle(_write(tmp_path, b"hello", "text.pkl"))
    with pytest.raises(SnsError, match="could not be read"):
        load_stylegan2_pickle(_write(tmp_path, pickle.dumps({"a": 1})[:-3], "cut.pkl"))
    path = _write(tmp_path, official_style_pickle(dict(G_ema=Generator(), training_set_kwargs={})))
    with pytest.raises(SnsError, match=r"no 'D'.*G_ema"):
        load_stylegan2_pickle(path, key="D")
    with pytest.raises(SnsError, match="not a network"):
        load_stylegan2_pickle(path, key="training_set_kwargs")


def test_mismatched_tensors_are_reported_by_name(tmp_path):
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw)
    G._init_kwargs["mapping_kwargs"] = EasyDict(num_layers=3)  # kwargs that disagree with the tensors
    path = _write(tmp_path, official_style_pickle(dict(G_ema=G)))
    with pytest.raises(SnsError, match=r"missing \['mapping\.fc2\.bias'"):
        load_stylegan2_pickle(path)


@pytest.mark.slow
def test_parity_with_official_checkout(tmp_path):
    """Runs bench/official_parity.py when SNS_OFFICIAL_SG2ADA points at a NVlabs/stylegan2-ada-pytorch checkout."""
    src = os.environ.get("SNS_OFFICIAL_SG2ADA")
    if not src:
        pytest.skip("set SNS_OFFICIAL_SG2ADA to a stylegan2-ada-pytorch checkout to compare with the official code")
    script = Path(__file__).resolve().parents[1] / "bench" / "official_parity.py"
    out = tmp_path / "parity.json"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--official-src",
            src,
            "--configs",
            "tiny-cond-resnet",
            "cifar",
            "--n",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["configs"]
    assert all(r["worst"] <= 1e-4 for r in results.values())
    # a checkout of a release embeds a source whose fingerprint is in OFFICIAL_SOURCES
    assert all(r["embedded_source"] == ["NVlabs/stylegan2-ada-pytorch/training/networks.py"] for r in results.values())


# ---------------------------------------------------------------------------------------------------------
# Files that declare absurd sizes, nest absurdly deep, or embed a source that is no official release.


def _tiny_generator_pickle(tmp_path, name="g.pkl", module_src=HARMLESS_SRC, **kwarg_edits):
    torch.manual_seed(0)
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw)
    for key, value in kwarg_edits.items():
        *parents, leaf = key.split(".")
        d = G._init_kwargs
        for part in parents:
            d = d[part]
        d[leaf] = value
    return G, _write(tmp_path, official_style_pickle(dict(G_ema=G), module_src=module_src), name)


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"z_dim": 2**40}, r"z_dim = 1099511627776 is outside 0\.\.16384"),
        ({"synthesis_kwargs.channel_max": 2**30}, r"synthesis_kwargs\.channel_max = 1073741824 is outside"),
        ({"img_resolution": 2**20}, r"img_resolution = 1048576 is outside"),
        ({"mapping_kwargs.num_layers": 10**9}, r"mapping_kwargs\.num_layers = 1000000000 is outside"),
        ({"img_resolution": 24}, r"img_resolution = 24 is not a power of two"),
        ({"w_dim": "512"}, r"w_dim is a str, expected an integer"),
    ],
)
def test_absurd_declared_sizes_are_refused_naming_file_and_field(tmp_path, edit, field):
    _, path = _tiny_generator_pickle(tmp_path, **edit)
    with pytest.raises(SnsError, match=field) as e:
        load_stylegan2_pickle(path)
    assert str(e.value).startswith(f"{path}['G_ema']: ") and "\n" not in str(e.value)


def test_sizes_that_disagree_with_the_tensors_are_refused_before_allocating(tmp_path, monkeypatch):
    _, path = _tiny_generator_pickle(
        tmp_path, **{"synthesis_kwargs.channel_base": 1 << 20}
    )  # in bounds, not the file's
    built = []
    real_init = OurGenerator.__init__

    def init(self, *args, **kwargs):
        built.append(torch.empty(0).device)  # the default device while the network is built
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(OurGenerator, "__init__", init)
    with pytest.raises(SnsError, match=r"g\.pkl\['G_ema'\]: official Generator tensor .* has shape"):
        load_stylegan2_pickle(path)
    assert built == [torch.device("meta")]  # only the weightless skeleton was built


def _deep_pickle(tmp_path, n: int) -> Path:
    """The tiny official generator with mapping_kwargs.layer_features a list nested n deep (spliced opcodes:
    pickling such a list would itself hit the recursion limit)."""
    g_kw = _tiny_official_kwargs()
    G = _as_official(OurGenerator(**g_kw), g_kw)
    G._init_kwargs["mapping_kwargs"]["layer_features"] = "SENTINEL"
    data = official_style_pickle(dict(G_ema=G), protocol=2)  # protocol 2: no frames whose lengths would break
    needle = b"X\x08\x00\x00\x00SENTINEL"  # BINUNICODE of the placeholder
    assert data.count(needle) == 1
    return _write(tmp_path, data.replace(needle, b"(" * n + b"]" + b"l" * n), "deep.pkl")


def test_deep_nesting_is_a_one_line_refusal(tmp_path):
    path = _deep_pickle(tmp_path, 200_000)
    with pytest.raises(SnsError, match=r"deep\.pkl: .*Generator\._init_kwargs nests deeper than 32 levels"):
        load_stylegan2_pickle(path)
    assert "\n" not in str(pytest.raises(SnsError, read_stylegan2_pickle, path).value)
    rec = read_stylegan2_pickle(_deep_pickle(tmp_path, MAX_NESTING - 4))["G_ema"]  # just within: read as data
    assert rec.class_name == "Generator"


def test_deep_tuples_are_refused_while_unpickling(tmp_path):
    # a 200,000-deep tuple used as a dict key is hashed recursively in C: a plain unpickler segfaults on it
    n = 200_000
    path = _write(tmp_path, b"\x80\x02}" + b"(" * n + b")" + b"t" * n + b"K\x01s.", "tuples.pkl")
    with pytest.raises(SnsError, match=r"tuples\.pkl: .*tuples nest deeper than 32 levels"):
        read_stylegan2_pickle(path)
    # and a shared sub-list reached through many paths is walked in linear time, not 2**depth
    shared = [1]
    for _ in range(30):
        shared = [shared, shared]
    assert read_stylegan2_pickle(_write(tmp_path, pickle.dumps({"x": shared}), "dag.pkl"))["x"] is not None


def test_edited_source_is_refused_then_loaded_with_the_opt_in_and_a_warning(tmp_path, capsys):
    G, path = _tiny_generator_pickle(tmp_path, module_src=EDITED_SRC)
    edited_sha = hashlib.sha256(EDITED_SRC.encode()).hexdigest()
    for load in (lambda: load_stylegan2_pickle(path), lambda: load_teacher(f"stylegan2-pkl:{path}")):
        with pytest.raises(
            SnsError, match=f"source embedded for Generator .* sha256 {edited_sha}, which is no official"
        ):
            load()
    with pytest.raises(SnsError, match="unknown stylegan2-pkl option 'trust'"):
        load_teacher(f"stylegan2-pkl,trust:{path}")
    assert capsys.readouterr().err == ""

    teacher = load_teacher(f"stylegan2-pkl,allow-unknown-source:{path}")
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {path}: the network source embedded for Generator") and edited_sha in err
    assert "ignored, only its weights are used" in err and err.count("\n") == 1
    z = torch.randn(2, 8)
    with torch.no_grad():  # what loads is official StyleGAN2 with the file's weights
        assert torch.allclose(teacher.run(z)[0], ((G.eval()(z, None, noise_mode="const") + 1) / 2).clamp(0, 1))


def test_official_source_loads_silently(tmp_path, capsys):
    _, path = _tiny_generator_pickle(tmp_path)
    load_teacher(f"stylegan2-pkl:{path}")
    load_teacher(f"stylegan2-pkl,allow-unknown-source:{path}")  # the opt-in changes nothing for a release
    assert capsys.readouterr().err == ""


def test_stylegan3_source_fills_stylegan3_defaults(tmp_path, monkeypatch):
    # StyleGAN3's networks_stylegan2.py: same classes and format, but conv_clamp defaults to 256 there
    sg3 = "# stand-in for stylegan3 training/networks_stylegan2.py\n"
    monkeypatch.setitem(
        OFFICIAL_SOURCES, hashlib.sha256(sg3.encode()).hexdigest(), OfficialSource("t", "p", "-", "stylegan3")
    )
    kw = {k: v for k, v in _tiny_official_kwargs().items() if k != "synthesis_kwargs"}
    G = _as_official(OurGenerator(**kw, channel_base=64, channel_max=16), dict(kw, channel_base=64, channel_max=16))
    for src, clamp in ((sg3, 256), (HARMLESS_SRC, None)):
        rec = read_stylegan2_pickle(_write(tmp_path, official_style_pickle(dict(G_ema=G), module_src=src)))["G_ema"]
        assert rec.kwargs()["synthesis_kwargs"]["conv_clamp"] == clamp


def test_cli_one_line_errors_for_hostile_pickles(tmp_path, capsys):
    _, big = _tiny_generator_pickle(tmp_path, "big.pkl", z_dim=2**40)
    assert main(["pretrain", "--method", "sns", "--teacher", f"stylegan2-pkl:{big}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "z_dim" in err and "big.pkl" in err
