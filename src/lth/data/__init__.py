"""Datasets as device-resident tensors plus deterministic random-access batching.

The registry and the dataset sources load without torch (``lth datasets`` lists them at once);
the tensor side (:class:`DataBundle`, :class:`Batcher`, loading) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from lth.data import cifar10, digits, fashion_mnist, mnist  # noqa: F401  (register datasets)
from lth.data.download import dataset_search_dirs
from lth.data.registry import DATASETS, DatasetSource, RawSplits

_LAZY = {
    "Batcher": "lth.data.batcher",
    "DataBundle": "lth.data.bundle",
    "load_dataset": "lth.data.bundle",
    "shared_dataset": "lth.data.bundle",
}

__all__ = [
    "DATASETS",
    "Batcher",
    "DataBundle",
    "DatasetSource",
    "RawSplits",
    "dataset_search_dirs",
    "load_dataset",
    "shared_dataset",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lth.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
