"""Conv-2/4/6 of Frankle & Carbin (2019): small VGG-like nets without BatchNorm (recipes in
:mod:`lth.models.zoo`)."""

from __future__ import annotations

import torch
from torch import nn

from lth.models.registry import InputShape, require_positive

Plan = tuple[int | str, ...]  # conv widths, 'M' = 2x2 max pool

PLANS: dict[int, Plan] = {
    2: (64, 64, "M"),
    4: (64, 64, "M", 128, 128, "M"),
    6: (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}


class ConvNet(nn.Module):
    """3x3 convs (padding 1) + ReLU with max pools, then fc 256-256-classes."""

    def __init__(self, plan: Plan, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        pools = 0
        for item in plan:
            if item == "M":
                h, w, pools = h // 2, w // 2, pools + 1
                require_positive(h, w, f"after max pool {pools}")
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(channels * h * w, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def conv_net(input_shape: InputShape, num_classes: int, depth: int) -> nn.Module:
    """Conv-``depth`` (2, 4 or 6)."""
    return ConvNet(PLANS[depth], input_shape, num_classes)
