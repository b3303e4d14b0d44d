"""MNIST handwritten digits (IDX files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lth.data.download import existing_variant, find_files, obtain
from lth.data.idx import read_idx
from lth.data.registry import DATASETS, DatasetSource, RawSplits
from lth.errors import LthError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
SHA256 = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaaf495d2c7eca9c8f",
}


def _read_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise LthError(f"{images_path} must hold uint8 images of shape (N, 28, 28), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise LthError(f"{labels_path} must hold {x.shape[0]} labels to match {images_path.name}, got shape {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise LthError(f"{labels_path} has labels outside 0..{num_classes - 1}")
    return x[:, None], y.astype(np.int64)


def load_mnist_like(
    name: str,
    sha256: Mapping[str, str | Sequence[str]],
    mirrors: Sequence[str],
    data_dir: Path | None,
    allow_download: bool,
) -> RawSplits:
    """Locate (or download) the four MNIST-format files of ``name`` and read them."""
    directory = obtain(name, sha256, mirrors, data_dir, allow_download)

    def path(filename: str) -> Path:
        found = existing_variant(directory, filename)
        assert found is not None  # obtain() guarantees presence
        return found

    train_x, train_y = _read_pair(path(TRAIN_IMAGES), path(TRAIN_LABELS), 10)
    test_x, test_y = _read_pair(path(TEST_IMAGES), path(TEST_LABELS), 10)
    return RawSplits(train_x, train_y, test_x, test_y)


FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def locate_mnist_like(name: str, data_dir: Path | None) -> str | None:
    """The directory holding all four files of ``name`` (gzipped or not), or None."""
    found = find_files(name, FILES, data_dir)
    return None if found is None else str(found)


def _load(data_dir: Path | None, allow_download: bool) -> RawSplits:
    return load_mnist_like("mnist", SHA256, MIRRORS, data_dir, allow_download)


DATASETS.add(
    "mnist",
    DatasetSource(
        name="mnist",
        description="MNIST handwritten digits, 28x28 grayscale, 10 classes",
        input_shape=(1, 28, 28),
        num_classes=10,
        train_size=60000,
        test_size=10000,
        load=_load,
        locate=lambda data_dir: locate_mnist_like("mnist", data_dir),
    ),
)
