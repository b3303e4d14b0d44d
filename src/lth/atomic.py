"""Atomic file writes: write a temporary file beside the target, then rename over it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the whole new one."""
    _atomic(path, lambda handle: handle.write(text), "w")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data), "wb")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with the same all-or-nothing guarantee."""
    _atomic(path, lambda handle: torch.save(obj, handle), "wb")
