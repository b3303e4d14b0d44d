"""The user's own data as a :class:`DataBundle`: a dataset name, a bundle, tensors or loaders.

Accepted shapes of ``data``:

- an lth dataset name (``"digits"``, ``"mnist"``, ...): loaded with :func:`load_dataset`;
- a :class:`DataBundle`: moved to the device;
- ``((x_train, y_train), (x_test, y_test))`` or ``((x_train, y_train), (x_val, y_val),
  (x_test, y_test))`` of tensors or numpy arrays;
- the same 2- or 3-tuples with, in place of an ``(x, y)`` pair, a ``DataLoader`` or any
  iterable of ``(x, y)`` batches. Loaders are read once into tensors: the data must fit in
  memory (on the training device). A shuffling loader gives a different order each read, so
  the validation hold-out is reproducible only for a non-shuffling train loader or an
  explicit validation split.

User tensors are not normalised: x is only cast to float32, y to int64.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lth.data.bundle import DataBundle, _device, load_dataset
from lth.errors import LthError

ACCEPTED = (
    "an lth dataset name, a DataBundle, ((x_train, y_train), (x_test, y_test)) or "
    "((x_train, y_train), (x_val, y_val), (x_test, y_test)) of tensors/arrays, or the same "
    "2- or 3-tuples of DataLoaders / iterables of (x, y) batches"
)
MAX_VAL_SIZE = 5000
_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available; anything else must name a usable torch device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _device(device)


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _is_pair(split: Any) -> bool:
    return isinstance(split, (tuple, list)) and len(split) == 2 and all(_is_array(v) for v in split)


def _tensor(value: Any, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        raise LthError(f"{what} of type {type(value).__name__} cannot be turned into a tensor; {ACCEPTED}") from None


def _materialise(split: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split: an (x, y) pair or an iterable of (x, y) batches, into two tensors."""
    if _is_pair(split):
        return _tensor(split[0], f"x_{what}"), _tensor(split[1], f"y_{what}")
    if _is_array(split) or isinstance(split, (str, bytes, dict)) or not isinstance(split, Iterable):
        raise LthError(
            f"the {what} split is a {type(split).__name__}; each split must be an (x, y) pair "
            f"or a DataLoader / iterable of (x, y) batches; data may be {ACCEPTED}"
        )
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for i, batch in enumerate(split):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise LthError(
                f"batch {i} of the {what} loader is a {type(batch).__name__}; loaders must yield (x, y) pairs"
            )
        x, y = _tensor(batch[0], f"x_{what}"), _tensor(batch[1], f"y_{what}")
        xs.append(x.cpu())
        ys.append(y.reshape(-1).cpu() if y.dim() == 2 and y.shape[1] == 1 else y.cpu())
    if not xs:
        raise LthError(f"the {what} loader yielded no batches; every split needs at least one example")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError:
        raise LthError(
            f"the batches of the {what} loader have inconsistent shapes; they must differ only in batch size"
        ) from None


def _check_split(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() < 2:
        raise LthError(
            f"x_{what} has shape {tuple(x.shape)}; it must be (examples, features...) with at least 2 dimensions"
        )
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1:
        raise LthError(
            f"y_{what} has shape {tuple(y.shape)}; labels must be a 1-D vector of class indices (not one-hot)"
        )
    if x.shape[0] != y.shape[0]:
        raise LthError(f"x_{what} has {x.shape[0]} examples but y_{what} has {y.shape[0]}; they must match")
    if x.shape[0] == 0:
        raise LthError(f"the {what} split is empty; every split needs at least one example")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in _INTEGER or x.dtype == torch.bool):
        raise LthError(f"x_{what} has dtype {x.dtype}; inputs must be real numbers")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            example = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0])
            raise LthError(
                f"x_{what} holds {x[bad][0].item()!r} (first in example {example}); "
                "inputs must be finite numbers, without NaN or infinity"
            )
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise LthError(f"y_{what} holds non-integer labels; labels must be class indices 0, 1, 2, ...")
    elif y.dtype not in _INTEGER and y.dtype != torch.bool:
        raise LthError(f"y_{what} has dtype {y.dtype}; labels must be integer class indices")
    y = y.to(torch.int64)
    if bool((y < 0).any()):
        raise LthError(f"y_{what} holds the negative label {int(y.min())}; labels must be class indices 0, 1, 2, ...")
    return x.to(torch.float32), y


def _default_val_size(n_train: int) -> int:
    return min(MAX_VAL_SIZE, max(1, round(0.1 * n_train)))


def _move(bundle: DataBundle, device: torch.device) -> DataBundle:
    fields = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    moved = {name: getattr(bundle, name).to(device) for name in fields}
    return DataBundle(
        name=bundle.name,
        input_shape=bundle.input_shape,
        num_classes=bundle.num_classes,
        augment=bundle.augment,
        **moved,
    )


def as_bundle(
    data: Any,
    device: str | torch.device,
    val_size: int | None = None,
    seed: int = 0,
    name: str = "custom",
    data_dir: str | Path | None = None,
) -> DataBundle:
    """Turn ``data`` (see the module docstring for the accepted shapes) into a DataBundle on ``device``.

    Without a validation split, ``val_size`` training examples (default 10%, at most 5,000, at
    least 1) are held out with a permutation seeded by ``seed``. ``num_classes`` is the largest
    label + 1 over all splits; ``input_shape`` is ``x.shape[1:]``.
    """
    dev = resolve_device(device)
    if isinstance(data, str):
        return load_dataset(data, data_dir=data_dir, device=dev, val_size=val_size, split_seed=seed)
    if isinstance(data, DataBundle):
        return _move(data, dev)
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3) or _is_pair(data):
        raise LthError(f"cannot use data of type {type(data).__name__}{_shape_hint(data)}; give {ACCEPTED}")
    names = ("train", "test") if len(data) == 2 else ("train", "val", "test")
    splits = {what: _check_split(*_materialise(split, what), what) for what, split in zip(names, data)}
    shapes = {what: tuple(x.shape[1:]) for what, (x, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{what} {shape}" for what, shape in shapes.items())
        raise LthError(f"the splits' inputs have different shapes ({described}); they must be equal")
    if "val" in splits:
        if val_size is not None:
            raise LthError(f"val_size={val_size} was given but the data has its own validation split; drop one of them")
    else:
        x, y = splits.pop("train")
        n = x.shape[0]
        size = _default_val_size(n) if val_size is None else val_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < n:
            raise LthError(
                f"val_size {size!r} is invalid for {n} training examples; it must be an integer in 1..{n - 1}"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)
        val_idx, train_idx = perm[:size].sort().values, perm[size:].sort().values
        splits = {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), **splits}
    num_classes = max(int(y.max()) for _, y in splits.values()) + 1
    return DataBundle(
        name=name,
        train_x=splits["train"][0].to(dev),
        train_y=splits["train"][1].to(dev),
        val_x=splits["val"][0].to(dev),
        val_y=splits["val"][1].to(dev),
        test_x=splits["test"][0].to(dev),
        test_y=splits["test"][1].to(dev),
        input_shape=shapes["test"],  # type: ignore[arg-type]  # any tuple: x.shape[1:]
        num_classes=num_classes,
        augment=False,
    )


def _shape_hint(data: Any) -> str:
    if _is_pair(data):
        return " (a single (x, y) pair: a test split is missing)"
    if isinstance(data, (tuple, list)):
        return f" with {len(data)} elements"
    return ""
