"""``process``: a pool of local worker processes (``spawn``), one trial per worker at a time."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from lth.backends.base import Events, TrialResult, TrialSpec, one_line, run_trial, worker_setup
from lth.cpus import available_cpus, requested_threads
from lth.errors import LthError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.5


def _init(threads: int, driver: int) -> None:
    die_with_driver(driver)
    worker_setup(threads)


def die_with_driver(driver: int) -> None:
    """In a worker: exit as soon as the driver process ``driver`` dies, even by ``kill -9``.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; it fires when
    the parent's *thread* that started the worker ends: the pool starts its workers from the
    thread that submits, or from its management thread, and both outlive the pool). Everywhere,
    a daemon thread also checks every ``WATCH_SECONDS`` that the parent is still ``driver``.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watcher alone
            pass
    if os.getppid() != driver:  # the driver died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_driver, args=(driver,), name="lth-watch-driver", daemon=True).start()


def _watch_driver(driver: int) -> None:
    while os.getppid() == driver:
        time.sleep(WATCH_SECONDS)
    os._exit(1)  # orphaned: the driver is gone, and the trial resumes from its checkpoint under the next one


def _work(spec: TrialSpec, echo: bool) -> TrialResult:
    return run_trial(spec, echo=echo)


class ProcessBackend:
    """``workers`` processes (default: one per CPU), each with ``cpus // workers`` torch threads
    (``lth --threads N``: N each).

    A worker that dies breaks the pool: a new pool is started and the unfinished trials resume
    from their checkpoints (up to ``max_retries`` times).
    """

    name = "process"

    def __init__(self, workers: int | None = None, max_retries: int = 3) -> None:
        cpus = available_cpus()
        if workers is not None and workers < 1:
            raise LthError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or cpus
        self.threads = requested_threads() or max(1, cpus // self.workers)
        self.max_retries = max_retries
        self.slots = self.workers

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None:
        remaining = list(trials)
        breaks = 0
        context = multiprocessing.get_context("spawn")
        while remaining:
            broken = False
            with ProcessPoolExecutor(
                min(self.workers, len(remaining)),
                mp_context=context,
                initializer=_init,
                initargs=(self.threads, os.getpid()),
            ) as pool:
                futures: dict[Future, TrialSpec] = {pool.submit(_work, spec, progress): spec for spec in remaining}
                for spec in remaining[: self.workers]:
                    events.started(spec)
                queued = remaining[self.workers :]
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        spec = futures[future]
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        except Exception as error:  # the trial itself failed: report it, run the others
                            events.failed(spec, one_line(error))
                        else:
                            events.done(spec, result)
                        remaining.remove(spec)
                        if queued:
                            events.started(queued.pop(0))
            if broken:
                breaks += 1
                if breaks > self.max_retries:
                    for spec in remaining:
                        events.failed(spec, f"worker processes died {breaks} times")
                    return
