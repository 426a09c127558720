"""Exported student backbones: a safetensors file plus a JSON of metadata, and loaders (ours and torchvision's).

Any student exports: a built-in ResNet, a ``timm:NAME`` model or a ``package.module:factory`` network
(models/student.py); the JSON records ``arch`` and ``arch_kwargs``, from which ``load_backbone`` rebuilds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .errors import SnsError
from .files import atomic_write_bytes, atomic_write_text, safetensors_bytes
from .models import ARCHS, ExternalStudent, ResNet, build_student

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "squeezespan-backbone/1"
# The key under which the JSON document is also embedded in the safetensors header, so the weights
# file alone still says what it is if the JSON gets lost.
EMBEDDED_KEY = "squeezespan"
ARCH_KEYS = ("arch", "variant", "width", "in_channels", "feature_dim")  # variant, width: null for non-ResNets
INPUT_NOTE = "float images in [0, 1] of shape (N, in_channels, H, W); load_backbone's module normalises with mean/std"
TORCHVISION_NOTE = (
    "state_dict keys are torchvision.models.<arch>'s without fc. Width 1.0 only: build "
    "torchvision.models.<arch>(weights=None); set fc = nn.Identity(); for variant 'cifar' set "
    "conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) and maxpool = nn.Identity(); for variant "
    "'imagenet' with in_channels != 3 set conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False); then "
    "load_state_dict(strict=True) and feed it images normalised with mean/std. "
    "squeezespan.export.torchvision_resnet(path) does exactly this."
)
TIMM_NOTE = (
    "state_dict keys are timm's: timm.create_model(<arch without 'timm:'>, num_classes=0, in_chans=<in_channels>, "
    "**arch_kwargs).load_state_dict(strict=True), then feed it images normalised with mean/std; "
    "squeezespan.load_backbone(path) does exactly this."
)
FACTORY_NOTE = (
    "state_dict keys are those of <arch>'s factory(in_channels=<in_channels>, **arch_kwargs); "
    "squeezespan.load_backbone(path) imports the factory, builds it and loads them strictly."
)


def _version() -> str:
    try:
        return version("squeezespan")
    except Exception:  # not installed as a distribution (e.g. a source checkout on sys.path)
        return "unknown"


def export_paths(path: PathLike) -> tuple[Path, Path]:
    """(``<stem>.safetensors``, ``<stem>.json``) for a stem, either file, or a directory holding one export."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise SnsError(
                f"{p} is a directory with {len(found)} .safetensors files: pass the path of one exported backbone"
            )
        p = found[0]
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _unwrap(student: nn.Module) -> ResNet | ExternalStudent:
    # DDP keeps the model in .module, torch.compile in ._orig_mod, a loaded Backbone in .student.
    for _ in range(4):
        if isinstance(student, (ResNet, ExternalStudent)):
            return student
        inner = next((getattr(student, a) for a in ("module", "_orig_mod", "student") if hasattr(student, a)), None)
        if not isinstance(inner, nn.Module):
            break
        student = inner
    raise SnsError(
        f"export_backbone expects a squeezespan student (models.build_student), got {type(student).__name__}"
    )


def _channel_stats(name: str, values: Any, channels: int) -> list[float]:
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise SnsError(f"export {name} = {values!r} is invalid: expected {channels} numbers, one per channel") from None
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise SnsError(f"export {name} has {len(values)} values but the student takes {channels} channels")
    if name == "std" and any(v <= 0 for v in values):
        raise SnsError(f"export std = {values} is invalid: every entry must be > 0")
    return values


def export_backbone(student: nn.Module, path: PathLike, meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write the student's weights to ``<stem>.safetensors`` and its metadata to ``<stem>.json``.

    ``meta`` needs ``mean`` and ``std`` (per channel, [0, 1] units) and should give ``resolution``,
    ``method`` and ``dataset``; any other JSON-serialisable entries (epoch, accuracy, ...) are kept.
    The architecture entries come from the student itself. Returns the two paths written.
    """
    net = _unwrap(student)
    facts = {k: getattr(net, k) for k in ARCH_KEYS}
    facts["arch_kwargs"] = dict(getattr(net, "arch_kwargs", {}))  # the resolved ones (timm: img_size included)
    for k in facts:
        if k in meta and meta[k] != facts[k]:
            raise SnsError(f"export meta says {k}={meta[k]!r} but the student has {k}={facts[k]!r}")
    for k in ("mean", "std"):
        if k not in meta:
            raise SnsError(f"export meta lacks {k!r}: give the per-channel normalisation the student was trained with")
    resolution = meta.get("resolution")
    if resolution is not None and (not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1):
        raise SnsError(f"export resolution = {resolution!r} is invalid: expected a positive integer or None")

    doc: dict[str, Any] = {"format": FORMAT, **facts}
    doc.update(
        resolution=resolution,
        mean=_channel_stats("mean", meta["mean"], net.in_channels),
        std=_channel_stats("std", meta["std"], net.in_channels),
        method=meta.get("method"),
        dataset=meta.get("dataset"),
    )
    doc.update({k: v for k, v in meta.items() if k not in doc})
    st_path, json_path = export_paths(path)
    doc.update(squeezespan_version=_version(), weights=st_path.name, input=INPUT_NOTE)
    if isinstance(net, ResNet):
        doc.update(torchvision_compat=TORCHVISION_NOTE)
    else:
        doc.pop("torchvision_compat", None)
        doc.update(rebuild=TIMM_NOTE if net.arch.startswith("timm:") else FACTORY_NOTE)
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SnsError(
            f"export meta is not JSON-serialisable ({e}): pass plain numbers, strings, lists and dicts"
        ) from None
    st_path.parent.mkdir(parents=True, exist_ok=True)
    # Floats stored as float32 whatever the training precision; clone so no two entries share storage.
    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).to("cpu").contiguous().clone()
        for k, v in _weights_module(net).state_dict().items()
    }
    check_finite(tensors, f"export to {st_path}")
    # Atomic writes, weights first: a crash never leaves a half-written export, and a JSON beside the weights
    # means both are complete.
    atomic_write_bytes(st_path, safetensors_bytes(tensors, metadata={"format": "pt", EMBEDDED_KEY: text}))
    atomic_write_text(json_path, text + "\n")
    return st_path, json_path


def _weights_module(net: nn.Module) -> nn.Module:
    """The module whose state_dict an export holds: a timm or factory network without squeezespan's wrapper."""
    return net.net if isinstance(net, ExternalStudent) else net


def read_meta(path: PathLike) -> dict[str, Any]:
    """The metadata of an export: its JSON, or the copy embedded in the safetensors file if the JSON is gone."""
    st_path, json_path = export_paths(path)
    if json_path.exists():
        try:
            doc = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SnsError(f"{json_path} is not valid JSON ({e}): re-export the backbone") from None
    elif st_path.exists():
        embedded = _safetensors_metadata(st_path).get(EMBEDDED_KEY)
        if embedded is None:
            raise SnsError(
                f"{json_path} is missing and {st_path} carries no squeezespan metadata: "
                "keep the .json next to the .safetensors (both are written by export_backbone)"
            )
        doc = json.loads(embedded)
    else:
        raise SnsError(f"no exported backbone at {path}: expected {st_path} and {json_path}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SnsError(f"{json_path} is not a squeezespan backbone export (format {found!r}, expected {FORMAT!r})")
    missing = [k for k in (*ARCH_KEYS, "mean", "std") if k not in doc]
    if missing:
        raise SnsError(f"{json_path} lacks {', '.join(missing)}: re-export the backbone")
    return doc


def _safetensors_metadata(st_path: Path) -> dict[str, str]:
    try:
        with safe_open(str(st_path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise SnsError(f"{st_path} is not a readable safetensors file ({e})") from None


def _read_weights(path: PathLike) -> dict[str, torch.Tensor]:
    st_path, json_path = export_paths(path)
    if not st_path.exists():
        raise SnsError(f"{st_path} is missing: the weights of {json_path} must sit next to it with the same stem")
    try:
        tensors = load_file(str(st_path), device="cpu")
    except Exception as e:
        raise SnsError(f"{st_path} is not a readable safetensors file ({e})") from None
    check_finite(tensors, str(st_path))
    return tensors


def check_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """One-line SnsError naming the first floating tensor holding NaN or Inf: such weights evaluate at chance
    level or crash a probe, so they are never exported nor loaded."""
    for k, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise SnsError(
                f"{where}: weight {k} holds NaN or infinite values (the run diverged or the file is damaged); "
                "export an earlier checkpoint instead"
            )


def _check_fits(model: nn.Module, tensors: Mapping[str, torch.Tensor], st_path: Path, meta: Mapping[str, Any]) -> None:
    """One-line SnsError if the tensors do not fit the model, instead of torch's multi-line load error."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(want.keys() - got.keys())
    unexpected = sorted(got.keys() - want.keys())
    wrong = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {got[k]}, model {want[k]})")
    if meta.get("variant") is None:  # timm or factory: its kwargs decide the shapes
        what = f"{meta['arch']} (arch_kwargs {meta.get('arch_kwargs') or {}}, {meta['in_channels']} channels)"
    else:
        what = f"{meta['arch']} ({meta['variant']}, width {meta['width']}, {meta['in_channels']} channels)"
    raise SnsError(
        f"{st_path} does not fit a {what} as its metadata says: {'; '.join(problems)}; "
        "it is a checkpoint of another architecture, the .json belongs to another export, or the model's "
        "definition changed since (another timm version or factory)"
    )


class Backbone(nn.Module):
    """A loaded export: float images in [0, 1] (N, C, H, W) -> features (N, feature_dim), normalisation inside."""

    def __init__(self, student: nn.Module, mean: list[float], std: list[float], meta: Mapping[str, Any]):
        super().__init__()
        self.student = student
        # Not persistent: the file format keeps them in the metadata, and the state_dict stays the student's.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.meta = dict(meta)
        self.in_channels = student.in_channels
        self.feature_dim = student.feature_dim
        self.resolution = meta.get("resolution")
        # a network built for one image size (a timm ViT) gets other sizes resized to it, as in training
        self.fixed_size = getattr(student, "fixed_size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SnsError(
                f"backbone expects images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
                + (": it was trained on grey images; pass one channel" if self.in_channels == 1 else "")
            )
        if not x.is_floating_point():
            raise SnsError(f"backbone expects float images in [0, 1], got dtype {x.dtype}: pass x.float() / 255")
        x = x.to(self.mean.dtype)
        if self.fixed_size and tuple(x.shape[-2:]) != (self.fixed_size, self.fixed_size):
            size = (self.fixed_size, self.fixed_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.student((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, resolution={self.resolution}, method={self.meta.get('method')}"


def load_backbone(path: PathLike, device: str | torch.device = "cpu") -> Backbone:
    """Load an export (either file, their common stem, or a directory holding one) as an eval-mode Backbone.

    A ``timm:NAME`` export needs timm installed (``squeezespan[timm]``); a ``package.module:factory`` export needs
    the factory importable (on PYTHONPATH): both are rebuilt from ``arch`` and ``arch_kwargs``, then loaded strictly.
    """
    meta = read_meta(path)
    st_path, _ = export_paths(path)
    tensors = _read_weights(path)
    student = build_student(
        meta["arch"],
        meta["variant"] or "cifar",
        meta["width"] or 1.0,
        meta["in_channels"],
        arch_kwargs=meta.get("arch_kwargs"),
        resolution=meta.get("resolution"),
    )
    weights = _weights_module(student)
    _check_fits(weights, tensors, st_path, meta)
    weights.load_state_dict(tensors, strict=True)
    return Backbone(student, meta["mean"], meta["std"], meta).to(device).eval()


def torchvision_resnet(path: PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a width-1 export into a plain ``torchvision.models.resnetXX`` (stem swapped as TORCHVISION_NOTE says).

    The returned eval-mode model expects images already normalised with ``read_meta(path)``'s mean/std
    and returns (N, feature_dim) features, as its ``fc`` is an ``nn.Identity``.
    """
    meta = read_meta(path)
    if meta["arch"] not in ARCHS:
        raise SnsError(
            f"{path} has arch {meta['arch']!r}: torchvision_resnet loads the built-in {', '.join(ARCHS)} only; "
            "use squeezespan.load_backbone(path)"
        )
    if float(meta["width"]) != 1.0:
        raise SnsError(
            f"{path} has width {meta['width']}: torchvision's ResNet has no width multiplier, use load_backbone instead"
        )
    st_path, _ = export_paths(path)
    tensors = _read_weights(path)
    model = getattr(torchvision.models, meta["arch"])(weights=None)
    channels = int(meta["in_channels"])
    if meta["variant"] == "cifar":
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()
    _check_fits(model, tensors, st_path, meta)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()
