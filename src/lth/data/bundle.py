"""Loading a dataset into normalised tensors with a fixed train/validation split."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.data.registry import DATASETS
from lth.errors import LthError


@dataclass
class DataBundle:
    """All splits of one dataset as tensors on one device (x float32 normalised, y int64)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, int, int]
    num_classes: int
    augment: bool


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LthError(f"invalid device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LthError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


_SHARED: dict[tuple, DataBundle] = {}
_SHARED_LOCK = threading.Lock()


def shared_dataset(name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DataBundle:
    """:func:`load_dataset`, loaded once per process and shared (read-only!) by every caller.

    Ticket searches use it, so that the trials of a study hold one copy of the data and can be
    trained side by side (:mod:`lth.training.lockstep`). The last two datasets are kept.
    """
    from lth.data import download

    # Everything that decides which files are read is part of the key.
    key = (
        name,
        str(data_dir),
        str(_device(device)),
        os.environ.get("LTH_DATA_DIR"),
        os.environ.get("HOME"),
        str(download.SYSTEM_DIR),
    )
    with _SHARED_LOCK:
        if key not in _SHARED:
            if len(_SHARED) >= 2:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = load_dataset(name, data_dir=data_dir, device=device)
        return _SHARED[key]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    val_size: int | None = None,
    split_seed: int = 0,
    download: bool = True,
) -> DataBundle:
    """Load a dataset, hold out validation examples, normalise per channel, move to ``device``."""
    source = DATASETS.get(name)
    dev = _device(device)
    raw = source.load(Path(data_dir).expanduser() if data_dir is not None else None, download)
    n_train = len(raw.train_y)
    val_size = source.val_size if val_size is None else val_size
    if not 0 <= val_size < n_train:
        raise LthError(f"val_size {val_size} is invalid for {name}; it must be in 0..{n_train - 1}")

    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
    val_idx = perm[:val_size].sort().values.numpy()
    train_idx = perm[val_size:].sort().values.numpy()

    def x_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)

    train_x = x_tensor(raw.train_x[train_idx])
    val_x = x_tensor(raw.train_x[val_idx])
    test_x = x_tensor(raw.test_x)
    per_channel = train_x.transpose(0, 1).reshape(train_x.shape[1], -1)
    var, mean = torch.var_mean(per_channel, dim=1, correction=0)
    mean = mean.view(1, -1, 1, 1)
    std = var.sqrt().clamp_min(1e-8).view(1, -1, 1, 1)

    def prepare_x(x: torch.Tensor) -> torch.Tensor:
        return x.sub_(mean).div_(std).to(dev)

    def prepare_y(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(dev)

    return DataBundle(
        name=name,
        train_x=prepare_x(train_x),
        train_y=prepare_y(raw.train_y[train_idx]),
        val_x=prepare_x(val_x),
        val_y=prepare_y(raw.train_y[val_idx]),
        test_x=prepare_x(test_x),
        test_y=prepare_y(raw.test_y),
        input_shape=source.input_shape,
        num_classes=source.num_classes,
        augment=source.augment,
    )
