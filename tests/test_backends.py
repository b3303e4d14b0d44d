"""Execution backends: a session gives the same tables on local, process and ray; Ray retries a killed worker."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli, one_line_error
from lth.store import RunDir
from lth.store.study_dir import StudyDir

SESSION = {
    "name": "backends",
    "base": {
        "model": "lenet-300-100",
        "dataset": "digits",
        "rounds": 1,
        "iterations": 30,
        "eval_every": 15,
        "device": "cpu",
        "checkpoint_every": 10,
    },
    "grid": {"criterion": ["large_final", "movement"]},
    "trials": 2,
}


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    monkeypatch.setattr("lth.plots.plot_study", lambda study: [])


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "session.yaml"
    path.write_text(yaml.safe_dump(SESSION))
    return path


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray for the whole module (2 CPUs, no dashboard)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory) -> Path:
    """The session on the local backend."""
    from lth.cli import main

    out = tmp_path_factory.mktemp("local") / "study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        assert main(["session", str(spec_file), "--out", str(out), "-q", "--vectorize", "off"]) == 0
    return out


def assert_same_study(a: Path, b: Path) -> None:
    """Every trial's metrics.csv and rounds.json byte for byte, every mask bit for bit, the same summary."""
    entries = [r for e in StudyDir(a).study()["experiments"] for r in e["runs"]]
    assert len(entries) == 4
    for entry in entries:
        ra, rb = a / entry["path"], b / entry["path"]
        assert (ra / "metrics.csv").read_bytes() == (rb / "metrics.csv").read_bytes(), entry["path"]
        strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
        assert strip(RunDir(ra).rounds()) == strip(RunDir(rb).rounds())
        for r in range(len(RunDir(ra).rounds())):
            ma, mb = RunDir(ra).load_mask(r), RunDir(rb).load_mask(r)
            assert ma.keys() == mb.keys() and all(ma[k].equal(mb[k]) for k in ma)
        assert not (rb / "checkpoint.pt").exists()
    assert StudyDir(b).status()["status"] == "complete" and StudyDir(b).status()["runs_complete"] == 4
    drop = lambda rows: [{k: v for k, v in row.items() if "seconds" not in str(row.get("metric"))} for row in rows]  # noqa: E731
    assert drop(StudyDir(a).summary()) == drop(StudyDir(b).summary())


def test_process_backend_equals_local(reference, spec_file, tmp_path, capsys):
    out = tmp_path / "process"
    rc, _, err = cli(capsys, "session", spec_file, "--out", out, "-q", "--backend", "process", "--workers", "2")
    assert rc == 0, err
    assert StudyDir(out).status()["backend"] == "process"
    assert_same_study(reference, out)


def test_auto_backend_is_a_process_pool_on_2_cpus_and_equals_local(reference, spec_file, tmp_path, capsys, monkeypatch):
    """The default backend on a 2-CPU machine without a GPU: 2 workers of 1 thread each, the same
    tables as the local backend at 1 thread (this test process's count)."""
    import torch

    assert torch.get_num_threads() == 1  # the reference ran at 1 thread, as each worker does
    monkeypatch.setattr("lth.cpus.available_cpus", lambda *a: 2)
    monkeypatch.setattr("lth.backends.process.available_cpus", lambda *a: 2)
    monkeypatch.delenv("LTH_BACKEND")
    out = tmp_path / "auto"
    rc, _, err = cli(capsys, "session", spec_file, "--out", out, "-q")
    assert rc == 0, err
    assert StudyDir(out).status()["backend"] == "process"
    assert_same_study(reference, out)


def test_ray_backend_equals_local(ray_instance, reference, spec_file, tmp_path, capsys):
    out = tmp_path / "ray"
    rc, _, err = cli(capsys, "session", spec_file, "--out", out, "-q", "--backend", "ray", "--cpus-per-trial", "1")
    assert rc == 0, err
    assert StudyDir(out).status()["backend"] == "ray"
    assert_same_study(reference, out)
    assert not list(out.glob(".lth-probe-*"))


def kill_mid_trial(victim: Path) -> tuple[threading.Thread, threading.Event, list[int]]:
    """A thread that SIGKILLs the process running ``victim`` (its pid is in the trial's log) once it has
    checkpointed."""
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            log = victim / "trial.log"
            try:
                if (victim / "checkpoint.pt").is_file() and (victim / "metrics.csv").is_file() and log.is_file():
                    pid = int(log.read_text().split(" pid ")[1].split()[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread, stop, killed


@pytest.mark.slow
def test_killed_process_worker_resumes_from_its_checkpoint(reference, spec_file, tmp_path, capsys):
    """A dead worker breaks the process pool: a new pool resumes the unfinished trials from their checkpoints."""
    out = tmp_path / "killed"
    victim = out / "01-movement" / "trial_01"
    thread, stop, killed = kill_mid_trial(victim)
    try:
        rc, shown, err = cli(capsys, "session", spec_file, "--out", out, "--backend", "process", "--workers", "2")
    finally:
        stop.set()
        thread.join()
    assert rc == 0, err
    assert killed, "the trial finished before it could be killed"
    log = (victim / "trial.log").read_text()
    assert re.search(r"resuming criterion=movement trial 1 from checkpoint at round \d", log), log
    assert "criterion=movement trial 1: resumed from its checkpoint at round" in shown + err
    assert_same_study(reference, out)


@pytest.mark.parametrize("mode", [[], ["--no-shared-fs"]], ids=["shared-fs", "no-shared-fs"])
def test_killed_ray_worker_resumes_from_its_checkpoint(ray_instance, reference, spec_file, tmp_path, capsys, mode):
    """SIGKILL the worker running a trial once it has checkpointed; Ray retries it and it resumes there.

    Without a shared filesystem (forced; one node) the worker trains in a temp dir: the checkpoint
    seen here is the one it streamed to the driver's store, the retry fetched it from there, and
    the finished trial came back as an archive, with the same tables as the local backend.
    """
    out = tmp_path / "killed"
    victim = out / "01-movement" / "trial_01"
    thread, stop, killed = kill_mid_trial(victim)
    try:
        rc, shown, err = cli(capsys, "session", spec_file, "--out", out, "--backend", "ray", *mode)
    finally:
        stop.set()
        thread.join()
    assert rc == 0, err
    assert killed, "the trial finished before it could be killed"
    log = (victim / "trial.log").read_text()
    assert re.search(r"pid \d+ on .*: resuming criterion=movement trial 1 from checkpoint at round \d", log), log
    assert f"pid {killed[0]}" in log and log.count(" pid ") >= 2
    assert (
        "criterion=movement trial 1: resumed from its checkpoint at round" in shown + err
    )  # so does the driver's progress output
    assert_same_study(reference, out)


def test_resume_continues_only_unfinished_trials_on_ray(ray_instance, reference, spec_file, tmp_path, capsys):
    """A study left half done (as by a dead driver) is finished by `lth resume --backend ray`."""
    import shutil

    out = tmp_path / "half"
    shutil.copytree(reference, out)
    for entry in ("01-movement/trial_00", "01-movement/trial_01"):
        shutil.rmtree(out / entry)
    (out / "summary.json").unlink()
    StudyDir(out).write_status(status="running", runs_total=4, runs_complete=2)
    before = (out / "00-large_final" / "trial_00" / "metrics.csv").stat().st_mtime_ns
    rc, _, err = cli(capsys, "resume", out, "-q", "--backend", "ray")
    assert rc == 0, err
    assert (out / "00-large_final" / "trial_00" / "metrics.csv").stat().st_mtime_ns == before
    assert_same_study(reference, out)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--backend", "spark"], "unknown backend 'spark': use auto, local, process or ray"),
        (["--backend", "auto", "--ray-address", "auto"], "--ray-address applies to the ray backend, not to auto"),
        (["--backend", "process", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--workers", "2"], "--workers applies to the process backend, not to local"),
        (["--backend", "process", "--ray-address", "auto"], "--ray-address applies to the ray backend, not to process"),
        (["--no-shared-fs"], "--no-shared-fs applies to the ray backend, not to local"),
    ],
)
def test_bad_backend_options(spec_file, tmp_path, capsys, args, expected):
    msg = one_line_error(*cli(capsys, "session", spec_file, "--out", tmp_path / "out", "-q", *args)[::2])
    assert expected in msg
    assert not (tmp_path / "out").exists()


def test_ray_missing_says_how_to_install_it(spec_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    msg = one_line_error(*cli(capsys, "session", spec_file, "--out", tmp_path / "out", "-q", "--backend", "ray")[::2])
    assert "the ray backend needs Ray: pip install 'lth[ray]'" in msg
    msg = one_line_error(
        *cli(
            capsys,
            "robust",
            "lenet-300-100",
            "digits",
            "--trials",
            "2",
            "--backend",
            "ray",
            "--out",
            tmp_path / "robust",
        )[::2]
    )
    assert "pip install 'lth[ray]'" in msg


@pytest.mark.parametrize(
    "name, options, trials, gpu, cpus, expected",
    [
        ("auto", {}, 2, False, 2, ("process", {"workers": 2})),
        ("auto", {}, 8, False, 16, ("process", {"workers": 8})),  # one worker per trial at most
        ("auto", {}, 20, False, 16, ("process", {"workers": 16})),  # one per CPU
        ("auto", {}, 1, False, 16, ("local", {})),  # one trial
        ("auto", {}, 4, False, 1, ("local", {})),  # one CPU
        ("auto", {}, 4, True, 16, ("local", {})),  # trials on a GPU
        ("auto", {"workers": 3}, 1, True, 1, ("process", {"workers": 3})),  # --workers asks for processes
        ("auto", {"group": 4}, 8, False, 16, ("local", {"group": 4})),  # --vectorize 4 asks for local
        ("AUTO ", {}, 2, False, 2, ("process", {"workers": 2})),
        ("local", {}, 8, False, 16, ("local", {})),
        ("process", {"workers": None}, 1, True, 1, ("process", {})),
        ("ray", {"address": "auto"}, 1, False, 1, ("ray", {"address": "auto"})),
    ],
)
def test_choose_backend(name, options, trials, gpu, cpus, expected):
    from lth.backends import choose_backend

    assert choose_backend(name, options, trials=trials, gpu=gpu, cpus=cpus) == expected


def test_backend_defaults_to_lth_backend_then_auto(monkeypatch):
    from lth.backends import choose_backend
    from lth.errors import LthError

    monkeypatch.setenv("LTH_BACKEND", "local")
    assert choose_backend(None, {}, trials=4, gpu=False, cpus=4) == ("local", {})
    monkeypatch.delenv("LTH_BACKEND")
    assert choose_backend(None, {}, trials=4, gpu=False, cpus=4) == ("process", {"workers": 4})
    monkeypatch.setenv("LTH_BACKEND", "spark")
    with pytest.raises(LthError, match="^unknown backend 'spark': use auto, local, process or ray$"):
        choose_backend(None, {}, trials=4, gpu=False, cpus=4)


def test_threads_option_sets_the_workers_thread_count(monkeypatch):
    """`lth --threads N` (``$LTH_THREADS``) gives each process worker N threads; else CPUs / workers."""
    from lth.backends.process import ProcessBackend
    from lth.errors import LthError

    monkeypatch.setattr("lth.backends.process.available_cpus", lambda *a: 8)
    assert (ProcessBackend(workers=2).threads, ProcessBackend(workers=3).threads, ProcessBackend().threads) == (4, 2, 1)
    monkeypatch.setenv("LTH_THREADS", "3")
    assert ProcessBackend(workers=2).threads == 3
    monkeypatch.setenv("LTH_THREADS", "0")
    with pytest.raises(LthError, match=r"^\$LTH_THREADS must be a whole number >= 1, got '0'$"):
        ProcessBackend(workers=2)
