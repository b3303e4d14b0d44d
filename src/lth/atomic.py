"""Atomic file writes: write a temporary file beside the target, then rename over it.

The file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 less the
process's umask, e.g. 0644 under the usual 022), not ``mkstemp``'s private 0600: run
directories are read by other users, other nodes of a cluster and web servers.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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
