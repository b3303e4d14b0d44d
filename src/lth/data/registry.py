"""The dataset registry and the description of one dataset source."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from lth.registry import Registry


class RawSplits(NamedTuple):
    """Raw arrays as read from disk: x is (N, C, H, W) with values in 0..255, y integer labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset: its shape, sizes and a loader ``load(data_dir, download_allowed)``."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    load: Callable[[Path | None, bool], RawSplits]
    val_size: int = 5000
    augment: bool = False


DATASETS: Registry[DatasetSource] = Registry("dataset")
