"""A user's own student network for the ``arch=tiny_student:make`` tests (tests/ is on sys.path under pytest)."""

from torch import nn


def make(in_channels: int, width: int = 8) -> nn.Module:
    """Two conv blocks, global average pooling: (N, in_channels, H, W) -> (N, 2 * width)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def unpooled(in_channels: int) -> nn.Module:
    """A mistake users make: a feature map (N, 4, H, W) instead of pooled features."""
    return nn.Conv2d(in_channels, 4, 3, padding=1)


NOT_CALLABLE = 3
