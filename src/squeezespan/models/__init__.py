"""Networks trained by squeezespan: student ResNets, the projector MLP and the squeeze module T_phi."""

from .heads import Projector, SqueezeModule, pool_tap
from .resnet import ARCHS, VARIANTS, ResNet, build_student

__all__ = ["ARCHS", "VARIANTS", "Projector", "ResNet", "SqueezeModule", "build_student", "pool_tap"]
