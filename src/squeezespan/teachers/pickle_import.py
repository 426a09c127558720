"""Safe import of NVIDIA StyleGAN2-ADA network pickles: a restricted unpickler that never runs their embedded code."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

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
    source_sha256: str = ""  # of the embedded module source, for provenance

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
        return _with_defaults(_plain(kw), _OFFICIAL_DEFAULTS.get(self.class_name, {}))


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


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

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
    storages are read by torch.load(weights_only=True). Anything else raises SnsError before it runs.
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
        except SnsError:
            raise
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
            UnicodeDecodeError,
        ) as e:
            raise SnsError(
                f"{path} could not be read as a StyleGAN2-ADA network pickle ({type(e).__name__}: {str(e)[:200]})"
            ) from None
    if not isinstance(data, dict):
        raise SnsError(
            f"{path} holds a {type(data).__name__}; a StyleGAN2-ADA network pickle holds a dict with keys G, D, G_ema"
        )
    return {k: _plain(v) if isinstance(v, _EasyDict) else v for k, v in data.items()}


_BUILDABLE = {"Generator", "Discriminator"}


def build_network(record: PersistentRecord) -> torch.nn.Module:
    """Our Generator/Discriminator built from an official record's kwargs, with its tensors loaded."""
    if record.class_name not in _BUILDABLE:
        raise SnsError(f"cannot build a network from an official {record.class_name}; use key G_ema, G or D")
    cls = getattr(stylegan2, record.class_name)
    kwargs = record.kwargs()
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        raise SnsError(
            f"official {record.class_name} kwargs {kwargs} are not supported by squeezespan's "
            f"{record.class_name} ({type(e).__name__}: {e})"
        ) from None
    load_record_tensors(net, record)
    return net.eval().requires_grad_(False)


def load_record_tensors(net: torch.nn.Module, record: PersistentRecord) -> None:
    """Copy a record's tensors into `net` by name; every name and shape must match exactly."""
    theirs = record.state_dict()
    ours = net.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise SnsError(
            f"official {record.class_name} tensors do not match ours: missing {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{'...' if len(unexpected) > 6 else ''}"
        )
    for name, t in theirs.items():
        if tuple(t.shape) != tuple(ours[name].shape):
            raise SnsError(
                f"official {record.class_name} tensor {name} has shape {tuple(t.shape)}, ours {tuple(ours[name].shape)}"
            )
    net.load_state_dict({k: t.detach().clone() for k, t in theirs.items()}, strict=True)


def load_stylegan2_pickle(
    path: str | os.PathLike, key: str = "G_ema", device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load `key` ('G_ema', 'G' or 'D') of an official StyleGAN2-ADA pickle as our network, frozen, in eval mode.

    No code from the file runs: see read_stylegan2_pickle.
    """
    data = read_stylegan2_pickle(path)
    if key not in data:
        raise SnsError(
            f"{os.fspath(path)} has no {key!r}; it holds {sorted(map(str, data))} (use G_ema for the teacher)"
        )
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise SnsError(f"{os.fspath(path)}[{key!r}] is a {type(record).__name__}, not a network")
    return build_network(record).to(device)


def teacher_from_stylegan2_pickle(
    path: str | os.PathLike, key: str = "G_ema", device: str | torch.device = "cpu", **teacher_kwargs
):
    """A Teacher (feature taps on the synthesis blocks) around the generator of an official pickle."""
    if key == "D":
        raise SnsError("a teacher needs a generator: use key G_ema (or G), not D")
    return Teacher(load_stylegan2_pickle(path, key=key, device=device), **teacher_kwargs)
