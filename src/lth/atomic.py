"""Atomic file writes: write a temporary file beside the target, then rename over it.

The file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 less the
process's umask, e.g. 0644 under the usual 022), not ``mkstemp``'s private 0600: run
directories are read by other users, other nodes of a cluster and web servers.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lth.errors import LthError


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


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _full_disk(error: BaseException) -> str | None:
    """ "no space left on device" (or "disk quota exceeded") if ``error`` comes from a write that
    found the disk full, else None. The OSError may be ``error`` itself or what it was raised
    from or while handling: torch.save, for one, raises its own RuntimeError ("... inline_container
    ... unexpected pos ...") while handling the OSError of the failed write."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return _FULL[cause.errno]
        cause = cause.__cause__ or cause.__context__
    return None


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str) -> None:
    """Write through ``write(handle)`` to a temp file beside ``path``, then rename it over ``path``.

    Whatever fails, the temp file is removed and ``path`` is untouched. A full disk (ENOSPC,
    EDQUOT) becomes one LthError line, "no space left on device while writing PATH".
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if _full_disk(error):
            raise LthError(f"{_full_disk(error)} while writing {path}") from None
        raise
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if _full_disk(error):
            raise LthError(f"{_full_disk(error)} while writing {path}") from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the whole new one."""
    _atomic(path, lambda handle: handle.write(text), "w")


def atomic_write_csv(path: str | Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV with the header ``fields`` ("\\n" line ends), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the whole new one."""
    _atomic(path, lambda handle: handle.write(data), "wb")


class _Recorder:
    """A file handle that remembers the OSError of a failed write, whatever torch raises over it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell, ...: the file's own
        return getattr(self.handle, name)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with the same all-or-nothing guarantee (and the same one line for a full disk)."""
    import torch  # here: the modules that only write text (the store, downloads) load without torch

    def save(handle: Any) -> None:
        recorder = _Recorder(handle)
        try:
            torch.save(obj, recorder)
        except RuntimeError as error:
            if recorder.error is not None:  # torch's error over the failed write: raise the write's own
                raise recorder.error from error
            raise

    _atomic(path, save, "wb")
