"""The dataset registry and the description of one dataset source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    """A named dataset: its shape, sizes, a loader ``load(data_dir, download_allowed)`` and
    ``locate(data_dir)``, which says where its files are on this machine (None: not present, so a
    first use downloads them) without reading them."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    load: Callable[[Path | None, bool], RawSplits]
    val_size: int = 5000
    augment: bool = False
    locate: Callable[[Path | None], str | None] = lambda data_dir: None


DATASETS: Registry[DatasetSource] = Registry("dataset")
