"""What every execution backend shares: a trial to run, the worker-side function, the driver's events.

A trial is one find-ticket run directory of a study. :func:`run_trial` resumes it from its last
checkpoint when it has one and starts it otherwise, exactly as a study always has, so every
backend produces the same directories and tables (trials are deterministic functions of their
config). Backends only decide *where* trials run; the driver (:func:`lth.experiments.study.continue_study`)
keeps the progress bar and the study's status.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from lth.atomic import current_umask
from lth.errors import LthError

LOG_FILE = "trial.log"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its run directory (absolute, on the driver), its full config and its place in the study.

    ``dense_dir``: the study's shared dense trunk (:class:`lth.experiments.dense_trunk.DenseStore`,
    a directory the worker must see), or None to train round 0 without sharing.
    """

    path: str
    config: dict[str, Any]
    index: int
    label: str = ""
    dense_dir: str | None = None


@dataclass
class TrialResult:
    """What a worker hands back: the trial's per-round table and the round it resumed from (None: fresh).

    ``reused_dense`` / ``trained_dense``: round 0 came from the shared dense trunk / was trained
    by this attempt (both False when it was done before, by an attempt that was killed).
    """

    rounds: list[dict[str, Any]]
    resumed_from: int | None = None
    log: list[str] = field(default_factory=list)
    reused_dense: bool = False
    trained_dense: bool = False


class Events(Protocol):
    """The driver's side: backends report each trial as it starts, finishes or fails."""

    def started(self, spec: TrialSpec) -> None: ...

    def done(self, spec: TrialSpec, result: TrialResult) -> None: ...

    def failed(self, spec: TrialSpec, message: str) -> None: ...


class Backend(Protocol):
    """Runs trials somewhere and reports them to ``events``; returns when every trial is done or failed."""

    name: str

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None: ...


def run_trial(spec: TrialSpec, progress: bool = False, trainer_factory: Any = None, echo: bool = False) -> TrialResult:
    """Resume the trial from its checkpoint, or start it (again) from scratch; return its rounds.

    Every attempt appends to the trial's ``trial.log`` (pid, host, where it resumed). With
    ``echo`` a resume is also told on stderr (on Ray it reaches the driver's console). The
    trial's directory is locked meanwhile (:func:`lth.store.lock.run_lock`): a trial that
    another process is writing fails with LthError instead of being written twice.
    """
    from lth.store.lock import run_lock

    path = Path(spec.path)
    with run_lock(path) if path.is_dir() else nullcontext():  # a new one is locked as soon as it exists
        return _run_trial(spec, progress, trainer_factory, echo)


def _run_trial(spec: TrialSpec, progress: bool, trainer_factory: Any, echo: bool) -> TrialResult:
    from lth.config import make_config
    from lth.experiments.dense_trunk import DenseStore
    from lth.experiments.ticket_search import find_ticket, resume_ticket
    from lth.store import RunDir
    from lth.store.run_dir import checkpoint_listener

    run = RunDir(spec.path)
    lines: list[str] = []
    store = DenseStore(spec.dense_dir) if spec.dense_dir else None

    def log(message: str, loud: bool = False) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        line = f"{stamp} pid {os.getpid()} on {socket.gethostname()}: {message}"
        lines.append(message)
        if run.path.is_dir():
            with open(run.path / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if echo and loud:
            print(f"lth: {spec.label or spec.path}: {message}", file=sys.stderr, flush=True)

    state = run.load_checkpoint() if (run.path / "config.yaml").is_file() else None
    if state is not None:
        resumed: int | None = int(state["round"])
        log(
            f"resuming {spec.label or spec.path} from checkpoint at round {resumed} (stage {state['stage']})", loud=True
        )
        del state
        result = resume_ticket(
            run.path, progress=progress, leave=False, trainer_factory=trainer_factory, dense_store=store
        )
    else:  # never started, or killed before its first checkpoint
        resumed = None
        first: list[bool] = []

        def started(written: RunDir) -> None:  # the run directory exists from its first checkpoint on
            if not first and written.path == run.path:
                first.append(True)
                log(f"started {spec.label or spec.path} from scratch")

        with checkpoint_listener(started):
            result = find_ticket(
                make_config(spec.config),
                out=run.path,
                overwrite=True,
                progress=progress,
                leave=False,
                trainer_factory=trainer_factory,
                dense_store=store,
            )
    if result.dense == "reused":
        log("round 0 (dense) reused from the shared dense trunk")
    log(f"finished {spec.label or spec.path}: {len(result.rounds)} rounds")
    return TrialResult(
        result.rounds, resumed, lines, reused_dense=result.dense == "reused", trained_dense=result.dense == "trained"
    )


# ------------------------------------------------------------------ run directories as bytes


UNPACKED = ".lth-unpacked"  # written last inside an incoming directory: its archive is wholly there
_NOT_PACKED = (".lth-lock", UNPACKED)  # per-host state: a lock belongs to the process on that host
_SIDE_DIR = re.compile(r"\.(?P<name>.+)\.(?P<kind>incoming|old)-[a-z0-9_]{8}")  # tempfile.mkdtemp's suffix


def pack_dir(path: str | Path) -> bytes:
    """A run directory as an uncompressed tar archive (temp files of interrupted writes and locks left out)."""
    buffer = io.BytesIO()
    root = Path(path)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for item in sorted(root.rglob("*")):
            if (
                item.is_file()
                and not (item.name.startswith(".") and item.name.endswith(".tmp"))
                and item.name not in _NOT_PACKED
            ):
                tar.add(item, arcname=str(item.relative_to(root)), recursive=False)
    return buffer.getvalue()


def _strict_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, which also refuses absolute names (it would strip their leading ``/``)."""
    if member.name.startswith(("/", os.sep)):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, path)


def unpack_dir(blob: bytes, target: str | Path) -> None:
    """Replace directory ``target`` by the archive's content.

    The archive is unpacked beside it into ``.NAME.incoming-X`` and marked complete (a file
    written last); then ``target`` moves to ``.NAME.old-X/dir`` and the incoming directory takes
    its place. A kill at any moment leaves the old or the new directory where
    :func:`recover_unpacked` finds it. An archive the ``data`` filter refuses (absolute paths,
    ``..``, links out of the directory) is a one-line LthError and leaves nothing behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.incoming-"))
    try:
        os.chmod(incoming, 0o777 & ~current_umask())  # it becomes the trial directory: not mkdtemp's 0700
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(incoming, filter=_strict_filter)
            else:  # pragma: no cover - Python < 3.10.12
                tar.extractall(incoming)
        with open(incoming / UNPACKED, "w", encoding="utf-8") as mark:
            mark.flush()
            os.fsync(mark.fileno())
    except BaseException as error:
        shutil.rmtree(incoming, ignore_errors=True)
        if isinstance(error, (tarfile.TarError, OSError)):
            raise LthError(f"cannot unpack the archive of {target}: {one_line(error)}") from None
        raise
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / "dir")
        os.replace(incoming, target)
    except OSError as error:  # put back what can be put back; a kill here is left to recover_unpacked
        recover_unpacked(target.parent, target.name)
        raise LthError(f"cannot move the unpacked archive into {target}: {one_line(error)}") from None
    (target / UNPACKED).unlink(missing_ok=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_unpacked(parent: str | Path, name: str | None = None) -> list[Path]:
    """Finish or undo the :func:`unpack_dir` swaps a kill interrupted in ``parent`` (only ``name`` when given).

    For each ``NAME`` with lth's hidden ``.NAME.incoming-X`` / ``.NAME.old-X`` folders beside it:
    a missing ``NAME`` is restored from the newest complete incoming archive, else from the newest
    ``.NAME.old-X/dir``; then the incoming folders and the old ones are removed. Nothing else is
    touched. Returns the directories restored.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    groups: dict[str, dict[str, list[Path]]] = {}
    for entry in parent.iterdir():
        found = _SIDE_DIR.fullmatch(entry.name)
        if found and (name is None or found["name"] == name) and entry.is_dir() and not entry.is_symlink():
            groups.setdefault(found["name"], {"incoming": [], "old": []})[found["kind"]].append(entry)
    restored = []
    for base, side in groups.items():
        target = parent / base
        olds = [old for old in side["old"] if {p.name for p in old.iterdir()} <= {"dir"}]  # lth's layout only
        if not target.exists() and not target.is_symlink():
            complete = [d for d in side["incoming"] if (d / UNPACKED).is_file()]
            saved = [old / "dir" for old in olds if (old / "dir").is_dir()]
            newest = max(complete, key=lambda d: (d / UNPACKED).stat().st_mtime_ns, default=None)
            source = newest or max(saved, key=lambda d: d.stat().st_mtime_ns, default=None)
            if source is not None:
                os.replace(source, target)
                (target / UNPACKED).unlink(missing_ok=True)
                restored.append(target)
        if target.is_dir():
            (target / UNPACKED).unlink(missing_ok=True)
            for leftover in [d for d in side["incoming"] if d.exists()] + olds:
                shutil.rmtree(leftover, ignore_errors=True)
        else:  # nothing could be restored: keep only what might still be someone's data
            for leftover in side["incoming"]:
                if leftover.exists() and not (leftover / UNPACKED).is_file():
                    shutil.rmtree(leftover, ignore_errors=True)
    return restored


def worker_setup(threads: int) -> None:
    """In a worker process: torch threads for this trial's share of the CPUs; no runs index (the driver keeps it)."""
    import torch

    os.environ["LTH_NO_INDEX"] = "1"
    torch.set_num_threads(max(1, threads))


def one_line(error: BaseException) -> str:
    """An error as one line for the driver's report."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".strip()


TrialFunction = Callable[[TrialSpec], TrialResult]
