"""Networks trained by squeezespan: students (built-in ResNets, timm models, user factories), the projector MLP
and the squeeze module T_phi."""

from .heads import Projector, SqueezeModule, pool_tap
from .resnet import ARCHS, VARIANTS, ResNet
from .student import ExternalStudent, build_student, check_arch, parse_arch

__all__ = [
    "ARCHS",
    "VARIANTS",
    "ExternalStudent",
    "Projector",
    "ResNet",
    "SqueezeModule",
    "build_student",
    "check_arch",
    "parse_arch",
    "pool_tap",
]
