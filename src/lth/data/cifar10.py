"""CIFAR-10 natural images (python pickle version)."""

from __future__ import annotations

from pathlib import Path

from lth.data.cifar import (
    BATCHES_DIRNAME,
    TARBALL,
    TEST_FILE,
    TRAIN_FILES,
    extract_cifar_tarball,
    find_batches_dir,
    read_cifar10,
)
from lth.data.download import cache_dir, dataset_search_dirs, existing_variant, given_dirs, obtain, refuse_incomplete
from lth.data.registry import DATASETS, DatasetSource, RawSplits
from lth.errors import LthError

MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
SHA256 = {TARBALL: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}


def _load(data_dir: Path | None, allow_download: bool) -> RawSplits:
    if data_dir is not None:  # an incomplete --data-dir is refused, not passed over
        given = given_dirs("cifar10", data_dir)
        if not any(find_batches_dir(d) or existing_variant(d, TARBALL) for d in given):
            refuse_incomplete(
                "cifar10",
                [c for d in given for c in (d / BATCHES_DIRNAME, d)],
                (*TRAIN_FILES, TEST_FILE),
                lambda d, f: (d / f).is_file(),
            )
    for directory in dataset_search_dirs("cifar10", data_dir):
        batches = find_batches_dir(directory)
        if batches is not None:
            return RawSplits(*read_cifar10(batches))
    hint = f"{TARBALL} (or its extracted {BATCHES_DIRNAME})"
    tarball = obtain("cifar10", SHA256, MIRRORS, data_dir, allow_download, hint) / TARBALL
    try:
        batches = extract_cifar_tarball(tarball)
    except LthError:
        if tarball.parent == cache_dir("cifar10"):
            raise
        batches = extract_cifar_tarball(tarball, cache_dir("cifar10"))  # read-only location
    return RawSplits(*read_cifar10(batches))


def _locate(data_dir: Path | None) -> str | None:
    for directory in dataset_search_dirs("cifar10", data_dir):
        batches = find_batches_dir(directory)
        if batches is not None:
            return str(batches)
        tarball = existing_variant(directory, TARBALL)
        if tarball is not None:
            return str(tarball)
    return None


DATASETS.add(
    "cifar10",
    DatasetSource(
        name="cifar10",
        description="CIFAR-10 natural images, 32x32 RGB, 10 classes (crop+flip augmentation)",
        input_shape=(3, 32, 32),
        num_classes=10,
        train_size=50000,
        test_size=10000,
        load=_load,
        augment=True,
        locate=_locate,
    ),
)
