"""How many CPUs this process may use, and torch's thread count.

``os.cpu_count()`` counts the machine's CPUs; a batch scheduler or a container often gives a
process fewer: an affinity mask (``taskset``, Slurm's cgroups cpusets) or a CPU quota (Docker's
``--cpus``, Kubernetes limits: cgroup ``cpu.max``). Torch's default thread count follows the
machine, so on a shared or limited machine its OpenMP threads outnumber the CPUs and wait on
each other. :func:`available_cpus` reads both limits; :func:`use_threads` sets torch's count.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from lth.errors import LthError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")
#: OpenMP settings a user may have chosen; lth changes the wait policy only when none is set.
OPENMP_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
BUSY_THRESHOLD = 0.5  # CPUs kept busy by other processes from which lth's OpenMP threads yield
THREADS_ENV = "LTH_THREADS"  # ``lth --threads N``: also the thread count of a process pool's workers


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when unlimited/unknown.

    cgroup v2: ``cpu.max`` = ``QUOTA PERIOD`` or ``max PERIOD``; v1: ``cpu/cpu.cfs_quota_us``
    (-1: none) over ``cpu/cpu.cfs_period_us``.
    """
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's quota (rounded up)."""
    cpus = _affinity()
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def check_threads(threads: int | None, what: str = "--threads") -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise LthError(f"{what} must be a whole number >= 1, got {threads!r}")
    return threads


def cpu_times(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(busy, total) time of all the machine's CPUs since boot, in clock ticks (Linux), or None."""
    try:
        with open(path, encoding="ascii") as stat:
            fields = stat.readline().split()
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if fields[:1] != ["cpu"] or len(ticks) < 8:
        return None
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


def busy_cpus(seconds: float = 0.1, path: Path = PROC_STAT) -> float | None:
    """How many CPUs the machine's processes keep busy, averaged over ``seconds`` during which
    this process sleeps (so: the others' load), or None where /proc/stat is not readable."""
    first = cpu_times(path)
    time.sleep(seconds)
    second = cpu_times(path)
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def yield_when_busy(seconds: float = 0.1, threshold: float = BUSY_THRESHOLD) -> bool:
    """Make torch's OpenMP threads sleep instead of spin while they wait (``OMP_WAIT_POLICY=PASSIVE``)
    when other processes keep ``threshold`` CPUs or more busy as lth starts.

    Spinning threads fight a competing load for the cores: a LeNet training beside a 2-thread load
    on 2 cores ran 4.7x slower than alone, 1.4x with the passive policy (which costs 17-45% on an
    idle machine, hence only when busy; benchmarks/bench_startup.py). Only before torch is
    imported (OpenMP reads the setting once) and when the user set none of
    :data:`OPENMP_WAIT_SETTINGS`. Returns whether the policy was set.
    """
    if "torch" in sys.modules or any(os.environ.get(name) for name in OPENMP_WAIT_SETTINGS):
        return False
    busy = busy_cpus(seconds)
    if busy is None or busy < threshold:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def requested_threads() -> int | None:
    """The thread count the user asked for with ``lth --threads N`` / ``$LTH_THREADS`` (None: none)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = -1
    if threads < 1:
        raise LthError(f"${THREADS_ENV} must be a whole number >= 1, got {value!r}")
    return threads


def use_threads(threads: int | None = None) -> int | None:
    """Give torch ``threads`` intra-op threads; without it, :func:`available_cpus` when something
    limits this process below the machine's CPUs (and ``OMP_NUM_THREADS`` is not set), else
    torch's own default. Before torch is imported this sets ``OMP_NUM_THREADS`` (torch reads it
    at import); after, ``torch.set_num_threads``. Returns the count set (None: left as it was)."""
    check_threads(threads)
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return None  # the user's choice
        cpus = available_cpus()
        if cpus >= (os.cpu_count() or cpus):
            return None  # nothing limits this process: torch's default
        threads = cpus
    if "torch" in sys.modules:
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
