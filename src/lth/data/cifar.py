"""Safe reader for the CIFAR-10 python version (restricted unpickling, safe tar extraction)."""

from __future__ import annotations

import codecs
import importlib
import pickle
import shutil
import sys
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from lth.errors import LthError

BATCHES_DIRNAME = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ROWS_PER_BATCH = 10000  # read at call time, so tests may monkeypatch it
ROW_BYTES = 3 * 32 * 32
NUM_CLASSES = 10

# (module, name) pairs a CIFAR batch pickle may reference -> (real module, attribute).
_ALLOWED: dict[tuple[str, str], tuple[str, str]] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = ("multiarray", "_reconstruct")
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = ("numeric", "_frombuffer")
_ALLOWED[("numpy", "ndarray")] = ("numpy", "ndarray")
_ALLOWED[("numpy", "dtype")] = ("numpy", "dtype")
# Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1").
_ALLOWED[("_codecs", "encode")] = ("_codecs", "encode")


class _Forbidden(Exception):
    pass


def _resolve(kind: str, attr: str) -> Any:
    if kind == "numpy":
        return getattr(np, attr)
    if kind == "_codecs":
        return codecs.encode
    try:  # numpy >= 2 moved numpy.core to numpy._core
        module = importlib.import_module(f"numpy._core.{kind}")
    except ImportError:
        module = importlib.import_module(f"numpy.core.{kind}")
    return getattr(module, attr)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy array constructors CIFAR batches need."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise _Forbidden(f"{module}.{name}")
        return _resolve(*target)


def _unpickle(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle, encoding="bytes").load()
    except _Forbidden as exc:
        raise LthError(
            f"CIFAR-10 file {path} references {exc}, which is not allowed; "
            "only numpy array data may appear in a CIFAR-10 batch"
        ) from None
    except OSError as exc:
        raise LthError(f"cannot read CIFAR-10 file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # any unpickling failure means a corrupt file
        raise LthError(f"CIFAR-10 file {path} is not a valid pickled batch ({exc!r})") from None


def _get(batch: dict, key: str) -> Any:
    return batch.get(key.encode(), batch.get(key))


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into ``(x uint8 (N,3,32,32), y int64 (N,))``, validating its contents."""
    path = Path(path)
    batch = _unpickle(path)
    rows = ROWS_PER_BATCH
    if not isinstance(batch, dict):
        raise LthError(f"CIFAR-10 file {path} holds a {type(batch).__name__}, expected a dict")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    good = isinstance(data, np.ndarray) and data.dtype == np.uint8
    if not good or data.shape != (rows, ROW_BYTES):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LthError(f"CIFAR-10 file {path} has bad 'data': expected uint8 ({rows}, {ROW_BYTES}), got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise LthError(f"CIFAR-10 file {path} has non-integer 'labels'") from None
    if y.shape != (rows,) or (rows and (y.min() < 0 or y.max() >= NUM_CLASSES)):
        raise LthError(f"CIFAR-10 file {path} has bad 'labels': expected {rows} values in 0..{NUM_CLASSES - 1}")
    return data.reshape(rows, 3, 32, 32).copy(), y


def find_batches_dir(directory: Path) -> Path | None:
    """``directory/cifar-10-batches-py`` or ``directory`` itself if it holds all batch files."""
    for candidate in (directory / BATCHES_DIRNAME, directory):
        if all((candidate / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
            return candidate
    return None


def read_cifar10(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a CIFAR-10 batches dir (or its parent) into ``(train_x, train_y, test_x, test_y)``."""
    directory = Path(directory)
    found = find_batches_dir(directory)
    if found is None:
        raise LthError(f"{directory} does not hold the CIFAR-10 batches {', '.join((*TRAIN_FILES, TEST_FILE))}")
    parts = [read_cifar_batch(found / f) for f in TRAIN_FILES]
    test_x, test_y = read_cifar_batch(found / TEST_FILE)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return train_x, train_y, test_x, test_y


def _check_members(tar: tarfile.TarFile, path: Path) -> None:
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise LthError(
                f"CIFAR-10 archive {path} holds unsafe entry {member.name!r}; "
                "only plain files and directories inside the archive are allowed"
            )


def extract_cifar_tarball(tar_path: str | Path, dest: str | Path | None = None) -> Path:
    """Safely extract the official tarball next to it (or into ``dest``); return the batches dir."""
    tar_path = Path(tar_path)
    dest = Path(dest) if dest is not None else tar_path.parent
    final = dest / BATCHES_DIRNAME
    if find_batches_dir(final) == final:
        return final
    try:
        dest.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=dest, prefix=".cifar-extract-"))
    except OSError as exc:
        raise LthError(f"cannot extract CIFAR-10 into {dest}: {exc.strerror or exc}") from None
    try:
        try:
            with tarfile.open(tar_path, "r:*") as tar:
                _check_members(tar, tar_path)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(work, filter="data")
                else:  # members were checked above
                    tar.extractall(work)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise LthError(f"CIFAR-10 archive {tar_path} cannot be extracted ({exc})") from None
        extracted = work / BATCHES_DIRNAME
        if find_batches_dir(extracted) != extracted:
            raise LthError(f"CIFAR-10 archive {tar_path} does not contain {BATCHES_DIRNAME}/ with all batches")
        if final.exists():  # an incomplete copy, maybe the user's own: set aside, never deleted
            aside = final.with_name(f"{final.name}.incomplete-{datetime.now():%Y%m%d-%H%M%S}")
            final.replace(aside)
            print(
                f"lth: warning: {final} was incomplete; moved it to {aside.name} and extracted a fresh copy",
                file=sys.stderr,
            )
        extracted.replace(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
