"""Resumable ticket searches: a run stopped at any point and resumed ends bit-identical to one
never interrupted (masks, metrics, weights), including a real process killed with SIGKILL
and one killed while writing its checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth import TicketConfig, find_ticket
from lth.errors import LthError
from lth.experiments.ticket_search import resume_ticket
from lth.store import RunDir

# Rewinding to k > 0, w_f at early stop and a control: every piece of state the loop carries.
CONFIG = dict(
    model="lenet-300-100",
    dataset="digits",
    iterations=90,
    eval_every=20,
    rounds=2,
    device="cpu",
    rewind="10it",
    w_final="early-stop",
    controls=["reinit"],
    checkpoint_every=25,
    mask1="jitter",
    vectorize="off",  # the control trains after the ticket, with checkpoints of its own
)


class Crash(Exception):
    pass


def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])


def assert_same_run(a: Path, b: Path) -> None:
    """Identical masks, metrics, weights and per-round results (except wall-clock seconds)."""
    for sub in ("", "controls/reinit"):
        ra, rb = RunDir(a / sub), RunDir(b / sub)
        assert (a / sub / "metrics.csv").read_bytes() == (b / sub / "metrics.csv").read_bytes()
        strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
        assert strip(ra.rounds()) == strip(rb.rounds())
        assert ra.rounds()
        for r in (row["round"] for row in ra.rounds()):
            ma, mb = ra.load_mask(r), rb.load_mask(r)
            assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    for path in sorted((a / "weights").iterdir()):
        wa, wb = torch.load(path, weights_only=True), torch.load(b / "weights" / path.name, weights_only=True)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), path.name
    assert RunDir(b).status()["status"] == "complete"
    assert not (b / "checkpoint.pt").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _no_plots(mp)
        find_ticket(TicketConfig(**CONFIG), out=out, progress=False)
    return out


@contextmanager
def crash_after(stop_after: int, monkeypatch):
    """Inside the block every checkpoint is written, then the process "dies" (Crash) right after
    the ``stop_after``-th; yields the list of checkpoints written. Restores the writer on exit."""
    original = RunDir.write_checkpoint
    written: list[dict] = []

    def crashing(self, state):
        original(self, state)
        written.append(state)
        if len(written) == stop_after:
            raise Crash

    monkeypatch.setattr(RunDir, "write_checkpoint", crashing)
    try:
        yield written
    finally:
        monkeypatch.setattr(RunDir, "write_checkpoint", original)


def count_checkpoints(tmp_path: Path, monkeypatch) -> int:
    calls = []
    original = RunDir.write_checkpoint
    monkeypatch.setattr(RunDir, "write_checkpoint", lambda self, state: (calls.append(1), original(self, state)))
    find_ticket(TicketConfig(**CONFIG), out=tmp_path / "count", progress=False)
    monkeypatch.setattr(RunDir, "write_checkpoint", original)
    return len(calls)


def test_resume_after_a_crash_at_every_checkpoint(reference, tmp_path, monkeypatch):
    """Stop right after each checkpoint in turn (boundaries, mid-round, mid-control); resume; compare."""
    _no_plots(monkeypatch)
    total = count_checkpoints(tmp_path, monkeypatch)
    # 1 start + per ticket round (90 it, checkpoint every 25: 3 inside) + boundaries + the control's
    assert total == 1 + 3 * (3 + 1) + 2 * (3 + 1)
    stages = set()
    for stop_after in range(1, total + 1):
        out = tmp_path / f"run{stop_after}"
        with crash_after(stop_after, monkeypatch), pytest.raises(Crash):
            find_ticket(TicketConfig(**CONFIG), out=out, progress=False)
        state = RunDir(out).load_checkpoint()
        stages.add((state["stage"], state["training"] is not None))
        resume_ticket(out, progress=False)
        assert_same_run(reference, out)
    assert stages == {("start", False), ("ticket", True), ("reinit", False), ("reinit", True)}


def test_resume_twice_in_one_round(reference, tmp_path, monkeypatch):
    _no_plots(monkeypatch)
    out = tmp_path / "run"
    for stop_after, resume in ((7, False), (2, True), (3, True)):
        with crash_after(stop_after, monkeypatch), pytest.raises(Crash):
            resume_ticket(out, progress=False) if resume else find_ticket(
                TicketConfig(**CONFIG), out=out, progress=False
            )
    result = resume_ticket(out, progress=False)
    assert RunDir(out).status()["resumed"] == 3
    assert len(result.rounds) == 3 and len(result.masks) == 3
    assert_same_run(reference, out)


def test_find_ticket_resume_flag(reference, tmp_path, monkeypatch):
    """``resume=True`` continues an unfinished run, returns a finished one, refuses another config."""
    _no_plots(monkeypatch)
    out = tmp_path / "run"
    with crash_after(9, monkeypatch), pytest.raises(Crash):
        find_ticket(TicketConfig(**CONFIG), out=out, progress=False)
    with pytest.raises(LthError, match="its mask1 is 'jitter' but this command asks for 'rewind'"):
        find_ticket(TicketConfig(**{**CONFIG, "mask1": "rewind"}), out=out, progress=False, resume=True)
    find_ticket(TicketConfig(**{**CONFIG, "name": "other"}), out=out, progress=False, resume=True)
    assert_same_run(reference, out)
    again = find_ticket(TicketConfig(**CONFIG), out=out, progress=False, resume=True)  # complete: read back
    assert [r["final_test_accuracy"] for r in again.rounds] == [r["final_test_accuracy"] for r in RunDir(out).rounds()]


def test_resume_errors(reference, tmp_path, capsys):
    msg = one_line_error(*cli(capsys, "resume", reference)[::2])
    assert "already complete" in msg
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert "not an lth run directory" in one_line_error(*cli(capsys, "resume", foreign)[::2])
    assert "not an lth run directory" in one_line_error(*cli(capsys, "resume", tmp_path / "missing")[::2])


def test_corrupt_checkpoint_is_a_clear_error(reference, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    RunDir(out).write_status(status="running")
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "cannot be read" in one_line_error(*cli(capsys, "resume", out)[::2])


# ------------------------------------------------------------------ real processes

CLI_ARGS = [
    "find-ticket",
    "lenet-300-100",
    "digits",
    "--iterations",
    "300",
    "--eval-every",
    "20",
    "--rounds",
    "3",
    "--checkpoint-every",
    "30",
    "--controls",
    "reinit",
    "--rewind",
    "20it",
    "--device",
    "cpu",
    "-q",
    "--vectorize",
    "off",
]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _lth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lth", *args], env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cliref") / "run"
    done = _lth(*CLI_ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_sigkill_inside_a_round_then_resume(cli_reference, tmp_path):
    """Kill a real `lth find-ticket` with SIGKILL at a random point inside a round; resume; compare."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", *CLI_ARGS, "--out", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rng = random.Random()
    target_round = rng.randint(1, 2)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the ticket of the target round is training
        rounds = out / "rounds.json"
        try:
            if rounds.is_file() and len(json.loads(rounds.read_text())) >= target_round:
                break
        except json.JSONDecodeError:  # pragma: no cover - rounds.json is written atomically
            pytest.fail("rounds.json was read half-written")
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert RunDir(out).status()["status"] == "running"
    resumed = _lth("resume", str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(cli_reference, out)


KILL_WHILE_SAVING = r"""
import os, signal, sys, torch
import lth.atomic
real_save = torch.save
count = 0
def save(obj, handle, *a, **k):
    global count
    if "checkpoint.pt" in os.readlink(f"/proc/self/fd/{handle.fileno()}"):
        count += 1
        if count == int(sys.argv[1]):
            real_save(obj, handle, *a, **k)
            handle.seek(0)
            handle.truncate(handle.tell() // 2 or 100)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, handle, *a, **k)
torch.save = save
from lth.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file being written via /proc")
@pytest.mark.parametrize("kill_at", [6, 17])
def test_sigkill_while_writing_a_checkpoint(cli_reference, tmp_path, kill_at):
    """A process killed half-way through writing its checkpoint leaves the previous one intact."""
    out = tmp_path / "run"
    script = tmp_path / "kill_while_saving.py"
    script.write_text(KILL_WHILE_SAVING)
    killed = subprocess.run(
        [sys.executable, str(script), str(kill_at), *CLI_ARGS, "--out", str(out)],
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    leftovers = list(out.glob(".checkpoint.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written file
    RunDir(out).load_checkpoint()  # the real checkpoint is still whole
    resumed = _lth("resume", str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(cli_reference, out)
    assert not list(out.glob(".*.tmp"))  # resume clears the debris


def test_resume_with_controls_side_by_side(tmp_path, monkeypatch):
    """Ticket and control trained in one vectorised step: checkpoints at round boundaries only."""
    _no_plots(monkeypatch)
    config = TicketConfig(**{**CONFIG, "vectorize": "2"})
    reference = find_ticket(config, out=tmp_path / "reference", progress=False)
    with crash_after(6, monkeypatch) as written, pytest.raises(Crash):
        find_ticket(config, out=tmp_path / "run", progress=False)
    stages = [(state["round"], state["stage"], state["training"] is not None) for state in written]
    # start, 3 inside round 0, after round 0; round 1 trains ticket and control at once: no checkpoint inside
    assert stages == [
        (0, "start", False),
        (0, "ticket", True),
        (0, "ticket", True),
        (0, "ticket", True),
        (1, "start", False),
        (2, "start", False),
    ]
    resume_ticket(tmp_path / "run", progress=False)
    assert_same_run(tmp_path / "reference", tmp_path / "run")
    sequential = find_ticket(
        TicketConfig(**{**CONFIG, "vectorize": "off"}), out=tmp_path / "sequential", progress=False
    )
    for a, b in zip(reference.controls["reinit"], sequential.controls["reinit"]):
        assert a["kept_weights"] == b["kept_weights"]
        assert abs(a["test_accuracy_at_early_stop"] - b["test_accuracy_at_early_stop"]) <= 1e-4


@pytest.mark.parametrize(
    "extra",
    [
        dict(scope="global"),  # lenet's recipe is layerwise: the config.yaml holds its group rates
        dict(scope="global", prune_rate=0.4),
        dict(prune_at_init="synflow", init_keep=0.1, scope="global", prune_iterations=5, init_ablation="shuffle"),
    ],
)
def test_resume_of_a_global_scope_run(tmp_path, monkeypatch, extra):
    """A run whose resolved config (recipe filled in) has --scope global resumes: the recipe's group
    rates in config.yaml are not taken for per-group rates given with --scope global."""
    _no_plots(monkeypatch)
    config = dict(
        model="lenet-300-100",
        dataset="digits",
        iterations=40,
        eval_every=20,
        rounds=1,
        device="cpu",
        checkpoint_every=15,
        **extra,
    )
    find_ticket(TicketConfig(**config), out=tmp_path / "ref", progress=False)
    with crash_after(3, monkeypatch), pytest.raises(Crash):
        find_ticket(TicketConfig(**config), out=tmp_path / "run", progress=False)
    resume_ticket(tmp_path / "run", progress=False)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(RunDir(tmp_path / "run").rounds()) == strip(RunDir(tmp_path / "ref").rounds())
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
