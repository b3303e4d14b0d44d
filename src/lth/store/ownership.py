"""What lth owns on disk: the marker of its run and study directories and the entries it writes there.

lth replaces (``--overwrite``) or deletes (``lth runs rm``) a directory only when it carries
lth's marker file (:data:`MARKER`, with lth's format version), only while no lth process holds
it, and then only the entries that lth itself writes there (config, tables, masks, weights,
plots, ...). Anything else found inside (a user's notes, a symbolic link) is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeVar

from lth import jsonio
from lth.atomic import atomic_write_text
from lth.errors import LthError
from lth.store.lock import LOCK_FILE, lock_holder, relock, run_lock

MARKER = ".lth-dir.json"
FORMAT_VERSION = 1
Kind = Literal["run", "study"]
T = TypeVar("T")

_TEMP = r"\..+\.tmp"  # files of atomic writes a kill interrupted
_PLOTS = (
    r"(accuracy_vs_weights_remaining|learning_curves|early_stop_iteration|first_layer_mask|"
    r"layers_weights_remaining|supermask_accuracy_vs_kept|supermask_heatmap|weights_scatter|weights_hist)"
    r"[\w.-]*\.(png|pdf|svg)"
)
_LOCK = re.escape(LOCK_FILE)


@dataclass(frozen=True)
class Layout:
    """The entries lth writes in one kind of directory: file name patterns, and sub-directories by name."""

    files: str
    dirs: dict[str, Callable[[Path], Layout | None]] = field(default_factory=dict)

    def owns_file(self, name: str) -> bool:
        return re.fullmatch(self.files, name) is not None

    def sub_layout(self, path: Path) -> Layout | None:
        for pattern, layout in self.dirs.items():
            if re.fullmatch(pattern, path.name):
                return layout(path)
        return None


def _files(*names: str) -> str:
    return "|".join(names)


_MASKS = Layout(_files(r"round_\d+\.pt", r"current\.pt", _TEMP))
_WEIGHTS = Layout(_files(r"[\w.-]+\.pt", _TEMP))
_TENSORBOARD = Layout(_files(r"events\.out\.tfevents\..+", _TEMP))
_RUN_FILES = _files(
    re.escape(MARKER),
    _LOCK,
    _TEMP,
    _PLOTS,
    r"config\.yaml",
    r"status\.json",
    r"metrics\.csv",
    r"rounds\.json",
    r"logged\.json",
    r"checkpoint\.pt",
    r"trial\.log",
    r"mlflow_run_id",
    r"supermask_eval\.(json|csv)",
    r"supermask_train\.json",
    r"mask\.pt",
    r"stability\.(json|csv)",
    r"prune_at_init\.json",
)


def _run_layout(path: Path) -> Layout:
    return RUN


def _marked_run(path: Path) -> Layout | None:
    return RUN if read_marker(path, "run") is not None else None


RUN = Layout(
    _RUN_FILES,
    {
        "masks": lambda p: _MASKS,
        "weights": lambda p: _WEIGHTS,
        "tensorboard": lambda p: _TENSORBOARD,
        "controls": lambda p: Layout(_TEMP, {r"[\w.-]+": _run_layout}),
        "dense": _marked_run,  # the dense run inside a supermask evaluation
        "branches": lambda p: Layout(_TEMP, {r"[\w.-]+": _marked_run}),  # lth branch: runs off this search
        "stability": _marked_run,  # lth stability --from this search: its default output
    },
)
_EXPERIMENT = Layout(_TEMP, {r"trial_\d+": _marked_run})
DENSE_STORE = Layout(_files(r"[0-9a-f]{64}\.pt", _TEMP))  # lth.experiments.dense_trunk.DenseStore's files
STUDY = Layout(
    _files(
        re.escape(MARKER),
        _LOCK,
        _TEMP,
        _PLOTS,
        r"study\.yaml",
        r"status\.json",
        r"summary\.(json|csv)",
        r"\.lth-probe-[0-9a-f]+",
    ),
    # a robust study's trials sit at the top (trial_NN), a session's one level down (EXPERIMENT/trial_NN);
    # dense/ is the shared dense trunk (lth.experiments.dense_trunk; experiments' names start with digits)
    {r"trial_\d+": _marked_run, r"dense": lambda p: DENSE_STORE, r"[^.].*": lambda p: _EXPERIMENT},
)
LAYOUTS: dict[str, Layout] = {"run": RUN, "study": STUDY}


def write_marker(path: str | Path, kind: Kind) -> None:
    """Mark ``path`` as an lth directory of ``kind`` (written first, removed last)."""
    from lth import __version__

    marker = {
        "lth": kind,
        "format": FORMAT_VERSION,
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(Path(path) / MARKER, jsonio.dumps(marker, indent=2) + "\n")


def read_marker(path: str | Path, kind: Kind | None = None) -> dict | None:
    """The marker of an lth directory (of ``kind``, when given); None when there is none or it is not lth's."""
    file = Path(path) / MARKER
    if file.is_symlink() or not file.is_file():
        return None
    try:
        marker = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("lth") not in LAYOUTS or not isinstance(marker.get("format"), int):
        return None
    if kind is not None and marker["lth"] != kind:
        return None
    return marker


def check_owned(path: Path, what: str) -> Layout:
    """The layout of ``path`` if lth may replace or delete it now; LthError naming the reason otherwise."""
    if path.is_symlink():
        raise LthError(
            f"{what} {str(path)!r} is a symbolic link; lth replaces or deletes only real directories "
            "it created (give the link's target, or another path)"
        )
    marker = read_marker(path)
    if marker is None:
        raise LthError(
            f"{what} {str(path)!r} was not created by lth (it has no {MARKER} marker); lth replaces or "
            "deletes only its own run and study directories: move it away yourself or choose another path"
        )
    if marker["format"] > FORMAT_VERSION:
        raise LthError(
            f"{what} {str(path)!r} was written by a newer lth (format {marker['format']}); upgrade lth "
            "to replace or delete it"
        )
    holder = lock_holder(path)
    if holder is not None:
        raise LthError(f"{what} {str(path)!r} is in use by a running lth process ({holder}); stop it first")
    return LAYOUTS[marker["lth"]]


def remove_owned(path: str | Path, layout: Layout | None = None, keep_lock: bool = False) -> list[Path]:
    """Delete the entries lth wrote in the lth directory ``path`` and return those it kept.

    Symbolic links are never followed, unknown entries are kept, and the marker goes last (it
    stays when something is kept), so an interrupted removal can be repeated. ``path`` itself is
    removed when nothing is kept. ``keep_lock``: leave the top-level lock file (held by this
    process while it replaces the directory) in place.
    """
    path = Path(path)
    if layout is None:
        marker = read_marker(path)
        if marker is None:
            raise LthError(f"{str(path)!r} was not created by lth (it has no {MARKER} marker)")
        layout = LAYOUTS[marker["lth"]]
    kept: list[Path] = []
    for entry in sorted(path.iterdir(), key=lambda p: p.name == MARKER):
        if entry.is_symlink():
            kept.append(entry)
        elif entry.is_dir():
            sub = layout.sub_layout(entry)
            if sub is None:
                kept.append(entry)
            else:
                kept += remove_owned(entry, sub)
        elif keep_lock and entry.name == LOCK_FILE:
            continue
        elif entry.name == MARKER and kept:
            continue  # a directory lth keeps (for the entries it did not write) stays marked as lth's
        elif layout.owns_file(entry.name):
            entry.unlink(missing_ok=True)
        else:
            kept.append(entry)
    if not kept and not any(path.iterdir()):
        path.rmdir()
    return kept


def describe_kept(kept: list[Path], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 2 more`` for a warning about entries left in place."""
    names = ", ".join(repr(str(p)) for p in kept[:limit])
    return names + (f" and {len(kept) - limit} more" if len(kept) > limit else "")


def claim_directory(path: str | Path, kind: Kind, overwrite: bool) -> Path:
    """Make ``path`` a fresh, marked lth directory of ``kind``.

    An existing non-empty directory is refused unless ``overwrite``; then it must be an lth
    directory that no lth process is using, and only lth's entries in it are replaced (the
    rest is kept, with a warning). Returns the path.
    """
    import sys

    path = Path(path)
    what = "run directory" if kind == "run" else "study directory"
    if path.exists() and not path.is_dir():
        raise LthError(f"output path {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            hint = (
                "pass --overwrite to replace it"
                if kind == "run"
                else "pass --resume to continue it or --overwrite to replace it"
            )
            raise LthError(f"{what} {str(path)!r} already exists; {hint}")
        layout = check_owned(path, what)
        try:
            kept = remove_owned(path, layout, keep_lock=True)
        except OSError as error:
            raise LthError(f"cannot replace {what} {str(path)!r}: {error.strerror} ({error.filename})") from None
        if kept:
            print(
                f"lth: warning: kept {len(kept)} entries in {str(path)!r} that lth did not write: "
                f"{describe_kept(kept)}",
                file=sys.stderr,
            )
    elif path.is_symlink() and overwrite:
        raise LthError(f"{what} {str(path)!r} is a symbolic link; give the link's target")
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_marker(path, kind)
    except OSError as error:
        raise LthError(f"cannot write to output directory {str(path)!r}: {error.strerror}") from None
    return path


@contextmanager
def created_and_locked(path: str | Path, create: Callable[[], T]) -> Iterator[T]:
    """``create()`` the directory ``path`` (e.g. ``RunDir.create``) and hold its lock for the body.

    A directory that already holds something is locked *before* ``create`` may replace it, so
    that an ``--overwrite`` never replaces a run another process is writing; a new one is
    locked as soon as it exists.
    """
    path = Path(path)
    try:  # only lth's own directories are locked before create(): nothing is written into a foreign one
        existing = path.is_dir() and any(path.iterdir()) and read_marker(path) is not None
    except OSError:
        existing = False
    if existing:
        with run_lock(path):
            made = create()
            relock(path)
            yield made
    else:
        made = create()
        with run_lock(path):
            yield made
