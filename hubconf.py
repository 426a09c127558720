"""torch.hub entry points: squeezespan's student encoders, built from this checkout (nothing is downloaded).

    model = torch.hub.load(REPO_DIR, "squeezespan_resnet18", weights="runs/x/backbone.safetensors", source="local")

``weights`` is an exported backbone (a `sns pretrain` run directory, backbone.safetensors/.json, or a hub folder
from `sns export --format hub`); the model then takes float images in [0, 1] and normalises them itself, as
``squeezespan.load_backbone`` does. Without ``weights`` the encoder is randomly initialised (keyword arguments
``variant``, ``width``, ``in_channels``) and takes normalised images. ``squeezespan_backbone`` loads an export of
any student (a built-in ResNet, ``timm:NAME`` or ``package.module:factory``).
"""

from __future__ import annotations

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "safetensors", "yaml"]

_SRC = Path(__file__).resolve().parent / "src"
if "squeezespan" not in sys.modules and (_SRC / "squeezespan").is_dir():
    sys.path.insert(0, str(_SRC))  # this checkout's package, whether or not it is pip-installed


def _encoder(arch: str, weights=None, device="cpu", **kwargs):
    from squeezespan.errors import SnsError
    from squeezespan.export import load_backbone
    from squeezespan.hub import resolve_export
    from squeezespan.models import build_student

    if weights is None:
        return build_student(arch, **kwargs).to(device).eval()
    if kwargs:
        raise SnsError(f"{', '.join(kwargs)}: the architecture comes from the weights' metadata; pass weights only")
    backbone = load_backbone(resolve_export(weights), device=device)
    if backbone.meta.get("arch") != arch:
        held = backbone.meta.get("arch")
        entry = f"squeezespan_{held}" if held in ("resnet18", "resnet34", "resnet50") else "squeezespan_backbone"
        raise SnsError(f"{weights} holds a {held}; load it with {entry}")
    return backbone


def squeezespan_backbone(weights, device="cpu"):
    """Any exported student (ResNet, timm:NAME, package.module:factory): [0, 1] images in, pooled features out."""
    from squeezespan.export import load_backbone
    from squeezespan.hub import resolve_export

    return load_backbone(resolve_export(weights), device=device)


def squeezespan_resnet18(weights=None, device="cpu", **kwargs):
    """ResNet-18 student encoder (pooled 512-d features); ``weights``: an exported backbone or hub folder."""
    return _encoder("resnet18", weights, device, **kwargs)


def squeezespan_resnet34(weights=None, device="cpu", **kwargs):
    """ResNet-34 student encoder (pooled 512-d features); ``weights``: an exported backbone or hub folder."""
    return _encoder("resnet34", weights, device, **kwargs)


def squeezespan_resnet50(weights=None, device="cpu", **kwargs):
    """ResNet-50 student encoder (pooled 2048-d features); ``weights``: an exported backbone or hub folder."""
    return _encoder("resnet50", weights, device, **kwargs)
