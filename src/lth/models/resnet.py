"""CIFAR ResNet-20/32/56 (He et al. 2016, section 4.2) with projection shortcuts."""

from __future__ import annotations

import torch
from torch import nn

from lth.models.registry import InputShape

WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection.

    The shortcut is the identity, or a 1x1 conv + BN projection when the
    width or stride changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Depth 6n+2: stem conv, three stages of n blocks (16/32/64), avg pool, Linear."""

    def __init__(self, depth: int, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth {depth} is not of the form 6n+2")
        n = (depth - 2) // 6
        channels = input_shape[0]
        self.conv = nn.Conv2d(channels, WIDTHS[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU()
        in_channels = WIDTHS[0]
        stages: list[nn.Module] = []
        for index, width in enumerate(WIDTHS):
            blocks = []
            for b in range(n):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet(input_shape: InputShape, num_classes: int, depth: int) -> nn.Module:
    """ResNet-``depth`` (6n+2: 20, 32, 56, ...)."""
    return ResNet(depth, input_shape, num_classes)
