"""Datasets as device-resident tensors plus deterministic random-access batching."""
from lth.data import cifar10, digits, fashion_mnist, mnist  # noqa: F401  (register datasets)
from lth.data.batcher import Batcher
from lth.data.bundle import DataBundle, load_dataset, shared_dataset
from lth.data.download import dataset_search_dirs
from lth.data.registry import DATASETS, DatasetSource, RawSplits

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
