"""Concurrency safety: process workers die with their driver, one writer per run (``.lth-lock``),
and trial directories unpacked from archives (Ray without a shared filesystem) survive a kill."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli, one_line_error
from lth.backends import base
from lth.backends.base import TrialSpec, pack_dir, recover_unpacked, run_trial, unpack_dir
from lth.errors import LthError
from lth.store import RunDir
from lth.store.lock import LOCK_FILE, lock_holder, run_lock
from lth.store.ownership import MARKER

HOST = socket.gethostname()
IN_USE = "is in use by another lth process (pid {pid} on {host}); wait for it to finish, or stop it first"

# Another process holding lth's lock (plain flock, so that it starts in a blink: no torch to import).
HOLDER = r"""
import fcntl, os, socket, sys, time
fds = []
for path in sys.argv[1:]:
    fd = os.open(os.path.join(path, ".lth-lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    fds.append(fd)
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def held(*paths: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the locks of ``paths`` until the block ends (then it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def _proc_stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # state, ppid, ...


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a PID 1 that never reaps)."""
    try:
        return _proc_stat(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_proc_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds processes via /proc")


# ------------------------------------------------------------------ (a) workers die with their driver


def _orphan_watcher(arm: str) -> tuple[int, int]:
    """Fork a middle process whose own child runs ``arm`` against it; return (middle, child) pids."""
    from lth.backends import process as backend

    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the forked processes
        try:
            child = os.fork()
            if child == 0:
                driver = os.getppid()
                if arm == "pdeathsig":
                    backend.die_with_driver(driver)
                else:
                    backend._watch_driver(driver)
                time.sleep(120)
            else:
                os.write(write, f"{child}\n".encode())
                time.sleep(120)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = int(pipe.readline())
    return middle, child


@needs_proc
@pytest.mark.parametrize("arm", ["pdeathsig", "watcher"])
def test_a_worker_dies_when_its_driver_is_killed(arm, monkeypatch):
    """Each of the two guards alone: the kernel's parent-death signal (the watcher made too slow to
    matter) and, as on platforms without prctl, the watcher thread polling the parent pid."""
    if arm == "pdeathsig":
        if not sys.platform.startswith("linux"):
            pytest.skip("PR_SET_PDEATHSIG is Linux's")
        monkeypatch.setattr("lth.backends.process.WATCH_SECONDS", 3600.0)
    middle, child = _orphan_watcher(arm)
    try:
        time.sleep(0.3)  # let the child arm its guard
        assert alive(child)
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        assert wait_until(lambda: not alive(child), timeout=5), f"worker {child} outlived its driver"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


ROBUST = [
    "robust",
    "lenet-300-100",
    "digits",
    "--trials",
    "2",
    "--rounds",
    "2",
    "--iterations",
    "600",
    "--eval-every",
    "50",
    "--checkpoint-every",
    "20",
    "--device",
    "cpu",
    "--vectorize",
    "off",
    "-q",
]

# A real `lth` process, its imports done before it is told to go (so that two of them race on the lock only).
READY_THEN_MAIN = r"""
import sys
from lth.cli.main import _register_commands, main
_register_commands()
import lth.experiments.study, lth.experiments.ticket_search, lth.plots
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def ready_lth(*args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", READY_THEN_MAIN, *map(str, args)],
        env=_env(),
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def go(process: subprocess.Popen) -> None:
    process.stdin.write("go\n")
    process.stdin.flush()


def assert_same_trials(a: Path, b: Path, trials: int) -> None:
    """Every trial's metrics.csv byte for byte, its rounds (but wall-clock seconds) and its masks bit for bit."""
    for i in range(trials):
        ra, rb = RunDir(a / f"trial_{i:02d}"), RunDir(b / f"trial_{i:02d}")
        assert (ra.path / "metrics.csv").read_bytes() == (rb.path / "metrics.csv").read_bytes()
        strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
        assert ra.rounds() and strip(ra.rounds()) == strip(rb.rounds())
        for r in range(len(ra.rounds())):
            ma, mb = ra.load_mask(r), rb.load_mask(r)
            assert ma.keys() == mb.keys() and all(ma[k].equal(mb[k]) for k in ma)
        assert rb.status()["status"] == "complete"


@pytest.mark.slow
@needs_proc
def test_killed_driver_takes_its_workers_along_then_one_resume_at_a_time(tmp_path, capsys, monkeypatch):
    """kill -9 of `lth robust --backend process`: its workers die with it (they used to live on,
    writing trials). Then two `lth resume STUDY` at once: one refused in one line, the other
    finishes the study exactly as an uninterrupted run."""
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    monkeypatch.setattr("lth.plots.plot_study", lambda study: [])
    reference = tmp_path / "reference"
    rc, _, err = cli(capsys, *ROBUST, "--out", reference)
    assert rc == 0, err

    out = tmp_path / "study"
    driver = subprocess.Popen(
        [sys.executable, "-m", "lth", *ROBUST, "--out", str(out), "--backend", "process", "--workers", "2"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: list[int] = []
    try:
        busy = lambda: any((out / f"trial_{i:02d}" / "trial.log").is_file() for i in range(2))  # noqa: E731
        assert wait_until(busy, timeout=300, step=0.02), driver.stderr.read() if driver.poll() is not None else ""
        workers = children(driver.pid)
        assert len(workers) >= 2, workers  # the two workers (and the resource tracker)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
        # at once, well before their trials could end (an orphan used to train on to its trial's end)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=3), (
            f"orphaned workers still running: {[pid for pid in workers if alive(pid)]}"
        )
        files = lambda: {(p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}  # noqa: E731
        written = files()
        time.sleep(1.0)
        assert files() == written, "something still writes the study"
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
    assert json.loads((out / "status.json").read_text())["status"] == "running"

    first, second = ready_lth("resume", out, "-q"), ready_lth("resume", out, "-q")
    try:
        go(first)
        assert wait_until(lambda: lock_holder(out) is not None or first.poll() is not None, timeout=60)
        assert lock_holder(out) == f"pid {first.pid} on {HOST}"
        go(second)
        _, refused = second.communicate(timeout=120)
        line = one_line_error(second.returncode, refused)
        assert line == f"lth: error: {out} " + IN_USE.format(pid=first.pid, host=HOST)
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    assert_same_trials(reference, out, trials=2)
    assert lock_holder(out) is None


# ------------------------------------------------------------------ (b) one writer per run


def test_run_lock_refuses_another_process(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert lock_holder(run) is None
    with held(run) as holder:
        assert lock_holder(run) == f"pid {holder.pid} on {HOST}"
        with pytest.raises(LthError) as error:
            with run_lock(run):
                pytest.fail("a second writer got the lock")
        assert str(error.value) == f"{run} " + IN_USE.format(pid=holder.pid, host=HOST)
        assert "\n" not in str(error.value)
    # killed (SIGKILL): the kernel dropped its lock
    from lth.atomic import current_umask

    with run_lock(run):
        with run_lock(run):  # the same process again (a trial inside its study driver): allowed
            assert lock_holder(run) is None  # "another process" only
        assert (run / LOCK_FILE).read_text() == f"pid {os.getpid()} on {HOST}\n"
        assert (run / LOCK_FILE).stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert (run / LOCK_FILE).read_text() == ""  # released: no stale holder to show
    assert lock_holder(run) is None


def test_run_lock_degrades_to_no_lock(tmp_path, monkeypatch):
    with run_lock(tmp_path / "missing"):  # nowhere to put a lock file: go on (the writes fail on their own)
        pass
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr("lth.store.lock.fcntl", None)  # a platform without fcntl
    with held(run):
        with run_lock(run):
            assert lock_holder(run) is None


def test_everything_that_writes_a_run_refuses_one_in_use(tmp_path, capsys, monkeypatch):
    """lth resume RUN / STUDY, a study's trial, find-ticket and supermask train/eval --overwrite: one-line
    refusals, nothing touched."""
    from lth.store.ownership import write_marker

    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    run, study, trial, supermask = tmp_path / "run", tmp_path / "study", tmp_path / "trial", tmp_path / "supermask"
    run.mkdir()
    write_marker(run, "run")
    (run / "config.yaml").write_text("model: lenet-300-100\n")  # an unfinished run, as far as the lock cares
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"kind": "robust", "experiments": []}))
    trial.mkdir()
    supermask.mkdir()
    write_marker(supermask, "run")  # an lth run (a foreign directory is refused before any lock)
    with held(run, study, trial, supermask) as holder:
        expected = IN_USE.format(pid=holder.pid, host=HOST)
        rc, _, err = cli(capsys, "resume", run)
        assert one_line_error(rc, err) == f"lth: error: {run} {expected}"
        rc, _, err = cli(
            capsys,
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--iterations",
            "20",
            "--rounds",
            "0",
            "--device",
            "cpu",
            "-q",
            "--out",
            run,
            "--overwrite",
        )
        assert expected.split(";")[0].split("(")[1] in one_line_error(rc, err)  # "pid N on HOST)"
        rc, _, err = cli(capsys, "resume", study)
        assert one_line_error(rc, err) == f"lth: error: {study} {expected}"
        with pytest.raises(LthError, match="in use by another lth process"):
            run_trial(TrialSpec(str(trial), {}, 0))
        rc, _, err = cli(
            capsys,
            "supermask",
            "train",
            "lenet-300-100",
            "digits",
            "--iterations",
            "5",
            "--device",
            "cpu",
            "-q",
            "--out",
            supermask,
            "--overwrite",
        )
        assert one_line_error(rc, err) == f"lth: error: {supermask} {expected}"
        rc, _, err = cli(
            capsys,
            "supermask",
            "eval",
            "lenet-300-100",
            "digits",
            "--iterations",
            "5",
            "--device",
            "cpu",
            "-q",
            "--out",
            supermask,
            "--overwrite",
        )
        assert one_line_error(rc, err) == f"lth: error: {supermask} {expected}"
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE} == before
    assert [p.name for p in supermask.iterdir() if p.name != LOCK_FILE] == [MARKER]


def test_lottery_model_save_refuses_a_directory_in_use(tmp_path, digits):
    from torch import nn

    from lth import LotteryModel

    model = LotteryModel(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, iterations=5, eval_every=5, device="cpu", progress=False
    )
    out = tmp_path / "saved"
    out.mkdir()
    with held(out) as holder:
        with pytest.raises(LthError) as error:
            model.save(out)
        assert str(error.value) == f"{out} " + IN_USE.format(pid=holder.pid, host=HOST)
    model.save(out)
    assert (out / "settings.json").is_file()


# ------------------------------------------------------------------ (c) unpacking archives


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="tarfile's data filter (Python >= 3.10.12)")
@pytest.mark.parametrize("member", ["/etc/lth-evil", "../evil", "sub/../../evil"])
def test_a_refused_archive_leaves_nothing_behind(tmp_path, member):
    target = tmp_path / "trial_00"
    target.mkdir()
    (target / "config.yaml").write_text("old\n")
    with pytest.raises(LthError) as error:
        unpack_dir(_archive({"config.yaml": b"new\n", member: b"x"}), target)
    assert "\n" not in str(error.value) and str(target) in str(error.value)
    assert _hidden(tmp_path) == []  # no .trial_00.incoming-* left
    assert (target / "config.yaml").read_text() == "old\n"
    assert not (tmp_path / "evil").exists() and not Path("/etc/lth-evil").exists()


class Killed(BaseException):
    """A kill -9 at this point: nothing after it runs, no handler sees it."""


def kill_at_replace(monkeypatch, call: int) -> None:
    real, count = os.replace, [0]

    def replace(src, dst):
        count[0] += 1
        if count[0] == call:
            raise Killed
        return real(src, dst)

    monkeypatch.setattr(base.os, "replace", replace)


def _old_dir(tmp_path: Path) -> Path:
    target = tmp_path / "trial_00"
    target.mkdir()
    (target / "config.yaml").write_text("old\n")
    return target


def test_kill_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    """Killed after the old directory moved aside and before the new one moved in: the next
    recovery puts the new (complete) one in place and clears the hidden folders."""
    target = _old_dir(tmp_path)
    kill_at_replace(monkeypatch, 2)
    with pytest.raises(Killed):
        unpack_dir(_archive({"config.yaml": b"new\n"}), target)
    monkeypatch.undo()
    assert not target.exists() and len(_hidden(tmp_path)) == 2  # the state a kill used to leave: no trial
    assert recover_unpacked(tmp_path) == [target]
    assert (target / "config.yaml").read_text() == "new\n"
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml"]
    assert _hidden(tmp_path) == []


def test_kill_with_an_incomplete_archive_restores_the_old_directory(tmp_path, monkeypatch):
    target = _old_dir(tmp_path)
    kill_at_replace(monkeypatch, 2)
    with pytest.raises(Killed):
        unpack_dir(_archive({"config.yaml": b"new\n"}), target)
    monkeypatch.undo()
    for incoming in tmp_path.glob(".trial_00.incoming-*"):
        (incoming / base.UNPACKED).unlink()  # as if killed while extracting
    assert recover_unpacked(tmp_path) == [target]
    assert (target / "config.yaml").read_text() == "old\n"
    assert _hidden(tmp_path) == []


def test_kill_before_the_swap_keeps_the_old_directory(tmp_path, monkeypatch):
    target = _old_dir(tmp_path)
    kill_at_replace(monkeypatch, 1)
    with pytest.raises(Killed):
        unpack_dir(_archive({"config.yaml": b"new\n"}), target)
    monkeypatch.undo()
    assert recover_unpacked(tmp_path) == []
    assert (target / "config.yaml").read_text() == "old\n"
    assert _hidden(tmp_path) == []


def test_recovery_touches_only_lths_hidden_folders(tmp_path):
    keep = [tmp_path / ".notes", tmp_path / ".trial_00.old-backup", tmp_path / ".trial_01.incoming-abcdefgh"]
    keep[0].mkdir()
    keep[1].mkdir()
    keep[2].write_text("a file, not lth's folder")
    (tmp_path / "trial_00").mkdir()
    (tmp_path / ".trial_00.old-abcd1234" / "dir").mkdir(parents=True)
    assert recover_unpacked(tmp_path) == []
    assert _hidden(tmp_path) == sorted(p.name for p in keep)


def test_unpack_round_trip_leaves_no_lock_or_marker(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.yaml").write_text("x\n")
    with run_lock(source):
        blob = pack_dir(source)
    target = tmp_path / "target"
    unpack_dir(blob, target)
    unpack_dir(blob, target)  # replacing an existing one
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml"]
    assert _hidden(tmp_path) == []


def test_resume_recovers_a_half_swapped_trial(tmp_path, monkeypatch):
    """`lth resume STUDY` puts back a trial directory a kill left as .trial_NN.old-X/dir before it looks at trials."""
    from lth.config import make_config
    from lth.experiments.study import continue_study, robust_experiment, run_study

    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    monkeypatch.setattr("lth.plots.plot_study", lambda study: [])
    config = make_config(
        {
            "model": "lenet-300-100",
            "dataset": "digits",
            "rounds": 0,
            "iterations": 10,
            "eval_every": 10,
            "device": "cpu",
        }
    )
    out = tmp_path / "study"
    run_study("robust", [robust_experiment(config, 1)], out, {"trials": 1}, progress=False)
    trial = out / "trial_00"
    metrics = (trial / "metrics.csv").read_bytes()
    aside = out / ".trial_00.old-abcd1234"
    aside.mkdir()
    os.replace(trial, aside / "dir")
    (out / ".trial_00.incoming-efgh5678").mkdir()  # an unfinished archive
    result = continue_study(out, progress=False)
    assert (trial / "metrics.csv").read_bytes() == metrics  # restored, not trained again
    assert result.study_dir.status()["status"] == "complete"
    assert not list(out.glob(".trial_00.*"))
