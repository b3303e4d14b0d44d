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
import shutil
import socket
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

LOG_FILE = "trial.log"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its run directory (absolute, on the driver), its full config and its place in the study."""

    path: str
    config: dict[str, Any]
    index: int
    label: str = ""


@dataclass
class TrialResult:
    """What a worker hands back: the trial's per-round table and the round it resumed from (None: fresh)."""

    rounds: list[dict[str, Any]]
    resumed_from: Optional[int] = None
    log: list[str] = field(default_factory=list)


class Events(Protocol):
    """The driver's side: backends report each trial as it starts, finishes or fails."""

    def started(self, spec: TrialSpec) -> None: ...

    def done(self, spec: TrialSpec, result: TrialResult) -> None: ...

    def failed(self, spec: TrialSpec, message: str) -> None: ...


class Backend(Protocol):
    """Runs trials somewhere and reports them to ``events``; returns when every trial is done or failed."""

    name: str

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None: ...


def run_trial(spec: TrialSpec, progress: bool = False, trainer_factory: Any = None,
              echo: bool = False) -> TrialResult:
    """Resume the trial from its checkpoint, or start it (again) from scratch; return its rounds.

    Every attempt appends to the trial's ``trial.log`` (pid, host, where it resumed). With
    ``echo`` a resume is also told on stderr (on Ray it reaches the driver's console).
    """
    from lth.config import make_config
    from lth.experiments.ticket_search import find_ticket, resume_ticket
    from lth.store import RunDir
    from lth.store.run_dir import checkpoint_listener

    run = RunDir(spec.path)
    lines: list[str] = []

    def log(message: str, loud: bool = False) -> None:
        line = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} pid {os.getpid()} on {socket.gethostname()}: {message}"
        lines.append(message)
        if run.path.is_dir():
            with open(run.path / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if echo and loud:
            print(f"lth: {spec.label or spec.path}: {message}", file=sys.stderr, flush=True)

    state = run.load_checkpoint() if (run.path / "config.yaml").is_file() else None
    if state is not None:
        resumed: Optional[int] = int(state["round"])
        log(f"resuming {spec.label or spec.path} from checkpoint at round {resumed} (stage {state['stage']})", loud=True)
        del state
        result = resume_ticket(run.path, progress=progress, leave=False, trainer_factory=trainer_factory)
    else:  # never started, or killed before its first checkpoint
        resumed = None
        first: list[bool] = []

        def started(written: RunDir) -> None:  # the run directory exists from its first checkpoint on
            if not first and written.path == run.path:
                first.append(True)
                log(f"started {spec.label or spec.path} from scratch")

        with checkpoint_listener(started):
            result = find_ticket(make_config(spec.config), out=run.path, overwrite=True, progress=progress,
                                 leave=False, trainer_factory=trainer_factory)
    log(f"finished {spec.label or spec.path}: {len(result.rounds)} rounds")
    return TrialResult(result.rounds, resumed, lines)


# ------------------------------------------------------------------ run directories as bytes


def pack_dir(path: str | Path) -> bytes:
    """A run directory as an uncompressed tar archive (temp files of interrupted writes left out)."""
    buffer = io.BytesIO()
    root = Path(path)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for item in sorted(root.rglob("*")):
            if item.is_file() and not (item.name.startswith(".") and item.name.endswith(".tmp")):
                tar.add(item, arcname=str(item.relative_to(root)), recursive=False)
    return buffer.getvalue()


def unpack_dir(blob: bytes, target: str | Path) -> None:
    """Replace directory ``target`` by the archive's content: unpacked beside it, then renamed into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.incoming-"))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(incoming, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            tar.extractall(incoming)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / "dir")
    os.replace(incoming, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
