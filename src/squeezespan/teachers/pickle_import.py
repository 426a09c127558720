"""Safe import of NVIDIA StyleGAN2-ADA network pickles: a restricted unpickler that never runs their embedded code."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import SnsError
from . import stylegan2
from .teacher import Teacher

# Every class that NVIDIA's training/networks.py and training/augment.py decorate as persistent.
# A pickle naming any other class is refused: we rebuild networks from our own code, never theirs.
NETWORK_CLASSES = frozenset(
    {
        "FullyConnectedLayer",
        "Conv2dLayer",
        "MappingNetwork",
        "SynthesisLayer",
        "ToRGBLayer",
        "SynthesisBlock",
        "SynthesisNetwork",
        "Generator",
        "DiscriminatorBlock",
        "MinibatchStdLayer",
        "DiscriminatorEpilogue",
        "Discriminator",
    }
)
AUGMENT_CLASSES = frozenset({"AugmentPipe"})
KNOWN_CLASSES = NETWORK_CLASSES | AUGMENT_CLASSES

# Positional parameter names of the official constructors, so init_args can become kwargs.
_OFFICIAL_POSITIONAL = {
    "Generator": ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"),
    "Discriminator": (
        "c_dim",
        "img_resolution",
        "img_channels",
        "architecture",
        "channel_base",
        "channel_max",
        "num_fp16_res",
        "conv_clamp",
        "cmap_dim",
        "block_kwargs",
        "mapping_kwargs",
        "epilogue_kwargs",
    ),
}
# Official defaults the pickle may leave implicit; ours differ for some (e.g. channel_base), so spell them out.
_OFFICIAL_DEFAULTS = {
    "Generator": {
        "mapping_kwargs": {"num_layers": 8, "activation": "lrelu", "lr_multiplier": 0.01, "w_avg_beta": 0.995},
        "synthesis_kwargs": {
            "channel_base": 32768,
            "channel_max": 512,
            "architecture": "skip",
            "resample_filter": [1, 3, 3, 1],
            "conv_clamp": None,
        },
    },
    "Discriminator": {
        "architecture": "resnet",
        "channel_base": 32768,
        "channel_max": 512,
        "conv_clamp": None,
        "cmap_dim": None,
        "block_kwargs": {"activation": "lrelu", "resample_filter": [1, 3, 3, 1]},
        "mapping_kwargs": {"num_layers": 8, "activation": "lrelu", "lr_multiplier": 0.01},
        "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 1, "activation": "lrelu"},
    },
}
# StyleGAN3's networks_stylegan2.py pickles the same classes in the same format (its Generator takes the
# synthesis kwargs flat, which ours accepts) with other defaults: clamping at 256 unless told otherwise (its
# train.py leaves conv_clamp out unless --fp32) and a slower w_avg. Chosen by the fingerprint of the source.
_STYLEGAN3_DEFAULTS = {
    "Generator": {
        "mapping_kwargs": {**_OFFICIAL_DEFAULTS["Generator"]["mapping_kwargs"], "w_avg_beta": 0.998},
        "synthesis_kwargs": {**_OFFICIAL_DEFAULTS["Generator"]["synthesis_kwargs"], "conv_clamp": 256},
    },
    "Discriminator": {**_OFFICIAL_DEFAULTS["Discriminator"], "conv_clamp": 256},
}
_DEFAULTS = {"stylegan2-ada": _OFFICIAL_DEFAULTS, "stylegan3": _STYLEGAN3_DEFAULTS}


class OfficialSource(NamedTuple):
    """Where one fingerprint of an embedded network source comes from."""

    repo: str
    path: str
    commits: str  # the public commits whose file embeds exactly this text
    defaults: str  # key of _DEFAULTS: whose constructor defaults fill what a pickle leaves out


# sha256 of the module source torch_utils.persistence embeds for each persistent class: inspect.getsource of
# the whole module, i.e. the file read through linecache (UTF-8 BOM dropped, newlines made \n, a final \n
# added). Computed from every commit of each repository's main branch that changed the file (both have no
# tags; the file changed in one commit each, plus a BOM-only edit that leaves this text alone). Only hashes
# are kept here, never NVIDIA's code. A pickle whose networks carry any other source is a fork or an edit:
# we rebuild official StyleGAN2 from our own code, so its changes would be silently dropped.
OFFICIAL_SOURCES: dict[str, OfficialSource] = {
    "53b4e1ec457171d4e2c1454d48013765ab626141c35cdd383b020950effe11a5": OfficialSource(
        "NVlabs/stylegan2-ada-pytorch",
        "training/networks.py",
        "375a4360 (2021-01-30, first release) through d72cc7d0 (main): unchanged",
        "stylegan2-ada",
    ),
    "b6f14e8fa2a95de4d38218fef31380c6a70de770f585107e209ff83075c307ef": OfficialSource(
        "NVlabs/stylegan3",
        "training/networks_stylegan2.py",
        "8fb5177d (2021-10-07, first release) through c233a919 (main); 583f2bdd only removed the BOM",
        "stylegan3",
    ),
}
# How to load a pickle whose source is not in OFFICIAL_SOURCES anyway (named in the refusal).
ALLOW_UNKNOWN_SOURCE = "allow-unknown-source"

# Official kwargs nest at most 3 levels (G kwargs -> synthesis_kwargs -> resample_filter) and networks 6
# (Generator -> synthesis -> b8 -> conv0 -> affine -> weight); 32 is far above both and far below the
# interpreter's recursion limit (1000), which every recursive walk of the data (ours, repr, json) would hit.
MAX_NESTING = 32

# Sizes a pickle declares in its constructor kwargs, bounded before anything is built: a few bytes of a file
# must not ask for a terabyte tensor or a million-layer loop. Official StyleGAN2-ADA / StyleGAN3 configs use
# z/w 512, <= 1000 classes, channel_base <= 65536, channel_max <= 1024, <= 1024 px, <= 8 mapping layers and
# minibatch-std groups <= 32; the bounds leave forks 8-16x that. Within them, shapes that disagree with the
# file's own tensors are refused before any memory is spent (build_network builds on the meta device first).
_SIZE_BOUNDS = {
    "z_dim": (0, 16384),
    "w_dim": (1, 16384),
    "c_dim": (0, 65536),
    "embed_features": (0, 16384),
    "layer_features": (0, 16384),
    "cmap_dim": (0, 16384),
    "img_resolution": (4, 8192),
    "img_channels": (1, 64),
    "channel_base": (1, 1 << 20),
    "channel_max": (1, 8192),
    "num_layers": (0, 64),
    "num_fp16_res": (0, 16),
    "mbstd_group_size": (0, 4096),
    "mbstd_num_channels": (0, 64),
    "freeze_layers": (0, 64),
    "kernel_size": (1, 15),
}
_FILTER_TAPS_MAX = 16  # resample_filter: official [1, 3, 3, 1]
_NUMPY_DTYPES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"})


@dataclass
class PersistentRecord:
    """One persistent object of an official pickle, as data: what it was built from and what it holds.

    Stands where NVIDIA's code would have put a live instance of `class_name` (built by exec'ing
    the pickled module source, which we never do).
    """

    class_name: str
    init_args: tuple
    init_kwargs: dict
    parameters: dict = field(default_factory=dict)  # name -> Tensor | None
    buffers: dict = field(default_factory=dict)  # name -> Tensor | None
    modules: dict = field(default_factory=dict)  # name -> PersistentRecord | None
    attributes: dict = field(default_factory=dict)  # the rest of the instance __dict__ (plain data)
    non_persistent: frozenset = frozenset()
    source_sha256: str = ""  # of the embedded module source: compared with OFFICIAL_SOURCES
    depth: int = 1  # 1 + the depth of the deepest submodule record

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Tensors keyed the way torch.nn.Module.state_dict() of the official class names them."""
        out: dict[str, torch.Tensor] = {}
        for name, t in self.parameters.items():
            if t is not None:
                out[prefix + name] = t
        for name, t in self.buffers.items():
            if t is not None and name not in self.non_persistent:
                out[prefix + name] = t
        for name, sub in self.modules.items():
            if sub is not None:
                out.update(sub.state_dict(prefix + name + "."))
        return out

    def kwargs(self) -> dict:
        """Constructor kwargs with positional init_args named as in the official signature."""
        names = _OFFICIAL_POSITIONAL.get(self.class_name, ())
        if len(self.init_args) > len(names):
            raise SnsError(
                f"official {self.class_name} pickled with {len(self.init_args)} positional "
                f"arguments; expected at most {len(names)}: the file is not a StyleGAN2-ADA pickle"
            )
        kw = dict(zip(names, self.init_args))
        kw.update(self.init_kwargs)
        official = OFFICIAL_SOURCES.get(self.source_sha256)
        defaults = _DEFAULTS[official.defaults if official else "stylegan2-ada"]  # unknown: allowed by the user
        return _with_defaults(_plain(kw), defaults.get(self.class_name, {}))


class _EasyDict(dict):
    """Stand-in for dnnlib.EasyDict (a dict with attribute access); turned into a plain dict afterwards."""


def _plain(obj: Any) -> Any:
    """Deep copy of kwargs with every dict subclass (EasyDict) made a plain dict."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def _with_defaults(kwargs: dict, defaults: dict) -> dict:
    """kwargs with every official default it leaves out filled in, nested dicts included."""
    out = dict(kwargs)
    for key, value in defaults.items():
        if isinstance(value, dict):
            given = out.get(key) or {}
            if not isinstance(given, dict):
                raise _fail(f"{key} is a {type(given).__name__}, expected a dict")
            out[key] = _with_defaults(given, value)
        else:
            out.setdefault(key, value)
    return out


def _fail(what: str) -> SnsError:
    return SnsError(f"not a StyleGAN2-ADA network pickle: {what}")


def _nesting(obj: Any, limit: int = MAX_NESTING) -> int:
    """How deeply containers nest in ``obj`` (a scalar 0, [1] 1, {"a": [1]} 2), walked without recursion.

    A record counts as its stored depth. The walk stops once past ``limit`` (so a cycle ends too), and an object
    shared by many containers is walked again only when reached deeper: linear, not exponential, in its size.
    """
    deepest, seen, stack = 0, {}, [(obj, 0)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, PersistentRecord):
            deepest = max(deepest, d + o.depth)
            continue
        if isinstance(o, dict):
            children = [*o.keys(), *o.values()]
        elif isinstance(o, (list, tuple, set, frozenset)):
            children = o
        else:
            continue
        d += 1
        if d > limit:
            return d
        if seen.get(id(o), 0) >= d:
            continue
        seen[id(o)] = d
        deepest = max(deepest, d)
        stack.extend((c, d) for c in children)
    return deepest


def _check_nesting(value: Any, what: str) -> None:
    if _nesting(value) > MAX_NESTING:
        raise _fail(f"{what} nests deeper than {MAX_NESTING} levels (official networks: at most 6)")


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replaces torch_utils.persistence._reconstruct_persistent_obj: reads meta, never execs module_src."""
    if not isinstance(meta, dict):
        raise _fail("a persistent object carries no meta dict")
    missing = {"type", "class_name", "module_src", "state"} - set(meta)
    if missing:
        raise _fail(f"persistent meta lacks {sorted(missing)}")
    if meta["type"] != "class":
        raise _fail(f"persistent object of type {meta['type']!r}; only 'class' exists in the official format")
    name = meta["class_name"]
    if name not in KNOWN_CLASSES:
        raise SnsError(
            f"refusing persistent class {name!r}: only StyleGAN2-ADA classes "
            f"({', '.join(sorted(KNOWN_CLASSES))}) can be imported (StyleGAN3 and other "
            "networks are not supported)"
        )
    src = meta["module_src"]
    if not isinstance(src, str):
        raise _fail(f"module_src of {name} is not a string")
    state = meta["state"]
    if not isinstance(state, dict):
        raise _fail(f"state of {name} is not a dict")
    state = dict(state)
    sections = {}
    for key in ("_parameters", "_buffers", "_modules"):
        part = state.pop(key, {})
        if not isinstance(part, dict):
            raise _fail(f"{name}.{key} is not a dict")
        sections[key] = dict(part)
    for key, kind in (("_parameters", torch.Tensor), ("_buffers", torch.Tensor), ("_modules", PersistentRecord)):
        for sub, value in sections[key].items():
            if value is not None and not isinstance(value, kind):
                raise _fail(
                    f"{name}.{sub} is a {type(value).__name__}, expected {kind.__name__} "
                    "(a submodule that is not a StyleGAN2-ADA persistent class)"
                )
    init_args = state.pop("_init_args", ())
    init_kwargs = state.pop("_init_kwargs", {})
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise _fail(f"{name} has malformed _init_args/_init_kwargs")
    non_persistent = state.pop("_non_persistent_buffers_set", set())
    # torch.nn.Module internals (hook tables, flags) are rebuilt by our own classes: keep public attributes.
    attributes = {k: v for k, v in state.items() if not k.startswith("_")}
    _check_nesting(init_args, f"{name}._init_args")
    _check_nesting(init_kwargs, f"{name}._init_kwargs")
    _check_nesting(attributes, f"the attributes of {name}")
    depth = 1 + max((m.depth for m in sections["_modules"].values() if m is not None), default=0)
    if depth > MAX_NESTING:
        raise _fail(f"{name} holds submodules nested deeper than {MAX_NESTING} levels (official networks: 6)")
    return PersistentRecord(
        class_name=name,
        init_args=tuple(init_args),
        init_kwargs=dict(init_kwargs),
        parameters=sections["_parameters"],
        buffers=sections["_buffers"],
        modules=sections["_modules"],
        attributes=attributes,
        non_persistent=frozenset(non_persistent) if isinstance(non_persistent, (set, frozenset)) else frozenset(),
        source_sha256=hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest(),
        depth=depth,
    )


def _storage_from_bytes(data: Any):
    """Replaces torch.storage._load_from_bytes, which calls torch.load with full unpickling."""
    if not isinstance(data, (bytes, bytearray)):
        raise _fail("a tensor storage is not stored as bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own weights-only refusal or corrupt bytes
        raise _fail(
            f"a tensor storage could not be read safely ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _fail(f"a tensor storage decoded to {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Replaces torch._utils._rebuild_tensor_v2 with type checks; hooks are dropped."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _fail(f"a tensor is built on a {type(storage).__name__} instead of a typed storage")
    ints = (storage_offset,) + tuple(size) + tuple(stride)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise _fail("a tensor has a non-integer size, stride or offset")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or min(ints) < 0:
        raise _fail("a tensor has negative or mismatched sizes/strides")
    # torch would silently grow the storage to fit; a well-formed file never needs that.
    span = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if storage_offset + span > storage._size():
        raise _fail(f"a tensor of size {size} does not fit its storage of {storage._size()} elements")
    t = torch._utils._rebuild_tensor(storage, storage_offset, size, stride)
    if metadata:
        raise _fail("a tensor carries conj/neg metadata, which StyleGAN2-ADA weights never have")
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Replaces torch._utils._rebuild_parameter(_with_state); hooks and extra state are dropped."""
    if not isinstance(data, torch.Tensor):
        raise _fail(f"a parameter wraps a {type(data).__name__} instead of a tensor")
    return torch.nn.Parameter(data, requires_grad=False)


class _NumpyDType:
    """Stand-in for numpy.dtype(...) as pickled: the name plus the byte order set by BUILD."""

    def __init__(self, name, align=False, copy=False):
        if name not in _NUMPY_DTYPES:
            raise _fail(f"numpy dtype {name!r} is not a plain numeric type")
        self.name, self.byteorder = name, "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.byteorder = state[1]


def _numpy_scalar(dtype, data=None):
    """Replaces numpy.core.multiarray.scalar for numeric scalars (e.g. the official weight_gain floats)."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise _fail("a numpy scalar is not a plain number")
    order = "=" if dtype.byteorder == "|" else dtype.byteorder
    values = np.frombuffer(data, dtype=np.dtype(dtype.name).newbyteorder(order))
    if values.size != 1:
        raise _fail("a numpy scalar holds more than one value")
    return values[0].item()


def _latin1_bytes(text, encoding="latin1"):
    """Replaces _codecs.encode, which protocol-2 pickles use to spell bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _fail("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


# (module, name) in the file -> what we give the unpickler instead. Nothing here runs foreign code.
_ADMITTED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _NumpyDType,
}


def _depth_checked(load):
    """Wrap a tuple-building opcode so that tuples nest at most MAX_NESTING deep.

    Checked while unpickling, not after: a tuple used as a dict key or set member is hashed by the interpreter
    right away, recursively in C, and a deep enough one crashes the process (a segfault, no exception).
    """

    def load_checked(self):
        load(self)
        t = self.stack[-1]
        depth = 1 + max((self._tuple_depth.get(id(x), (x, 1))[1] for x in t if type(x) is tuple and x), default=0)
        if depth > MAX_NESTING:
            raise _fail(f"tuples nest deeper than {MAX_NESTING} levels")
        self._tuple_depth[id(t)] = (t, depth)  # the tuple is kept so that its id stays its own

    return load_checked


# The pure-Python unpickler (its dispatch table can be extended; a network pickle has a few thousand opcodes,
# its bulk being the storages' byte strings, so speed is the file read's).
class _RestrictedUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)
    for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
        dispatch[_op[0]] = _depth_checked(dispatch[_op[0]])
    del _op

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path
        self._tuple_depth: dict[int, tuple[tuple, int]] = {}

    def find_class(self, module: str, name: str):
        admitted = _ADMITTED.get((module, name))
        if admitted is not None:
            return admitted
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = " (a TensorFlow-era StyleGAN2 pickle: only the PyTorch StyleGAN2-ADA format is supported)"
        raise SnsError(
            f"refusing to load {self._path}: it asks for {module}.{name}, which a StyleGAN2-ADA "
            f"network pickle never needs and which could run code{hint}; use an official "
            "network-snapshot-*.pkl"
        )

    def persistent_load(self, pid):
        raise SnsError(
            f"refusing to load {self._path}: it uses persistent ids, which StyleGAN2-ADA "
            "network pickles do not (is it a torch.save file?)"
        )


def read_stylegan2_pickle(path: str | os.PathLike) -> dict:
    """Unpickle an official StyleGAN2-ADA pickle into plain data: persistent objects become PersistentRecords.

    Admits only the persistence reconstruction call, EasyDict, OrderedDict/set, numpy numeric scalars,
    and torch's tensor/parameter/storage rebuild functions, each replaced by a checked stand-in;
    storages are read by torch.load(weights_only=True). Anything else raises SnsError before it runs, and so
    does data nested deeper than MAX_NESTING. The embedded sources are only fingerprinted here (each record's
    source_sha256): embedded_sources compares them with the official releases.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SnsError(f"--teacher stylegan2-pkl:{path}: no such file; give the path of a StyleGAN2-ADA network pickle")
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise SnsError(
                f"{path} is a zip (torch.save) checkpoint, not a StyleGAN2-ADA network pickle "
                "(network-snapshot-*.pkl written by NVIDIA's training loop)"
            )
        if not head.startswith(b"\x80"):
            raise SnsError(f"{path} is not a binary pickle; expected a StyleGAN2-ADA network-snapshot-*.pkl")
        f.seek(0)
        try:
            data = _RestrictedUnpickler(f, path).load()
        except SnsError as e:
            raise e if path in str(e) else SnsError(f"{path}: {e}") from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            RuntimeError,
            MemoryError,
            OverflowError,
            UnicodeDecodeError,
            struct.error,
        ) as e:
            raise SnsError(
                f"{path} could not be read as a StyleGAN2-ADA network pickle ({type(e).__name__}: {str(e)[:200]})"
            ) from None
    if not isinstance(data, dict):
        raise SnsError(
            f"{path} holds a {type(data).__name__}; a StyleGAN2-ADA network pickle holds a dict with keys G, D, G_ema"
        )
    for key, value in data.items():
        if _nesting(value) > MAX_NESTING:
            raise SnsError(f"{path}: {str(key)[:80]!r} nests deeper than {MAX_NESTING} levels; not a network pickle")
    return {k: _plain(v) if isinstance(v, _EasyDict) else v for k, v in data.items()}


def embedded_sources(
    records: dict[str, PersistentRecord],
    path: str | os.PathLike,
    allow_unknown_source: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Compare the source each network's classes were pickled with against the official releases.

    Args:
        records: the networks used (e.g. {"G_ema": ...}); their submodules are included.
        path: the pickle, named in the messages.
        allow_unknown_source: load a source that matches no release (a fork, an edited networks.py) anyway,
            with a warning: we rebuild official StyleGAN2 from our code, so that source's changes are dropped.
        log: where the warning goes (default: stderr).

    Returns:
        One entry per distinct source, for the run's records: ``sha256``, ``classes``, and ``official``
        ("repo/path" of the release) or None for an unknown source that was allowed.
    """
    found: dict[str, list[str]] = {}
    queue = collections.deque(r for r in records.values() if r is not None)
    while queue:  # outermost first, so that the message names the Generator rather than a layer
        rec = queue.popleft()
        classes = found.setdefault(rec.source_sha256, [])
        if rec.class_name not in classes:
            classes.append(rec.class_name)
        queue.extend(m for m in rec.modules.values() if m is not None)
    entries = []
    for sha, classes in found.items():
        official = OFFICIAL_SOURCES.get(sha)
        entries.append(
            {"sha256": sha, "classes": classes, "official": f"{official.repo}/{official.path}" if official else None}
        )
    for e in entries:
        if e["official"] is not None:
            continue
        what = f"{e['classes'][0]}" + (f" (and {len(e['classes']) - 1} more classes)" if len(e["classes"]) > 1 else "")
        if not allow_unknown_source:
            raise SnsError(
                f"{os.fspath(path)}: the network source embedded for {what} has sha256 {e['sha256']}, which is no "
                "official StyleGAN2-ADA or StyleGAN3 release (a fork or an edited networks.py, whose changes "
                "squeezespan would silently drop); if you trust it, load it anyway with "
                f"stylegan2-pkl,{ALLOW_UNKNOWN_SOURCE}:PATH (sns convert: --{ALLOW_UNKNOWN_SOURCE})"
            )
        (log or _stderr)(
            f"warning: {os.fspath(path)}: the network source embedded for {what} (sha256 {e['sha256']}) is no "
            f"official release; loading it anyway ({ALLOW_UNKNOWN_SOURCE}) as official StyleGAN2-ADA: any change "
            "that source makes to the networks is ignored, only its weights are used"
        )
    return entries


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _check_sizes(kwargs: dict, where: str, prefix: str = "") -> None:
    """Refuse declared sizes outside _SIZE_BOUNDS, naming the field (kwargs nest at most MAX_NESTING deep)."""
    for key, value in kwargs.items():
        field_name = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_sizes(value, where, field_name + ".")
        elif key in _SIZE_BOUNDS and value is not None:
            lo, hi = _SIZE_BOUNDS[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise SnsError(f"{where}: {field_name} is a {type(value).__name__}, expected an integer in {lo}..{hi}")
            if not lo <= value <= hi:
                raise SnsError(
                    f"{where}: {field_name} = {value} is outside {lo}..{hi} (official networks stay far inside; "
                    "refusing a size that would allocate more than any real network)"
                )
            if key == "img_resolution" and value & (value - 1):
                raise SnsError(f"{where}: {field_name} = {value} is not a power of two")
        elif key == "resample_filter" and isinstance(value, (list, tuple)) and not 1 <= len(value) <= _FILTER_TAPS_MAX:
            raise SnsError(f"{where}: {field_name} has {len(value)} taps, expected 1..{_FILTER_TAPS_MAX} (official: 4)")


_BUILDABLE = {"Generator", "Discriminator"}


def build_network(record: PersistentRecord, where: str = "") -> torch.nn.Module:
    """Our Generator/Discriminator built from an official record's kwargs, with its tensors loaded.

    The declared sizes are bounded first, then the network is built on the meta device (no memory) and its
    tensor names and shapes compared with the record's, so a file cannot make us allocate more than it holds.
    """
    where = where or f"official {record.class_name}"
    if record.class_name not in _BUILDABLE:
        raise SnsError(f"cannot build a network from an official {record.class_name}; use key G_ema, G or D")
    cls = getattr(stylegan2, record.class_name)
    kwargs = record.kwargs()
    _check_sizes(kwargs, where)
    try:
        with torch.device("meta"):
            skeleton = cls(**kwargs)
        _check_record_tensors(skeleton, record, where)
        net = cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        raise SnsError(
            f"{where}: official {record.class_name} kwargs {kwargs} are not supported by squeezespan's "
            f"{record.class_name} ({type(e).__name__}: {e})"
        ) from None
    load_record_tensors(net, record)
    return net.eval().requires_grad_(False)


def _check_record_tensors(net: torch.nn.Module, record: PersistentRecord, where: str = "") -> None:
    """Every tensor name and shape of ``net`` must be the record's, and no more (``net`` may be on meta)."""
    where = f"{where}: " if where else ""
    theirs = record.state_dict()
    ours = net.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise SnsError(
            f"{where}official {record.class_name} tensors do not match ours: missing {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{'...' if len(unexpected) > 6 else ''}"
        )
    for name, t in theirs.items():
        if tuple(t.shape) != tuple(ours[name].shape):
            raise SnsError(
                f"{where}official {record.class_name} tensor {name} has shape {tuple(t.shape)}, "
                f"ours {tuple(ours[name].shape)}"
            )


def load_record_tensors(net: torch.nn.Module, record: PersistentRecord) -> None:
    """Copy a record's tensors into `net` by name; every name and shape must match exactly."""
    _check_record_tensors(net, record)
    net.load_state_dict({k: t.detach().clone() for k, t in record.state_dict().items()}, strict=True)


def load_stylegan2_pickle(
    path: str | os.PathLike,
    key: str = "G_ema",
    device: str | torch.device = "cpu",
    allow_unknown_source: bool = False,
    log: Callable[[str], None] | None = None,
) -> torch.nn.Module:
    """Load `key` ('G_ema', 'G' or 'D') of an official StyleGAN2-ADA pickle as our network, frozen, in eval mode.

    No code from the file runs: see read_stylegan2_pickle. The network's embedded source must be an official
    release unless ``allow_unknown_source`` (then a warning goes to ``log``): see embedded_sources.
    """
    data = read_stylegan2_pickle(path)
    if key not in data:
        raise SnsError(
            f"{os.fspath(path)} has no {key!r}; it holds {sorted(map(str, data))} (use G_ema for the teacher)"
        )
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise SnsError(f"{os.fspath(path)}[{key!r}] is a {type(record).__name__}, not a network")
    embedded_sources({key: record}, path, allow_unknown_source, log)
    return build_network(record, where=f"{os.fspath(path)}[{key!r}]").to(device)


def teacher_from_stylegan2_pickle(
    path: str | os.PathLike,
    key: str = "G_ema",
    device: str | torch.device = "cpu",
    allow_unknown_source: bool = False,
    **teacher_kwargs,
):
    """A Teacher (feature taps on the synthesis blocks) around the generator of an official pickle."""
    if key == "D":
        raise SnsError("a teacher needs a generator: use key G_ema (or G), not D")
    G = load_stylegan2_pickle(path, key=key, device=device, allow_unknown_source=allow_unknown_source)
    return Teacher(G, **teacher_kwargs)
