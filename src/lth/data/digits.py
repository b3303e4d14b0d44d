"""scikit-learn's bundled 8x8 handwritten digits: tiny, offline, for fast smoke tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lth.data.registry import DATASETS, DatasetSource, RawSplits

TOTAL = 1797
TEST_SIZE = 397
SPLIT_SEED = 0


def _bundled_file() -> Path | None:
    """scikit-learn's ``digits.csv.gz``, found without importing scikit-learn (2 s); None if absent."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _load(data_dir: Path | None, allow_download: bool) -> RawSplits:
    """Ignore both arguments: the data ships with scikit-learn.

    Read straight from its file (1797 rows of 64 pixels 0..16 and the label, as
    ``sklearn.datasets.load_digits`` reads it), which spares every process the import of scikit-learn.
    """
    path = _bundled_file()
    if path is None:  # another layout: ask scikit-learn itself
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels, labels = digits.images.reshape(len(digits.target), 64), digits.target
    else:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :64], table[:, 64]
    x = pixels.astype(np.float32).reshape(-1, 1, 8, 8) * (255.0 / 16.0)  # (N, 1, 8, 8), 0..255, float32
    y = labels.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    test, train = np.sort(order[:TEST_SIZE]), np.sort(order[TEST_SIZE:])
    return RawSplits(x[train], y[train], x[test], y[test])


def _locate(data_dir: Path | None) -> str | None:
    """Present when scikit-learn, which bundles the file, is installed (checked without importing it)."""
    return "bundled with scikit-learn" if _bundled_file() is not None else None


DATASETS.add(
    "digits",
    DatasetSource(
        name="digits",
        description="scikit-learn 8x8 digits (bundled, no download), 10 classes",
        input_shape=(1, 8, 8),
        num_classes=10,
        train_size=TOTAL - TEST_SIZE,
        test_size=TEST_SIZE,
        load=_load,
        val_size=300,
        locate=_locate,
    ),
)
