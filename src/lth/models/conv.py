"""Conv-2/4/6 of Frankle & Carbin (2019): small VGG-like nets without BatchNorm."""
from __future__ import annotations

import torch
from torch import nn

from lth.models.recipe import Recipe
from lth.models.registry import InputShape, register_model, require_positive

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


def _register(depth: int, lr: float, budget: str, conv_rate: float) -> None:
    recipe = Recipe(
        optimizer="adam",
        lr=lr,
        batch_size=60,
        budget=budget,
        scope="layerwise",
        prune_rate_fc=0.2,
        prune_rate_conv=conv_rate,
        prune_rate_output=0.1,
        initializer="glorot_normal",
    )
    plan = PLANS[depth]

    @register_model(
        f"conv-{depth}", "conv", f"Conv-{depth} of Frankle & Carbin (2019)", recipe
    )
    def build(input_shape: InputShape, num_classes: int) -> nn.Module:
        return ConvNet(plan, input_shape, num_classes)


_register(2, 2e-4, "20000it", 0.1)
_register(4, 3e-4, "25000it", 0.1)
_register(6, 3e-4, "30000it", 0.15)
