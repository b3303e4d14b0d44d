"""Tests for lth.data: file readers, lookup/download, bundles and the batcher."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lth.data import DATASETS, Batcher, cifar, dataset_search_dirs, download, load_dataset
from lth.data.batcher import crop_flip
from lth.data.idx import read_idx
from lth.errors import LthError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Keep tests away from the real cache and $LTH_DATA_DIR."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LTH_DATA_DIR", raising=False)
    return home


# ---------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_uint8(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array, 0x08)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "dtype,code", [(np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E), (np.int8, 0x09)]
)
def test_read_idx_big_endian_types(tmp_path, dtype, code):
    array = (np.arange(6) - 3).astype(dtype).reshape(3, 2) * 7
    path = tmp_path / "b.idx"
    path.write_bytes(idx_bytes(array, code))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(LthError, match="bad.idx"):
        read_idx(path)


def test_read_idx_bad_type_code(tmp_path):
    path = tmp_path / "code.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(LthError, match="code.idx.*type code 0x07"):
        read_idx(path)


def test_read_idx_truncated_payload(tmp_path):
    data = idx_bytes(np.zeros((4, 5), np.uint8), 0x08)[:-3]
    path = tmp_path / "trunc.idx.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(LthError, match=r"trunc\.idx\.gz.*need 20 bytes but it holds 17"):
        read_idx(path)


def test_read_idx_oversized_payload(tmp_path):
    path = tmp_path / "big.idx"
    path.write_bytes(idx_bytes(np.zeros((4, 5), np.uint8), 0x08) + b"xx")
    with pytest.raises(LthError, match=r"big\.idx.*need 20 bytes but it holds 22"):
        read_idx(path)


def test_read_idx_wrong_dims(tmp_path):
    # declares 3 dimensions but only the header for 1 is present
    path = tmp_path / "dims.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 2))
    with pytest.raises(LthError, match="dims.idx.*truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(LthError, match="dims.idx.*0 dimensions"):
        read_idx(path)


def test_read_idx_bad_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8), 0x08))
    path = tmp_path / "corrupt.idx.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(LthError, match="corrupt.idx.gz.*gzip"):
        read_idx(path)
    path.write_bytes(good[:10] + b"\xff" * 20 + good[30:])
    with pytest.raises(LthError, match="corrupt.idx.gz"):
        read_idx(path)


# ---------------------------------------------------------------- CIFAR

ROWS = 4


@pytest.fixture
def small_cifar(monkeypatch):
    monkeypatch.setattr(cifar, "ROWS_PER_BATCH", ROWS)


def write_batch(path: Path, rng: np.random.Generator, rows: int = ROWS) -> tuple[np.ndarray, list[int]]:
    data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, rows)]
    with path.open("wb") as handle:
        pickle.dump(
            {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"f"] * rows}, handle, protocol=2
        )
    return data, labels


def write_cifar_dir(directory: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return {name: write_batch(directory / name, rng) for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE)}


def check_cifar(result, written) -> None:
    train_x, train_y, test_x, test_y = result
    assert train_x.shape == (5 * ROWS, 3, 32, 32) and train_x.dtype == np.uint8
    np.testing.assert_array_equal(
        train_x, np.concatenate([written[f][0] for f in cifar.TRAIN_FILES]).reshape(-1, 3, 32, 32)
    )
    np.testing.assert_array_equal(train_y, sum((written[f][1] for f in cifar.TRAIN_FILES), []))
    np.testing.assert_array_equal(test_x, written[cifar.TEST_FILE][0].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(test_y, written[cifar.TEST_FILE][1])


def test_cifar_reads_batches_dir_and_parent(tmp_path, small_cifar):
    written = write_cifar_dir(tmp_path / cifar.BATCHES_DIRNAME)
    check_cifar(cifar.read_cifar10(tmp_path / cifar.BATCHES_DIRNAME), written)
    check_cifar(cifar.read_cifar10(tmp_path), written)


def test_cifar_full_size_batch(tmp_path):
    data, labels = write_batch(tmp_path / "data_batch_1", np.random.default_rng(1), rows=10000)
    x, y = cifar.read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(x.reshape(10000, -1), data)
    np.testing.assert_array_equal(y, labels)


def test_cifar_wrong_shape_and_labels(tmp_path, small_cifar):
    path = tmp_path / "data_batch_1"
    write_batch(path, np.random.default_rng(0), rows=ROWS + 1)
    with pytest.raises(LthError, match="data_batch_1.*expected uint8 \\(4, 3072\\)"):
        cifar.read_cifar_batch(path)
    with path.open("wb") as handle:
        pickle.dump({b"data": np.zeros((ROWS, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, handle, protocol=2)
    with pytest.raises(LthError, match="data_batch_1.*labels"):
        cifar.read_cifar_batch(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(LthError, match="data_batch_1"):
        cifar.read_cifar_batch(path)


def test_cifar_accepts_legacy_numpy_core_module(tmp_path, small_cifar):
    """The official files (pickled by Python 2) name numpy.core.multiarray, not numpy._core."""
    data = np.arange(ROWS * 3072, dtype=np.uint32).astype(np.uint8).reshape(ROWS, 3072)
    blob = pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n" in blob
    (tmp_path / "b").write_bytes(blob)
    x, y = cifar.read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(x.reshape(ROWS, -1), data)
    np.testing.assert_array_equal(y, [1, 2, 3, 4])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_is_not_executed(tmp_path, small_cifar):
    marker = tmp_path / "pwned"
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(LthError, match=r"test_batch.*(posix|os)\.system"):
        cifar.read_cifar_batch(path)
    assert not marker.exists()


def make_tarball(tar_path: Path, source_dir: Path) -> None:
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(source_dir, arcname=cifar.BATCHES_DIRNAME)


def test_cifar_tarball_extract(tmp_path, small_cifar):
    written = write_cifar_dir(tmp_path / "src" / cifar.BATCHES_DIRNAME)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_tarball(data_dir / cifar.TARBALL, tmp_path / "src" / cifar.BATCHES_DIRNAME)
    raw = DATASETS.get("cifar10").load(data_dir, False)
    check_cifar(raw, written)
    assert (data_dir / cifar.BATCHES_DIRNAME / "test_batch").is_file()
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []


def test_cifar_tarball_path_traversal_rejected(tmp_path):
    tar_path = tmp_path / "out" / cifar.TARBALL
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        payload = b"boom"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(LthError, match="unsafe entry"):
        cifar.extract_cifar_tarball(tar_path)
    assert not (tmp_path / "escaped").exists()


def test_cifar_augment_flag_and_shape():
    source = DATASETS.get("cifar10")
    assert source.augment and source.input_shape == (3, 32, 32)
    assert not DATASETS.get("mnist").augment


# ---------------------------------------------------------------- lookup and download


def test_search_dirs_order(tmp_path, monkeypatch, isolated_home):
    env = tmp_path / "env"
    monkeypatch.setenv("LTH_DATA_DIR", str(env))
    dirs = dataset_search_dirs("mnist", tmp_path / "dd")
    assert dirs == [
        tmp_path / "dd",
        tmp_path / "dd" / "mnist",
        env / "mnist",
        env,
        isolated_home / ".cache" / "lth" / "datasets" / "mnist",
        Path("/usr/share/datasets/mnist"),
    ]


def test_find_files_precedence(tmp_path, monkeypatch, isolated_home):
    names = ["a.gz", "b"]
    cache = isolated_home / ".cache" / "lth" / "datasets" / "toy"
    env = tmp_path / "env"
    given = tmp_path / "given"
    for d in (cache, env / "toy", given / "toy"):
        d.mkdir(parents=True)
        (d / "a").write_bytes(b"")  # un-gzipped variant is accepted
        (d / "b").write_bytes(b"")
    assert download.find_files("toy", names) == cache
    monkeypatch.setenv("LTH_DATA_DIR", str(env))
    assert download.find_files("toy", names) == env / "toy"
    assert download.find_files("toy", names, given) == given / "toy"
    assert download.find_files("toy", ["missing"], given) is None


def test_download_checksum(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"hello lottery" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest_dir = tmp_path / "dest"
    dest = dest_dir / "payload.bin"
    with pytest.raises(LthError, match=f"expected SHA-256 {'0' * 64}, got {good}"):
        download.download(src.as_uri(), dest, "0" * 64)
    assert not dest.exists() and list(dest_dir.iterdir()) == []
    assert download.download(src.as_uri(), dest, ["f" * 64, good]) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest_dir.iterdir()] == ["payload.bin"]


def test_download_unreachable(tmp_path):
    with pytest.raises(LthError, match="downloading .*nothing-here failed"):
        download.download((tmp_path / "nothing-here").as_uri(), tmp_path / "d" / "x", "0" * 64)
    assert list((tmp_path / "d").iterdir()) == []


def test_obtain_downloads_into_cache_trying_mirrors(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.gz").write_bytes(b"content")
    sha = hashlib.sha256(b"content").hexdigest()
    env = tmp_path / "env"
    monkeypatch.setenv("LTH_DATA_DIR", str(env))
    bad_mirror = (tmp_path / "nowhere").as_uri() + "/"
    got = download.obtain("toy", {"f.gz": sha}, [bad_mirror, mirror.as_uri() + "/"])
    assert got == env / "toy" and (env / "toy" / "f.gz").read_bytes() == b"content"
    assert "downloading" in capsys.readouterr().err


def test_missing_files_download_disabled(tmp_path):
    given = tmp_path / "given"
    with pytest.raises(LthError) as info:
        load_dataset("mnist", data_dir=given, download=False)
    message = str(info.value)
    assert message.startswith("mnist files not found in ")
    for d in dataset_search_dirs("mnist", given):
        assert str(d) in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "train-images-idx3-ubyte.gz" in message and "--data-dir" in message
    assert "\n" not in message


def test_missing_files_download_fails(tmp_path, monkeypatch):
    from lth.data import mnist

    monkeypatch.setattr(mnist, "MIRRORS", ((tmp_path / "nope").as_uri() + "/",))
    with pytest.raises(LthError, match="mnist files not found in .*download from file://.*failed"):
        load_dataset("mnist", download=True)


def test_mnist_from_small_files(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    arrays = {}
    for prefix, n in (("train", 30), ("t10k", 7)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x, 0x08)))
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(y, 0x08))  # raw variant
        arrays[prefix] = (x, y)
    raw = DATASETS.get("mnist").load(tmp_path, False)
    np.testing.assert_array_equal(raw.train_x[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(raw.test_y, arrays["t10k"][1])
    bundle = load_dataset("mnist", data_dir=tmp_path, val_size=10)
    assert bundle.train_x.shape == (20, 1, 28, 28) and bundle.val_x.shape == (10, 1, 28, 28)


# ---------------------------------------------------------------- bundles


def test_digits_bundle():
    b = load_dataset("digits")
    assert b.train_x.shape == (1100, 1, 8, 8) and b.val_x.shape == (300, 1, 8, 8) and b.test_x.shape == (397, 1, 8, 8)
    assert b.train_y.shape == (1100,) and b.val_y.shape == (300,) and b.test_y.shape == (397,)
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10 and not b.augment
    assert b.train_x.dtype == torch.float32 and b.train_y.dtype == torch.int64
    mean = b.train_x.double().mean(dim=(0, 2, 3))
    std = b.train_x.double().std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(1, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(std, torch.ones(1, dtype=torch.float64), atol=1e-4)


def test_digits_read_from_the_bundled_file_equal_scikit_learns_loader(monkeypatch):
    """lth reads scikit-learn's digits.csv.gz itself (no 2 s import of scikit-learn); the splits are
    exactly those built from ``sklearn.datasets.load_digits``, which is the fallback."""
    import sys

    from lth.data import digits

    assert digits._bundled_file() is not None and digits._locate(None) == "bundled with scikit-learn"
    direct = digits._load(None, False)
    monkeypatch.setattr(digits, "_bundled_file", lambda: None)
    through_sklearn = digits._load(None, False)
    for a, b in zip(direct, through_sklearn):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert direct.train_x.shape == (1400, 1, 8, 8) and direct.test_y.shape == (397,)
    assert sorted(np.unique(direct.train_x).tolist())[-1] == 255.0  # 16 * 255 / 16
    assert "sklearn" in sys.modules  # the fallback imported it (the direct read need not)


def test_split_is_deterministic_and_seeded():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", split_seed=1)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_y, c.test_y)  # the digits test split does not depend on split_seed


def test_val_size_validated():
    with pytest.raises(LthError, match="val_size 1400"):
        load_dataset("digits", val_size=1400)
    with pytest.raises(LthError, match="val_size -1"):
        load_dataset("digits", val_size=-1)
    with pytest.raises(LthError, match="unknown dataset 'nope'"):
        load_dataset("nope")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="real Fashion-MNIST files not installed")
def test_fashion_mnist_real_files():
    b = load_dataset("fashion-mnist", download=False)
    assert b.train_x.shape == (55000, 1, 28, 28) and b.val_x.shape == (5000, 1, 28, 28)
    assert b.test_x.shape == (10000, 1, 28, 28) and b.input_shape == (1, 28, 28)
    assert int(b.train_y.max()) == 9 and int(b.test_y.min()) == 0


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="real Fashion-MNIST files not installed")
def test_fashion_mnist_checksums_match_local_files():
    from lth.data import fashion_mnist

    for name, accepted in fashion_mnist.SHA256.items():
        assert hashlib.sha256((FASHION_DIR / name).read_bytes()).hexdigest() in accepted


# ---------------------------------------------------------------- batcher


def toy_data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n * 2 * 5 * 5, dtype=torch.float32).reshape(n, 2, 5, 5)
    return x, torch.arange(n)


def test_batcher_deterministic_and_seeded():
    x, y = toy_data()
    a, b, c = Batcher(x, y, 8, seed=3), Batcher(x, y, 8, seed=3), Batcher(x, y, 8, seed=4)
    assert a.iterations_per_epoch == 6
    for it in (0, 5, 6, 17):
        assert torch.equal(a.batch(it)[0], b.batch(it)[0]) and torch.equal(a.batch(it)[1], b.batch(it)[1])
    assert not torch.equal(a.batch(0)[1], c.batch(0)[1])
    assert not torch.equal(a.batch(0)[1], a.batch(6)[1])  # epochs are reshuffled


def test_batcher_epoch_covers_each_index_once():
    x, y = toy_data(48)
    batcher = Batcher(x, y, 8, seed=0)
    for epoch in range(3):
        seen = torch.cat([batcher.batch(epoch * 6 + i)[1] for i in range(6)])
        assert torch.equal(seen.sort().values, torch.arange(48))
    # partial final batch is dropped
    partial = Batcher(*toy_data(50), 8, seed=0)
    seen = torch.cat([partial.batch(i)[1] for i in range(6)])
    assert len(seen) == 48 and len(set(seen.tolist())) == 48


@pytest.mark.parametrize("augment", [False, True])
def test_batcher_random_access_equals_sequential(augment):
    x, y = toy_data()
    sequential = Batcher(x, y, 7, seed=11, augment=augment)
    expected = [sequential.batch(i) for i in range(30)]
    for it in (29, 3, 17, 0, 8, 7, 28):
        fresh = Batcher(x, y, 7, seed=11, augment=augment)
        xb, yb = fresh.batch(it)
        assert torch.equal(xb, expected[it][0]) and torch.equal(yb, expected[it][1])


def test_batcher_validation():
    x, y = toy_data(10)
    for bs in (0, 11):
        with pytest.raises(LthError, match=f"batch size {bs}"):
            Batcher(x, y, bs, seed=0)
    with pytest.raises(LthError, match="iteration -1"):
        Batcher(x, y, 2, seed=0).batch(-1)
    with pytest.raises(LthError, match="must match"):
        Batcher(x, y[:5], 2, seed=0)


def test_batcher_augmentation_deterministic_and_shaped():
    x = torch.randn(64, 3, 8, 8)
    y = torch.arange(64)
    a, b = Batcher(x, y, 16, seed=5, augment=True), Batcher(x, y, 16, seed=5, augment=True)
    plain = Batcher(x, y, 16, seed=5)
    for it in (0, 3, 9):
        xa, ya = a.batch(it)
        assert xa.shape == (16, 3, 8, 8)
        assert torch.equal(xa, b.batch(it)[0]) and torch.equal(ya, plain.batch(it)[1])
        offsets, flips = a.augmentation(it)
        assert torch.equal(xa, crop_flip(x[a.indices(it)], offsets, flips, 4))
    offsets = torch.cat([a.augmentation(i)[0] for i in range(4)])
    assert offsets.min() >= 0 and offsets.max() <= 8 and len(offsets.unique()) > 1
    assert not torch.equal(a.batch(0)[0], x[plain.indices(0)])  # augmentation changed something


def test_crop_flip_matches_hand_computed_shift():
    img = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    # offset (dy, dx) = (pad + 1, pad - 2) means content moves up 1 row and right 2 columns
    pad = 2
    out = crop_flip(img, torch.tensor([[pad + 1, pad - 2]]), torch.tensor([False]), pad)
    expected = torch.zeros(4, 4)
    expected[0:3, 2:4] = img[0, 0, 1:4, 0:2]
    assert torch.equal(out[0, 0], expected)
    flipped = crop_flip(img, torch.tensor([[pad + 1, pad - 2]]), torch.tensor([True]), pad)
    assert torch.equal(flipped[0, 0], expected.flip(1))
    same = crop_flip(img, torch.tensor([[pad, pad]]), torch.tensor([False]), pad)
    assert torch.equal(same, img)
