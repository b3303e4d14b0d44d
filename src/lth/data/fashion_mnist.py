"""Fashion-MNIST clothing images (same IDX layout as MNIST)."""

from __future__ import annotations

from pathlib import Path

from lth.data.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, load_mnist_like, locate_mnist_like
from lth.data.registry import DATASETS, DatasetSource, RawSplits

MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# Each file accepts two digests: the official release and a re-gzipped copy with identical content.
SHA256 = {
    TRAIN_IMAGES: (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    TRAIN_LABELS: (
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    TEST_IMAGES: (
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    TEST_LABELS: (
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
}


def _load(data_dir: Path | None, allow_download: bool) -> RawSplits:
    return load_mnist_like("fashion-mnist", SHA256, MIRRORS, data_dir, allow_download)


DATASETS.add(
    "fashion-mnist",
    DatasetSource(
        name="fashion-mnist",
        description="Fashion-MNIST clothing items, 28x28 grayscale, 10 classes",
        input_shape=(1, 28, 28),
        num_classes=10,
        train_size=60000,
        test_size=10000,
        load=_load,
        locate=lambda data_dir: locate_mnist_like("fashion-mnist", data_dir),
    ),
)
