"""The student encoder of any architecture: an ``arch`` string -> a module mapping (N, C, H, W) to (N, feature_dim).

Three kinds of ``arch``:

- ``resnet18`` / ``resnet34`` / ``resnet50``: squeezespan's own ResNets (models/resnet.py, ``variant`` and ``width``).
- ``timm:NAME``: any timm backbone (extra ``squeezespan[timm]``), created with ``num_classes=0`` so its forward
  returns pooled features, ``in_chans`` = the data's channels, and ``img_size`` = the run's resolution where the
  model has a fixed input size (ViT, DeiT, Swin, ...); ``arch_kwargs`` go to ``timm.create_model``.
- ``package.module:factory``: the user's own ``nn.Module`` factory, called as ``factory(in_channels=C, **arch_kwargs)``;
  it must return a module mapping (N, C, H, W) images to (N, D) pooled features.

``feature_dim`` is measured by one probe forward at build time (declared sizes can differ from the output: some
timm models end in a head convolution wider than ``num_features``), which also refuses, in one line, a network
that does not take the run's images or does not pool.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from torch import nn

from ..errors import SnsError, one_line
from ..userimport import import_callable
from .resnet import ARCHS, ResNet

__all__ = ["TIMM_PREFIX", "ExternalStudent", "build_student", "check_arch", "parse_arch", "require_timm"]

TIMM_PREFIX = "timm:"
TIMM_INSTALL = "pip install 'squeezespan[timm]'"
# set by squeezespan itself: a student has no classifier and takes the data's channels
_TIMM_RESERVED = ("num_classes", "in_chans", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_EXPECTED = f"expected one of {', '.join(ARCHS)}, timm:NAME (any timm model, {TIMM_INSTALL}) or package.module:factory"
PROBE_RESOLUTION = 224  # the probe's image size when the caller gives no resolution


def parse_arch(arch: Any) -> tuple[str, str]:
    """``("resnet", "resnet18")``, ``("timm", NAME)`` or ``("module", "package.module:factory")``.

    Raises:
        SnsError: one line naming ``arch`` and the three accepted forms.
    """
    if not isinstance(arch, str) or not arch:
        raise SnsError(f"arch={arch!r} is invalid: {_EXPECTED}")
    if arch in ARCHS:
        return "resnet", arch
    if arch.startswith(TIMM_PREFIX):
        name = arch[len(TIMM_PREFIX) :]
        if not name or not re.fullmatch(r"[\w.\-]+", name):
            raise SnsError(f"arch={arch!r}: give a timm model name after 'timm:', e.g. timm:resnet18")
        return "timm", name
    module, sep, attr = arch.partition(":")
    if sep and _DOTTED.fullmatch(module) and _DOTTED.fullmatch(attr):
        return "module", arch
    raise SnsError(f"arch={arch!r} is unknown: {_EXPECTED}")


def require_timm(arch: str) -> Any:
    """timm, imported; a one-line SnsError naming the extra when it is not installed."""
    try:
        import timm
    except ImportError as e:
        raise SnsError(f"arch={arch} needs the timm package, which is not installed ({e}): {TIMM_INSTALL}") from None
    return timm


def _check_kwargs(arch: str, kind: str, arch_kwargs: Any) -> dict[str, Any]:
    if arch_kwargs is None:
        return {}
    if not isinstance(arch_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in arch_kwargs):
        raise SnsError(
            f"arch_kwargs={arch_kwargs!r} must be a mapping of keyword names to values, "
            "e.g. arch_kwargs={patch_size: 4}"
        )
    if arch_kwargs and kind == "resnet":
        raise SnsError(
            f"arch_kwargs={arch_kwargs!r}: {arch} takes variant and width, not arch_kwargs "
            "(arch_kwargs go to a timm:NAME model or a package.module:factory)"
        )
    try:  # the export records them in its JSON
        json.dumps(arch_kwargs, allow_nan=False)
    except (TypeError, ValueError):
        raise SnsError(
            f"arch_kwargs={arch_kwargs!r}: values must be plain numbers, strings, lists or mappings (they are exported)"
        ) from None
    if kind == "timm":
        reserved = [k for k in arch_kwargs if k in _TIMM_RESERVED]
        if reserved:
            raise SnsError(
                f"arch_kwargs sets {reserved[0]}, which squeezespan sets itself (num_classes=0, in_chans from the "
                "data, no pretrained download): drop it"
            )
    if kind == "module" and "in_channels" in arch_kwargs:
        raise SnsError("arch_kwargs sets in_channels, which squeezespan passes itself (the data's channels): drop it")
    return dict(arch_kwargs)


def check_arch(arch: Any, arch_kwargs: Any = None, width: Any = 1.0) -> None:
    """Refuse, in one line and without building a network, an ``arch`` / ``arch_kwargs`` / ``width`` that cannot work:
    an unknown form, a missing timm, an unknown timm model, a factory that does not import, a width for a
    non-ResNet."""
    kind, name = parse_arch(arch)
    _check_kwargs(arch, kind, arch_kwargs)
    _check_width(arch, kind, width)
    if kind == "timm":
        _timm_model_known(require_timm(arch), name, arch)
    elif kind == "module":
        import_callable(name, f"arch={name}")


def _check_width(arch: str, kind: str, width: Any) -> None:
    if kind != "resnet" and isinstance(width, (int, float)) and not isinstance(width, bool) and width != 1.0:
        raise SnsError(f"width={width:g} applies to the built-in ResNets only; size a {arch} with arch_kwargs instead")


def _timm_model_known(timm: Any, name: str, arch: str) -> None:
    if timm.is_model(name):
        return
    near = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
    hint = f"; similar: {', '.join(near)}" if near else "; list them with timm.list_models()"
    raise SnsError(f"arch={arch}: timm has no model {name!r}{hint}")


class ExternalStudent(nn.Module):
    """A timm or user-factory network as a student: ``net`` plus the facts an export records.

    The exported weights are ``net``'s own state_dict (a timm model's keys are timm's), so
    ``timm.create_model(NAME, num_classes=0, in_chans=C, **arch_kwargs)`` loads them as they are.
    ``variant`` and ``width`` are None: they describe only the built-in ResNets. ``fixed_size`` is the one image
    size the network takes (a timm ViT's img_size), None when it takes any.
    """

    variant = None
    width = None

    def __init__(
        self,
        net: nn.Module,
        arch: str,
        arch_kwargs: dict[str, Any],
        in_channels: int,
        feature_dim: int,
        fixed_size: int | None = None,
    ):
        super().__init__()
        self.net = net
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs)
        self.in_channels, self.feature_dim, self.fixed_size = in_channels, feature_dim, fixed_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, H, W) -> pooled features (N, feature_dim)."""
        return self.net(x)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, arch_kwargs={self.arch_kwargs}, feature_dim={self.feature_dim}"


def _fixed_input_size(timm: Any, name: str) -> int | None:
    """The default image size of a timm model that needs its size at construction (ViT, DeiT, Swin, ...: position
    embeddings), None for one that takes any size."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unregistered tag: nothing known, pass nothing
        return None
    if not getattr(cfg, "fixed_input_size", False):
        return None
    return int(cfg.input_size[-1])


def _build_timm(name: str, arch: str, kwargs: dict[str, Any], in_channels: int, resolution: int | None) -> tuple:
    timm = require_timm(arch)
    _timm_model_known(timm, name, arch)
    fixed = _fixed_input_size(timm, name)
    if resolution and "img_size" not in kwargs and fixed:
        kwargs = {**kwargs, "img_size": int(resolution)}
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    except Exception as e:  # timm raises TypeError/ValueError/AssertionError for arguments a model does not take
        raise SnsError(f"arch={arch} with arch_kwargs={kwargs}: timm.create_model refused ({one_line(e)})") from None
    if fixed:
        size = kwargs.get("img_size", fixed)
        fixed = size if isinstance(size, int) and not isinstance(size, bool) else None
    return net, kwargs, fixed


def _build_factory(spec: str, kwargs: dict[str, Any], in_channels: int) -> nn.Module:
    factory = import_callable(spec, f"arch={spec}")
    try:
        net = factory(in_channels=in_channels, **kwargs)
    except SnsError:
        raise
    except Exception as e:
        raise SnsError(
            f"arch={spec}: the factory failed when called with in_channels={in_channels} and arch_kwargs={kwargs} "
            f"({one_line(e)})"
        ) from None
    if not isinstance(net, nn.Module):
        raise SnsError(f"arch={spec}: the factory returned {type(net).__name__}, expected a torch.nn.Module")
    return net


def _probe(net: nn.Module, arch: str, in_channels: int, resolution: int) -> int:
    """The feature size of ``net``, from one eval-mode forward of two blank images; one-line errors otherwise."""
    shape = (2, in_channels, resolution, resolution)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(shape))
    except Exception as e:
        raise SnsError(
            f"arch={arch} cannot take images of shape {shape} ({one_line(e)}); "
            "change resolution or the model's arch_kwargs (e.g. img_size, patch_size)"
        ) from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2 or out.shape[1] < 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SnsError(
            f"arch={arch} maps images of shape {shape} to {got}; a student must return pooled features (2, D) "
            "(timm models are created with num_classes=0; a factory's module must pool and flatten)"
        )
    return int(out.shape[1])


def build_student(
    arch: str = "resnet18",
    variant: str = "cifar",
    width: float = 1.0,
    in_channels: int = 3,
    arch_kwargs: dict[str, Any] | None = None,
    resolution: int | None = None,
) -> nn.Module:
    """The student encoder S without a classifier: float images (N, in_channels, H, W) -> features (N, feature_dim).

    See docs/method.md, "Student and projector".

    Args:
        arch: resnet18 | resnet34 | resnet50 | timm:NAME | package.module:factory (module docstring).
        variant, width: stem and width multiplier of the built-in ResNets (width must stay 1.0 for the others).
        in_channels: the data's channels (1 grey, 3 RGB).
        arch_kwargs: extra keyword arguments of timm.create_model or of the factory.
        resolution: the images' size; a timm model with a fixed input size is built for it, and a timm or
            factory network is probed at it (224 when None).

    Returns:
        A ``ResNet`` or an ``ExternalStudent``; both have ``arch``, ``variant``, ``width``, ``in_channels`` and
        ``feature_dim``.
    """
    kind, name = parse_arch(arch)
    kwargs = _check_kwargs(arch, kind, arch_kwargs)
    if kind == "resnet":
        return ResNet(arch=arch, variant=variant, width=width, in_channels=in_channels)
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise SnsError(f"student in_channels {in_channels!r} is invalid: expected a positive integer (1 grey, 3 RGB)")
    _check_width(arch, kind, width)
    fixed = None
    if kind == "timm":
        net, kwargs, fixed = _build_timm(name, arch, kwargs, in_channels, resolution)
    else:
        net = _build_factory(name, kwargs, in_channels)
    feature_dim = _probe(net, arch, in_channels, int(resolution or fixed or PROBE_RESOLUTION))
    return ExternalStudent(net, arch, kwargs, in_channels, feature_dim, fixed_size=fixed)
