"""Finding dataset files on disk and downloading them safely (checksummed, atomic)."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lth.atomic import current_umask
from lth.errors import LthError

ENV_VAR = "LTH_DATA_DIR"
SYSTEM_DIR = Path("/usr/share/datasets")
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def cache_dir(name: str) -> Path:
    """Download target: ``$LTH_DATA_DIR/<name>`` or else ``~/.cache/lth/datasets/<name>``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser() / name
    return Path.home() / ".cache" / "lth" / "datasets" / name


def dataset_search_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for ``name``'s files, most specific first, without duplicates."""
    dirs: list[Path] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        dirs += [base, base / name]
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        dirs += [base / name, base]
    dirs += [Path.home() / ".cache" / "lth" / "datasets" / name, SYSTEM_DIR / name]
    return list(dict.fromkeys(dirs))


def given_dirs(name: str, data_dir: str | Path) -> list[Path]:
    """Where a ``--data-dir`` may hold ``name``'s files: the directory itself or its ``name`` sub-directory."""
    base = Path(data_dir).expanduser()
    return [base, base / name]


def refuse_incomplete(
    name: str, directories: Sequence[Path], filenames: Sequence[str], present: Callable[[Path, str], bool]
) -> None:
    """LthError naming the first missing file when one of ``directories`` holds some but not all of
    ``filenames``: an incomplete data directory is not silently replaced by another one."""
    for directory in directories:
        have = [f for f in filenames if present(directory, f)]
        if have and len(have) < len(filenames):
            missing = next(f for f in filenames if f not in have)
            raise LthError(
                f"data directory {str(directory)!r} lacks {missing!r} (it holds {have[0]!r}); "
                f"{name} needs {', '.join(filenames)}: complete it or give another --data-dir"
            )


def existing_variant(directory: Path, filename: str) -> Path | None:
    """``directory/filename`` if it exists, else its un-gzipped variant for a ``.gz`` name."""
    candidates = [filename]
    if filename.endswith(".gz"):
        candidates.append(filename[: -len(".gz")])
    for candidate in candidates:
        path = directory / candidate
        if path.is_file():
            return path
    return None


def find_files(name: str, filenames: Sequence[str], data_dir: str | Path | None = None) -> Path | None:
    """The first search directory holding all ``filenames`` (or their un-gzipped variants).

    A ``data_dir`` (or its ``name`` sub-directory) holding only some of them is refused
    (LthError naming a missing file), not passed over for another directory.
    """
    if data_dir is not None:
        given = given_dirs(name, data_dir)
        found = next((d for d in given if all(existing_variant(d, f) is not None for f in filenames)), None)
        if found is not None:
            return found
        refuse_incomplete(name, given, filenames, lambda d, f: existing_variant(d, f) is not None)
    for directory in dataset_search_dirs(name, data_dir):
        if all(existing_variant(directory, f) is not None for f in filenames):
            return directory
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | Sequence[str]) -> Path:
    """Download ``url`` to ``dest`` atomically; accept it only if its SHA-256 is in ``sha256``."""
    dest = Path(dest)
    accepted = [sha256] if isinstance(sha256, str) else list(sha256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.fchmod(fd, 0o666 & ~current_umask())  # a shared data cache: readable as the umask says
    except OSError as exc:
        raise LthError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            # Said only once the server answers, so that an offline failure stays one error line.
            print(f"lth: downloading {url} to {dest.parent}", file=sys.stderr)
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual not in accepted:
            raise LthError(f"checksum mismatch for {url}: expected SHA-256 {' or '.join(accepted)}, got {actual}")
        os.replace(tmp, dest)
    except LthError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts are OSErrors
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise LthError(f"downloading {url} failed: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def obtain(
    name: str,
    files: Mapping[str, str | Sequence[str]],
    mirrors: Sequence[str],
    data_dir: str | Path | None = None,
    allow_download: bool = True,
    hint: str | None = None,
) -> Path:
    """Return a directory holding all ``files`` (name -> accepted SHA-256s), downloading if needed.

    ``mirrors`` are base URLs ending in ``/``, tried in order for each file; ``hint`` replaces
    the file list in the error message.
    """
    found = find_files(name, list(files), data_dir)
    if found is not None:
        return found
    searched = dataset_search_dirs(name, data_dir)
    if not allow_download:
        reason = f"download from {mirrors[0]} failed (downloading is disabled)"
    else:
        failure = _download_all(name, files, mirrors)
        if failure is None:
            return cache_dir(name)
        reason = failure
    raise LthError(  # the advice before the reason: a line cut to its first 1000 characters keeps it
        f"{name} files not found in {', '.join(map(str, searched))}; put {hint or ', '.join(files)} in one of "
        f"those directories or pass --data-dir; {reason}"
    )


def _download_all(name: str, files: Mapping[str, str | Sequence[str]], mirrors: Sequence[str]) -> str | None:
    """Download missing files into the cache dir; return None on success, else why it failed."""
    dest_dir = cache_dir(name)
    for filename, sha in files.items():
        if existing_variant(dest_dir, filename) is not None:
            continue
        errors: list[str] = []
        for base in mirrors:
            url = base + filename
            try:
                download(url, dest_dir / filename, sha)
                break
            except LthError as exc:
                errors.append(str(exc))
        else:
            more = f"; {len(errors) - 1} other mirror(s) failed too" if len(errors) > 1 else ""
            return f"download from {mirrors[0]} failed ({errors[0]}{more})"
    return None
