"""``process``: a pool of local worker processes (``spawn``), one trial per worker at a time."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Optional

from lth.backends.base import Events, TrialResult, TrialSpec, one_line, run_trial, worker_setup
from lth.errors import LthError


def _init(threads: int) -> None:
    worker_setup(threads)


def _work(spec: TrialSpec, echo: bool) -> TrialResult:
    return run_trial(spec, echo=echo)


class ProcessBackend:
    """``workers`` processes (default: one per CPU), each with ``cpus // workers`` torch threads.

    A worker that dies breaks the pool: a new pool is started and the unfinished trials resume
    from their checkpoints (up to ``max_retries`` times).
    """

    name = "process"

    def __init__(self, workers: Optional[int] = None, max_retries: int = 3) -> None:
        cpus = os.cpu_count() or 1
        if workers is not None and workers < 1:
            raise LthError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or cpus
        self.threads = max(1, cpus // self.workers)
        self.max_retries = max_retries
        self.slots = self.workers

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None:
        remaining = list(trials)
        breaks = 0
        context = multiprocessing.get_context("spawn")
        while remaining:
            broken = False
            with ProcessPoolExecutor(min(self.workers, len(remaining)), mp_context=context, initializer=_init,
                                     initargs=(self.threads,)) as pool:
                futures: dict[Future, TrialSpec] = {pool.submit(_work, spec, progress): spec for spec in remaining}
                for spec in remaining[:self.workers]:
                    events.started(spec)
                queued = remaining[self.workers:]
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
