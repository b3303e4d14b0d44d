"""Hostile sizes (issue 13, item 8): studies are counted (experiments x trials) before anything is
built, refused above the run limit in one line and at once, and an allowed big study sets up fast."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli, one_line_error
from lth import LotteryRobust, LotterySession, LthError
from lth.experiments.limits import MAX_RUNS

BASE = {"model": "lenet-300-100", "dataset": "digits", "rounds": 1, "iterations": 10, "eval_every": 10, "device": "cpu"}
FAST = ["--rounds", "1", "--iterations", "10", "--eval-every", "10", "--device", "cpu", "-q"]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so that a default ``runs/`` study would be seen."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_session(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump({"name": "big", "base": BASE, **content}))
    return path


def refused(capsys, *args) -> tuple[str, float, float]:
    """Run ``lth ARGS``, expect a one-line refusal; return (message, seconds, peak MB allocated)."""
    tracemalloc.start()
    tic = time.perf_counter()
    try:
        rc, _, err = cli(capsys, *args)
        seconds = time.perf_counter() - tic
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return one_line_error(rc, err), seconds, peak


def assert_nothing_written(cwd: Path, out: Path) -> None:
    assert not out.exists()
    assert list(cwd.iterdir()) == []  # no default runs/ directory either


# ------------------------------------------------------------------ lth robust


def test_robust_with_a_hundred_million_trials_is_refused_at_once(cwd, capsys):
    out = cwd.parent / "out"
    msg, seconds, peak = refused(
        capsys, "robust", "lenet-300-100", "digits", "--trials", "100000000", *FAST, "--out", out
    )
    assert (
        "--trials 100000000 gives 100000000 runs, above the limit of 10000 runs; if you mean it, "
        "raise the limit with --max-runs 100000000"
    ) in msg
    assert seconds < 2 and peak < 50
    assert_nothing_written(cwd, out)
    # also without --out: no default runs/ directory is reserved
    msg, seconds, _ = refused(capsys, "robust", "lenet-300-100", "digits", "--trials", "100000000", *FAST)
    assert "above the limit of 10000 runs" in msg and seconds < 2
    assert_nothing_written(cwd, out)


def test_robust_max_runs_sets_the_limit(cwd, capsys):
    out = cwd.parent / "out"
    msg, _, _ = refused(
        capsys, "robust", "lenet-300-100", "digits", "--trials", "3", "--max-runs", "2", *FAST, "--out", out
    )
    assert (
        "--trials 3 gives 3 runs, above the limit of 2 runs; if you mean it, raise the limit with --max-runs 3" in msg
    )
    assert_nothing_written(cwd, out)


def test_robust_max_runs_above_the_default_is_allowed(cwd, capsys, monkeypatch):
    """The study is built (configs of every trial) and handed on; no training here."""
    seen = {}

    def fake_run_study(kind, experiments, out, spec, **kwargs):
        seen["trials"] = len(experiments[0].trials)
        raise LthError("stopped before training")

    monkeypatch.setattr("lth.experiments.study.run_study", fake_run_study)
    tic = time.perf_counter()
    msg = one_line_error(
        *cli(
            capsys,
            "robust",
            "lenet-300-100",
            "digits",
            "--trials",
            str(MAX_RUNS + 1),
            "--max-runs",
            str(MAX_RUNS + 1),
            *FAST,
            "--out",
            cwd.parent / "out",
        )[::2]
    )
    assert "stopped before training" in msg
    assert seen["trials"] == MAX_RUNS + 1
    assert time.perf_counter() - tic < 30


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--trials", "0"], "--trials must be at least 1, got 0"),
        (["--trials", "-3"], "--trials must be at least 1, got -3"),
        (["--max-runs", "0"], "--max-runs must be at least 1 (the most runs a study may hold), got 0"),
        (["--max-runs", "-1"], "--max-runs must be at least 1 (the most runs a study may hold), got -1"),
    ],
)
def test_bad_robust_sizes(cwd, capsys, args, expected):
    out = cwd.parent / "out"
    msg, seconds, _ = refused(capsys, "robust", "lenet-300-100", "digits", *args, *FAST, "--out", out)
    assert expected in msg and seconds < 2
    assert_nothing_written(cwd, out)


# ------------------------------------------------------------------ lth session


def test_session_grid_of_640000_experiments_is_refused_at_once(cwd, capsys):
    out = cwd.parent / "out"
    grid = {"prune_rate": [round(0.001 * i, 4) for i in range(1, 801)], "lr": [1e-5 * i for i in range(1, 801)]}
    spec = write_session(cwd.parent / "s.yaml", grid=grid)
    msg, seconds, peak = refused(capsys, "session", spec, "--out", out)
    assert (
        "the session has 640000 experiments x 1 trials = 640000 runs, above the limit of 10000 runs; "
        "if you mean it, raise the limit with --max-runs 640000 (or max_runs: 640000 in the session file)"
    ) in msg
    assert seconds < 2 and peak < 50
    assert_nothing_written(cwd, out)


def test_session_with_a_hundred_million_trials_is_refused_at_once(cwd, capsys):
    out = cwd.parent / "out"
    spec = write_session(cwd.parent / "s.yaml", grid={"criterion": ["large_final", "movement"]}, trials=100_000_000)
    msg, seconds, peak = refused(capsys, "session", spec, "--out", out)
    assert "the session has 2 experiments x 100000000 trials = 200000000 runs, above the limit of 10000 runs" in msg
    assert seconds < 2 and peak < 50
    assert_nothing_written(cwd, out)
    # without --out: nothing reserved under runs/
    msg, seconds, _ = refused(capsys, "session", spec)
    assert "200000000 runs" in msg and seconds < 2
    assert_nothing_written(cwd, out)


def test_session_grid_of_astronomical_size_is_counted_not_expanded(cwd, capsys):
    """Counting is O(grid keys): 40 keys of 10 values (10^40 cells) are refused as fast as 2."""
    from lth.config import TicketConfig

    keys = [k for k in TicketConfig.model_fields if k not in ("model", "dataset", "name")][:40]
    assert len(keys) == 40
    spec = write_session(
        cwd.parent / "s.yaml",
        base={"model": "lenet-300-100", "dataset": "digits"},
        grid={k: list(range(10)) for k in keys},
        trials=3,
    )
    out = cwd.parent / "out"
    msg, seconds, peak = refused(capsys, "session", spec, "--out", out)
    assert (
        "the session has about 10^40 experiments x 3 trials = about 10^40 runs, above the limit of 10000 "
        "runs; if you mean it, raise the limit with --max-runs N (or max_runs: N in the session file)"
    ) in msg
    assert seconds < 2 and peak < 50
    assert_nothing_written(cwd, out)


def test_session_limit_from_the_file_and_the_flag(cwd, capsys, monkeypatch):
    out = cwd.parent / "out"
    spec = write_session(cwd.parent / "s.yaml", grid={"criterion": ["large_final", "movement"]}, trials=3, max_runs=5)
    msg, _, _ = refused(capsys, "session", spec, "--out", out)
    assert "the session has 2 experiments x 3 trials = 6 runs, above the limit of 5 runs" in msg
    msg, _, _ = refused(capsys, "session", spec, "--max-runs", "4", "--out", out)  # the flag wins over the file
    assert "6 runs, above the limit of 4 runs" in msg
    assert_nothing_written(cwd, out)
    seen = {}

    def fake_run_study(kind, experiments, out, spec, **kwargs):
        seen["runs"] = sum(len(e.trials) for e in experiments)
        raise LthError("stopped before training")

    monkeypatch.setattr("lth.experiments.study.run_study", fake_run_study)
    assert "stopped before training" in one_line_error(
        *cli(capsys, "session", spec, "--max-runs", "6", "--out", out)[::2]
    )
    assert seen["runs"] == 6


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"trials": 0}, "bad value 0 for session key trials"),
        ({"trials": -5}, "bad value -5 for session key trials"),
        ({"max_runs": 0}, "bad value 0 for session key max_runs"),
        ({"max_runs": "lots"}, "bad value 'lots' for session key max_runs"),
        ({"max_runs": True}, "bad value True for session key max_runs"),
        ({"grid": {"criterion": ["large_final"], "lr": []}}, "grid key 'lr' has no values; give a non-empty list"),
        (
            {"grid": {"criterion": ["large_final"], "learning_rate": [0.1, 0.2]}},
            "unknown config key 'learning_rate' in the session's grid; allowed keys: model, dataset",
        ),
        ({"grid": {"lr": [], "seed": list(range(1000)), "prune_rate": [0.1] * 1000}}, "grid key 'lr' has no values"),
        ({"grid": [["lr", 0.1]]}, "bad value [['lr', 0.1]] for session key grid"),
        ({"sessions": 3}, "unknown session key 'sessions'; allowed: name, base, grid, trials, max_runs"),
    ],
)
def test_bad_session_sizes_and_grids(cwd, capsys, content, expected):
    out = cwd.parent / "out"
    spec = write_session(cwd.parent / "s.yaml", **{"grid": {"criterion": ["large_final"]}, **content})
    msg, seconds, _ = refused(capsys, "session", spec, "--out", out)
    assert expected in msg and seconds < 2
    assert_nothing_written(cwd, out)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_session_max_runs_flag(cwd, capsys, value):
    out = cwd.parent / "out"
    spec = write_session(cwd.parent / "s.yaml", grid={"criterion": ["large_final"]})
    msg, _, _ = refused(capsys, "session", spec, "--max-runs", value, "--out", out)
    assert f"--max-runs must be at least 1 (the most runs a study may hold), got {value}" in msg
    assert_nothing_written(cwd, out)


def test_session_spec_counts_without_expanding():
    from lth.experiments.session_spec import SessionSpec

    spec = SessionSpec(
        base={"model": "lenet-300-100", "dataset": "digits"},
        grid={"lr": list(range(1000)), "seed": list(range(1000)), "prune_rate": [0.1] * 1000},
        trials=7,
    )
    tic = time.perf_counter()
    assert spec.count() == 7 * 10**9
    with pytest.raises(LthError, match=r"7000000000 runs, above the limit of 10000 runs.* --max-runs 7000000000"):
        spec.experiments()
    assert time.perf_counter() - tic < 1


# ------------------------------------------------------------------ Python API


def test_lottery_robust_refuses_before_building_any_trial(digits):
    calls = []

    def factory(seed: int):
        calls.append(seed)
        raise AssertionError("no trial may be built")

    tracemalloc.start()
    tic = time.perf_counter()
    try:
        with pytest.raises(LthError) as info:
            LotteryRobust(factory, digits, trials=100_000_000, iterations=10, device="cpu", progress=False)
        seconds, peak = time.perf_counter() - tic, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        "trials=100000000 gives 100000000 runs, above the limit of 10000 runs; if you mean "
        "it, raise the limit with LotteryRobust(..., max_runs=100000000)"
    )
    assert seconds < 2 and peak < 50 and calls == []
    with pytest.raises(LthError, match=r"trials=3 gives 3 runs, above the limit of 2 runs"):
        LotteryRobust(factory, digits, trials=3, max_runs=2)
    with pytest.raises(LthError, match=r"trials=about 10\^1000 gives about 10\^1000 runs.*max_runs=N\)$"):
        LotteryRobust(factory, digits, trials=10**1000)
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"trials": 0}, "trials must be an integer >= 1, got 0"),
        ({"trials": -(10**5000)}, "trials must be an integer >= 1, got -about 10^5000"),
        ({"trials": 2.5}, "trials must be an integer >= 1, got 2.5"),
        ({"trials": 2, "max_runs": 0}, "max_runs must be an integer >= 1 (the most runs a study may hold), got 0"),
        (
            {"trials": 2, "max_runs": "many"},
            "max_runs must be an integer >= 1 (the most runs a study may hold), got 'many'",
        ),
        (
            {"trials": 2, "max_runs": True},
            "max_runs must be an integer >= 1 (the most runs a study may hold), got True",
        ),
    ],
)
def test_lottery_robust_bad_sizes(digits, kwargs, expected):
    with pytest.raises(LthError) as info:
        LotteryRobust(lambda seed: pytest.fail("no trial may be built"), digits, **kwargs)
    assert str(info.value) == expected


def test_lottery_robust_max_runs_allows_more(digits):
    from torch import nn

    robust = LotteryRobust(
        lambda seed: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
        digits,
        trials=3,
        max_runs=3,
        iterations=10,
        device="cpu",
        progress=False,
    )
    assert robust.trials == 3


def test_lottery_session_limits_its_experiments(digits):
    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    session = LotterySession(net, digits, max_runs=2, iterations=10, device="cpu", progress=False)
    session.new_experiment("a")
    session.new_experiment("b")
    with pytest.raises(LthError) as info:
        session.new_experiment("c")
    assert str(info.value) == (
        "the session already holds 2 experiments, its limit; if you mean it, raise the "
        "limit with LotterySession(..., max_runs=N)"
    )
    assert list(session.experiments) == ["a", "b"]
    assert LotterySession(net, digits, iterations=10, device="cpu").max_runs == MAX_RUNS
    with pytest.raises(
        LthError, match=r"^max_runs must be an integer >= 1 \(the most runs a study may hold\), got -1$"
    ):
        LotterySession(net, digits, max_runs=-1)


# ------------------------------------------------------------------ an allowed big study


def test_allowed_2000_run_session_sets_up_in_seconds(cwd, capsys, monkeypatch):
    """A 1000-experiment x 2-trial grid: built, study.yaml written, and every later read of it
    (the status and index update after each trial) fast. Before: ~2 minutes of set-up, then
    ~20 s per finished trial to re-parse study.yaml."""
    from lth.store.index import describe_run
    from lth.store.study_dir import StudyDir

    def stop(*args, **kwargs):
        raise LthError("stopped where the trials would start")

    monkeypatch.setattr("lth.experiments.study._backend", stop)
    grid = {"prune_rate": [round(0.01 * i, 2) for i in range(1, 51)], "lr": [1e-3 * i for i in range(1, 21)]}
    spec = write_session(cwd.parent / "s.yaml", grid=grid, trials=2)
    out = cwd.parent / "out"
    tic = time.perf_counter()
    msg = one_line_error(*cli(capsys, "session", spec, "--out", out)[::2])
    setup = time.perf_counter() - tic
    assert "stopped where the trials would start" in msg
    study = StudyDir(out)
    tic = time.perf_counter()
    description = study.study()
    describe_run(out)
    reread = time.perf_counter() - tic
    assert sum(len(e["runs"]) for e in description["experiments"]) == 2000
    assert description["experiments"][-1]["runs"][1]["config"]["seed"] == 1
    assert setup < 40 and reread < 2, (setup, reread)


def test_study_yaml_is_unchanged_and_its_cache_follows_the_file(tmp_path):
    from lth.store.study_dir import StudyDir

    description = {
        "kind": "robust",
        "name": "x",
        "spec": {"trials": 1},
        "experiments": [
            {"name": "ticket", "settings": {}, "runs": [{"trial": 0, "path": "trial_00", "config": {"lr": 1e-05}}]}
        ],
    }
    study = StudyDir(tmp_path)
    study.write_study(description)
    assert (tmp_path / "study.yaml").read_text() == yaml.safe_dump(description, sort_keys=False)
    first = study.study()
    assert first == description
    first["experiments"].clear()  # callers get their own copy
    assert study.study() == description
    (tmp_path / "study.yaml").write_text((tmp_path / "study.yaml").read_text().replace("ticket", "tickets"))
    assert study.study()["experiments"][0]["name"] == "tickets"
    (tmp_path / "study.yaml").write_text("kind: [robust\n")
    with pytest.raises(LthError, match="it is not valid YAML"):
        study.study()
