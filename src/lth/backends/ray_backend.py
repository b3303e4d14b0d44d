"""``ray``: each trial is a Ray Core task; a worker that dies is retried and resumes from its checkpoint.

Filesystems. With a filesystem every node sees (NFS, a shared volume: the default when the
worker can see the driver's probe file), workers write the trial directory in place. Without
one (``shared_fs=False``, or detected per task: the probe file is missing on that node), the
worker runs the trial in a local temp directory, sends every new checkpoint (the whole trial
directory as a tar archive) to a :class:`TrialStore` actor pinned to the driver's node, which
puts it into place on the driver's disk, and returns the finished directory to the driver.
A retried task (or a later ``lth resume``) starts from what the store holds. Such a trial does
not share the study's dense trunk (STUDY/dense/, :mod:`lth.experiments.dense_trunk`): it trains
its own round 0.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from lth.backends.base import Events, TrialResult, TrialSpec, one_line, pack_dir, run_trial, unpack_dir, worker_setup
from lth.errors import LthError

INSTALL_HINT = "the ray backend needs Ray: pip install 'lth[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or an LthError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LthError(INSTALL_HINT) from None
    return ray


class TrialStore:
    """A Ray actor on the driver's node: trial directories in and out of the driver's disk, as tar archives."""

    def fetch(self, path: str) -> bytes | None:
        """The trial directory as it stands (None: nothing there yet)."""
        return pack_dir(path) if (Path(path) / "config.yaml").is_file() else None

    def push(self, path: str, blob: bytes) -> None:
        """Put a snapshot (taken at a checkpoint) into place."""
        unpack_dir(blob, path)


def ray_trial(
    spec: TrialSpec, probe: str | None, shared_fs: bool | None, store: Any, threads: int, echo: bool = True
) -> tuple[TrialResult, bytes | None]:
    """The task: run the trial in place (shared filesystem) or in a temp dir mirrored through ``store``."""
    worker_setup(threads)
    if shared_fs is None:
        shared_fs = probe is not None and Path(probe).is_file()
    if shared_fs:
        return run_trial(spec, echo=echo), None
    import ray

    from lth.store.run_dir import checkpoint_listener

    spec = replace(spec, dense_dir=None)  # the study's shared dense trunk is on the driver's disk: train round 0 here
    with tempfile.TemporaryDirectory(prefix="lth-trial-") as tmp:
        local = Path(tmp) / "trial"
        blob = ray.get(store.fetch.remote(spec.path))
        if blob is not None:
            unpack_dir(blob, local)
        with checkpoint_listener(
            lambda run: ray.get(store.push.remote(spec.path, pack_dir(run.path))) if Path(run.path) == local else None
        ):
            result = run_trial(replace(spec, path=str(local)), echo=echo)
        return result, pack_dir(local)


class RayBackend:
    """Trials as Ray tasks with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs each.

    ``address``: a running cluster (``auto``, ``HOST:PORT``, ``ray://...``); None starts a local
    Ray unless one is initialised already (then it is used as it is). ``shared_fs``: True, False,
    or None to detect it per task.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_trial: float | None = None,
        gpus_per_trial: float | None = None,
        shared_fs: bool | None = None,
        max_retries: int = 3,
    ) -> None:
        for flag, value in (("--cpus-per-trial", cpus_per_trial), ("--gpus-per-trial", gpus_per_trial)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise LthError(f"{flag} must be a finite number >= 0, got {value}")
        if cpus_per_trial is not None and cpus_per_trial == 0 and not gpus_per_trial:
            raise LthError("--cpus-per-trial 0 needs --gpus-per-trial: a trial must reserve something")
        self.ray = import_ray()
        self.address = address
        self.cpus = 1.0 if cpus_per_trial is None else cpus_per_trial
        self.gpus = gpus_per_trial or 0.0
        self.shared_fs = shared_fs
        self.max_retries = max_retries
        self.slots = 1

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, log_to_driver=True, include_dashboard=False)
        except Exception as error:  # ConnectionError, ValueError, RuntimeError from a bad address
            where = f"at {self.address!r}" if self.address else "locally"
            raise LthError(f"cannot start or reach Ray {where}: {one_line(error)}") from None

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None:
        ray = self.ray
        self._connect()
        cpus = ray.cluster_resources().get("CPU", 1)
        self.slots = max(1, int(cpus // self.cpus)) if self.cpus else len(trials)
        probe = store = None
        if self.shared_fs is not False:
            if trials:  # in the study directory (the trials' common parent), never inside a trial's directory
                root = Path(os.path.commonpath([str(Path(t.path).parent) for t in trials]))
                probe = root / f".lth-probe-{uuid.uuid4().hex}"
                probe.parent.mkdir(parents=True, exist_ok=True)
                probe.write_text("")
        if self.shared_fs is not True:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            store = (
                ray.remote(num_cpus=0)(TrialStore)
                .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
                .remote()
            )
        task = ray.remote(ray_trial).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries, retry_exceptions=False
        )
        threads = max(1, int(self.cpus))
        try:
            refs = {
                task.remote(spec, str(probe) if probe else None, self.shared_fs, store, threads, progress): spec
                for spec in trials
            }
            for spec in trials[: self.slots]:
                events.started(spec)
            queued = trials[self.slots :]
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in ready:
                    spec = refs[ref]
                    try:
                        result, blob = ray.get(ref)
                    except Exception as error:  # the trial raised, or its worker died more than max_retries times
                        cause = getattr(error, "cause", None)
                        events.failed(spec, one_line(cause if isinstance(cause, BaseException) else error))
                    else:
                        try:
                            if blob is not None:
                                unpack_dir(blob, spec.path)
                        except LthError as error:  # a refused archive: this trial fails, the others go on
                            events.failed(spec, str(error))
                        else:
                            events.done(spec, result)
                    if queued:
                        events.started(queued.pop(0))
        finally:
            if probe is not None:
                probe.unlink(missing_ok=True)
            if store is not None:
                ray.kill(store)
