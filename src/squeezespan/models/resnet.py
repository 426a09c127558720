"""Student encoders: ResNet-18/34/50 (CIFAR and ImageNet stems) with torchvision's parameter names."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from ..errors import SnsError

# arch -> (residual block, blocks per stage); the same table torchvision uses.
ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
# cifar: 3x3 stride-1 conv1 and no max-pool, so a 32px image keeps a 4x4 map before pooling.
# imagenet: torchvision's 7x7 stride-2 conv1 + 3x3 stride-2 max-pool.
VARIANTS = ("cifar", "imagenet")


def stage_widths(width: float) -> list[int]:
    """Planes of conv1 and of the four stages for a width multiplier (64, 128, 256, 512 at width 1)."""
    return [max(1, int(round(base * width))) for base in (64, 64, 128, 256, 512)]


class ResNet(nn.Module):
    """A ResNet backbone whose ``state_dict`` keys are torchvision's (``fc`` is an ``nn.Identity``).

    torchvision's ``ResNet`` fixes the stem at 64 channels and ``width_per_group`` only widens the
    inside of a Bottleneck, so a width multiplier over every stage cannot be expressed through it;
    this class rebuilds the same layout with the same attribute names from torchvision's own
    ``BasicBlock``/``Bottleneck``, so at width 1 the checkpoint loads into ``torchvision.models.resnetXX``.
    """

    def __init__(self, arch: str = "resnet18", variant: str = "cifar", width: float = 1.0, in_channels: int = 3):
        super().__init__()
        if arch not in ARCHS:
            raise SnsError(f"student arch {arch!r} is unknown: expected one of {', '.join(ARCHS)}")
        if variant not in VARIANTS:
            raise SnsError(f"student variant {variant!r} is unknown: expected one of {', '.join(VARIANTS)}")
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
            raise SnsError(f"student width {width!r} is invalid: expected a positive number such as 1.0 or 0.5")
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise SnsError(
                f"student in_channels {in_channels!r} is invalid: expected a positive integer (1 grey, 3 RGB)"
            )
        self.arch, self.variant, self.width, self.in_channels = arch, variant, float(width), in_channels
        block, blocks = ARCHS[arch]
        stem, *planes = stage_widths(width)

        if variant == "cifar":
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)

        inplanes = stem
        stages = []
        for i, (p, n) in enumerate(zip(planes, blocks)):
            stage, inplanes = _make_stage(block, inplanes, p, n, stride=1 if i == 0 else 2)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.feature_dim = inplanes

        # torchvision's initialisation, so a student starts where a torchvision model would.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, H, W) -> pooled features (N, feature_dim)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, variant={self.variant}, width={self.width}, in_channels={self.in_channels}"


def _make_stage(block, inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """One stage laid out as torchvision lays it out (``downsample.0`` conv, ``downsample.1`` BN)."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out
