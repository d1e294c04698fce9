"""Projection heads of the two SSCCL branches."""

from __future__ import annotations

from torch import nn


class InstanceHead(nn.Sequential):
    """Global MLP (MoCo v2): pooled encoder map ``B×E×h×w`` → ``B×out``."""

    def __init__(self, in_channels: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )


class DenseHead(nn.Sequential):
    """1×1-convolution MLP on decoder features: ``B×D×h×w`` → ``B×out×h×w``."""

    def __init__(self, in_channels: int, hidden: int = 256, out: int = 128) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out, 1),
        )
