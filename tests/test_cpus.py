"""The CPUs a process may use (affinity, cgroup quota) and torch's thread count (--threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth.cpus import available_cpus, cgroup_quota, use_threads
from lth.errors import LthError


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_and_v1_quotas(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 2.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None
    assert cgroup_quota(tmp_path / "absent") is None


def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr("lth.cpus._affinity", lambda: 8)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == 2  # 1.5 CPUs of quota: two threads may run
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == 8
    monkeypatch.setattr("lth.cpus._affinity", lambda: 3)
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert available_cpus(tmp_path) == 3


def test_threads_option_sets_torchs_threads(capsys, restore_threads):
    rc, _, err = cli(capsys, "--threads", "3", "datasets")
    assert rc == 0, err
    assert torch.get_num_threads() == 3
    assert use_threads(2) == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize("before", [None, "2"])
def test_threads_option_leaves_the_callers_environment_alone(capsys, restore_threads, monkeypatch, before):
    """`lth --threads 3` sets $LTH_THREADS for the processes the command starts, but a call of
    `main` from Python gives the caller's environment back as it was: a $LTH_THREADS left over
    made every later `lth` subprocess train on 3 threads, whose sums round differently."""
    if before is None:
        monkeypatch.delenv("LTH_THREADS", raising=False)
    else:
        monkeypatch.setenv("LTH_THREADS", before)
    rc, _, err = cli(capsys, "--threads", "3", "datasets")
    assert rc == 0, err
    assert os.environ.get("LTH_THREADS") == before


def test_default_leaves_torch_alone_unless_limited(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setattr("lth.cpus.available_cpus", lambda root=None: os.cpu_count())
    assert use_threads() is None and torch.get_num_threads() == 2
    monkeypatch.setattr("lth.cpus.available_cpus", lambda root=None: 1)
    monkeypatch.setattr("lth.cpus.os.cpu_count", lambda: 4)
    assert use_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting wins
    torch.set_num_threads(2)
    assert use_threads() is None and torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_threads_is_one_line(capsys, value):
    rc, _, err = cli(capsys, "--threads", value, "datasets")
    assert one_line_error(rc, err) == f"lth: error: --threads must be a whole number >= 1, got {value}"


def test_lottery_model_threads(restore_threads):
    from torch import nn

    import lth

    lth.LotteryModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "digits", iterations=5, threads=1)
    assert torch.get_num_threads() == 1
    with pytest.raises(LthError, match="threads must be a whole number >= 1, got 0"):
        lth.LotteryModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "digits", threads=0)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 CPUs and affinity"
)
def test_a_process_pinned_to_one_cpu_gets_one_torch_thread():
    """Under an affinity mask of one CPU (taskset, a scheduler's cpuset) the CLI sets OMP_NUM_THREADS
    before torch is imported: torch starts with one thread, not one per machine CPU."""
    code = (
        "import os, io, contextlib\nos.sched_setaffinity(0, {0})\nos.environ.pop('OMP_NUM_THREADS', None)\n"
        "from lth.cli import main\nwith contextlib.redirect_stdout(io.StringIO()): main(['datasets'])\n"
        "import torch\nprint('threads', torch.get_num_threads())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "threads 1" in done.stdout


def _stat(path, busy: int, idle: int, iowait: int = 0) -> None:
    """A /proc/stat whose first line has ``busy`` ticks spread over user/system and ``idle``."""
    path.write_text(f"cpu  {busy - busy // 3} 0 {busy // 3} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")


def test_cpu_times_reads_the_first_line_of_proc_stat(tmp_path):
    from lth.cpus import cpu_times

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 20 400 30 1 2 3 7 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n")
    assert cpu_times(stat) == (100 + 5 + 20 + 1 + 2 + 3, 561)  # idle and iowait are not busy; guest is in user
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(stat) is None
    assert cpu_times(tmp_path / "missing") is None


def test_busy_cpus_is_the_others_load_while_lth_sleeps(tmp_path, monkeypatch):
    import lth.cpus as cpus

    stat = tmp_path / "stat"
    _stat(stat, busy=1000, idle=1000)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(cpus.time, "sleep", lambda s: _stat(stat, busy=1000 + 150, idle=1000 + 50))  # 75% busy
    assert cpus.busy_cpus(0.1, stat) == pytest.approx(3.0)
    monkeypatch.setattr(cpus.time, "sleep", lambda s: None)  # no tick passed: unknown
    assert cpus.busy_cpus(0.1, stat) is None


@pytest.mark.parametrize(
    "busy, preset, torch_loaded, expected",
    [
        (1.8, {}, False, "PASSIVE"),  # a 2-thread load: yield
        (0.2, {}, False, None),  # an idle machine: OpenMP's own policy (spinning is faster there)
        (None, {}, False, None),  # /proc/stat unreadable
        (1.8, {"OMP_WAIT_POLICY": "ACTIVE"}, False, "ACTIVE"),  # the user's choice stays
        (1.8, {"GOMP_SPINCOUNT": "1000"}, False, None),
        (1.8, {}, True, None),  # too late: OpenMP has read its settings
    ],
)
def test_yield_when_busy(monkeypatch, busy, preset, torch_loaded, expected):
    import sys

    import lth.cpus as cpus

    for name in cpus.OPENMP_WAIT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cpus, "busy_cpus", lambda seconds=0.1: busy)
    if not torch_loaded:
        monkeypatch.delitem(sys.modules, "torch")
    assert cpus.yield_when_busy() == (expected == "PASSIVE" and "OMP_WAIT_POLICY" not in preset)
    assert os.environ.get("OMP_WAIT_POLICY") == expected


def test_a_training_command_started_on_a_busy_machine_yields(tmp_path):
    """In a fresh interpreter (torch not loaded yet) on a machine that looks busy, `lth find-ticket`
    sets OMP_WAIT_POLICY=PASSIVE before torch loads; `lth models` never samples the load."""
    import subprocess
    import sys

    probe = (
        "import os, sys\nimport lth.cpus as cpus\ncpus.busy_cpus = lambda seconds=0.1: 1.9\n"
        "from lth.cli import main\nrc = main(sys.argv[1:])\nprint('policy:', os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["LTH_RUNS_ROOT"] = str(tmp_path / "runs")
    train = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--iterations",
            "2",
            "--rounds",
            "0",
            "--out",
            str(tmp_path / "run"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip().splitlines()[-1] == "policy: PASSIVE"
    listing = subprocess.run(
        [sys.executable, "-c", probe, "models"], capture_output=True, text=True, env=env, timeout=120
    )
    assert listing.stdout.strip().splitlines()[-1] == "policy: None"
