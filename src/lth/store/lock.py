"""One writer per run: an advisory lock file (``.lth-lock``) inside each run, trial or study directory.

:func:`run_lock` holds an exclusive ``flock`` on ``DIR/.lth-lock`` while a process writes ``DIR``;
a second lth process that tries to write the same directory gets a one-line LthError naming
the holder. The kernel drops the lock when its holder dies, even by ``kill -9``, so a killed
run never stays locked. The file itself stays (deleting a lock file races with the next
locker); it holds ``pid N on HOST`` while locked and nothing after. Where ``fcntl`` or
locking is missing (not POSIX, a filesystem without locks, a directory we cannot write)
there is no lock and no error. A process may take the lock of a directory it already holds
(a trial run inside a study driver's call stack): the lock is per process, not per call.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lth.atomic import current_umask
from lth.errors import LthError

LOCK_FILE = ".lth-lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]  # None stands for the missing module

_ATTEMPTS = 4  # a holder that is only probing (lock_holder) lets go within microseconds
_PAUSE = 0.05
_HELD: dict[str, list[int]] = {}  # realpath -> [pid, fd, depth] of the locks this process holds
_GUARD = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _held_here(key: str) -> list[int] | None:
    entry = _HELD.get(key)
    return entry if entry is not None and entry[0] == os.getpid() else None  # not a lock inherited by fork


def _read_holder(fd: int) -> str:
    for _ in range(_ATTEMPTS):  # the holder may be between emptying the file and writing its pid
        try:
            text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        except OSError:
            break
        if text:
            return " ".join(text.split())
        time.sleep(_PAUSE / 5)
    return "pid unknown"


def _open(file: Path) -> int | None:
    try:
        return os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~current_umask())
    except OSError:
        try:  # someone else's lock file that we may read but not write: flock works on it all the same
            return os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no directory, or one we cannot write: nothing to lock (the writes fail on their own)
            return None


def _acquire(path: Path) -> int | None:
    """The locked descriptor of ``path/.lth-lock``; None where locking is impossible; LthError if held."""
    file = path / LOCK_FILE
    attempt = swaps = 0
    while True:
        fd = _open(file)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            attempt += 1
            if attempt < _ATTEMPTS:
                os.close(fd)
                time.sleep(_PAUSE)
                continue
            holder = _read_holder(fd)
            os.close(fd)
            raise LthError(
                f"{path} is in use by another lth process ({holder}); wait for it to finish, or stop it first"
            ) from None
        except OSError:  # ENOLCK, EOPNOTSUPP...: a filesystem without locks
            os.close(fd)
            return None
        try:  # the file we locked must still be the one in the directory (not removed or replaced meanwhile)
            same = os.path.samestat(os.fstat(fd), os.stat(file))
        except OSError:
            same = False
        swaps += 1
        if same or swaps > 10:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError:  # a read-only lock file: locked all the same, without the holder's name
        pass
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # drops the flock


@contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock of the existing directory ``path`` for the body; LthError if another process holds it.

    The message: ``PATH is in use by another lth process (pid N on HOST); wait for it to finish,
    or stop it first``. Take it only once the directory exists (it is not created here).
    """
    path = Path(path)
    if fcntl is None:
        yield
        return
    key = _key(path)
    with _GUARD:
        entry = _held_here(key)
        if entry is not None:
            entry[2] += 1
    if entry is None:
        fd = _acquire(path)
        if fd is None:
            yield
            return
        entry = [os.getpid(), fd, 1]
        with _GUARD:
            _HELD[key] = entry
    try:
        yield
    finally:
        with _GUARD:
            entry[2] -= 1
            last = entry[2] == 0
            if last:
                _HELD.pop(key, None)
        if last:
            _release(entry[1])


def relock(path: Path) -> None:
    """Take the lock again when the lock file this process holds was removed or replaced (e.g. by an overwrite)."""
    key = _key(path)
    with _GUARD:
        entry = _held_here(key)
        if entry is None:
            return
        try:
            if os.path.samestat(os.fstat(entry[1]), os.stat(path / LOCK_FILE)):
                return
        except OSError:
            pass
        fd = _acquire(path)
        if fd is not None:
            os.close(entry[1])
            entry[1] = fd


def lock_holder(path: str | Path) -> str | None:
    """``'pid N on HOST'`` while another process holds the lock of ``path``, else None (this process: None)."""
    file = Path(path) / LOCK_FILE
    if fcntl is None or not file.is_file():
        return None
    with _GUARD:
        if _held_here(_key(Path(path))) is not None:
            return None
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
