"""LeNet family (LeCun et al. 1998); registered with its recipe in :mod:`lth.models.zoo`."""

from __future__ import annotations

import torch
from torch import nn

from lth.models.registry import InputShape, require_positive, spatial_after


class LeNet300100(nn.Module):
    """Fully-connected 300-100 network: flatten -> fc1 -> fc2 -> fc3 (output)."""

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c * h * w, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """conv5x5(6, pad 2)-pool-conv5x5(16)-pool, then fc 120-84-classes."""

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        h, w = spatial_after(h, 5, padding=2) // 2, spatial_after(w, 5, padding=2) // 2
        require_positive(h, w, "after the first conv + pool")
        h, w = spatial_after(h, 5) // 2, spatial_after(w, 5) // 2
        require_positive(h, w, "after the second conv + pool")
        self.conv1 = nn.Conv2d(c, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet_300_100(input_shape: InputShape, num_classes: int) -> nn.Module:
    return LeNet300100(input_shape, num_classes)


def lenet_5(input_shape: InputShape, num_classes: int) -> nn.Module:
    return LeNet5(input_shape, num_classes)
