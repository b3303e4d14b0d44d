"""CIFAR VGG-11/13/16/19 (Simonyan & Zisserman 2015, configs A/B/D/E) with BatchNorm."""

from __future__ import annotations

import torch
from torch import nn

from lth.models.registry import InputShape, require_positive

Config = tuple[int | str, ...]  # conv widths, 'M' = 2x2 max pool

CONFIGS: dict[int, Config] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


class VGG(nn.Module):
    """3x3 conv (no bias) + BN + ReLU blocks with max pools, global average pool, one Linear.

    Conv biases are omitted because the following BatchNorm makes them redundant.
    """

    def __init__(self, config: Config, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        pools = 0
        for item in config:
            if item == "M":
                h, w, pools = h // 2, w // 2, pools + 1
                require_positive(h, w, f"after max pool {pools}")
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def vgg(input_shape: InputShape, num_classes: int, depth: int) -> nn.Module:
    """VGG-``depth`` (11, 13, 16 or 19)."""
    return VGG(CONFIGS[depth], input_shape, num_classes)
