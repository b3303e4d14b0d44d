"""Tests for LotterySession (experiments on one initialisation) and LotteryRobust (trials over seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lth import LotteryModel, LotteryRobust, LotterySession, LthError
from lth.experiments.lottery_model import fresh_initialisation
from lth.experiments.statistics import DEFAULT_METRICS, SUMMARY_COLUMNS
from lth.models import build_model

FAST = dict(iterations=60, eval_every=20, device="cpu", progress=False)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU())
        self.out = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def small(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    return SmallNet()


def lenet(seed: int) -> nn.Module:
    return build_model("lenet-300-100", (1, 8, 8), 10, seed=seed)


def equal_states(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ LotterySession


def test_session_experiments_share_the_initialisation(digits):
    net = small()
    session = LotterySession(net, digits, **FAST)
    a = session.new_experiment("magnitude")
    b = session.new_experiment("movement", lr=3e-3)
    assert equal_states(a.initial_state, b.initial_state)
    assert equal_states(a.initial_state, net.state_dict())
    a.iterative_pruning(rounds=1)
    b.iterative_pruning(rounds=1, criterion="movement")
    assert b.settings.lr == 3e-3 and a.settings.lr == 1.2e-3

    session.reset_network(random=True)
    c = session.new_experiment("fresh")
    assert not equal_states(c.initial_state, a.initial_state)
    assert equal_states(c.initial_state, session.initial_state)
    session.reset_network(random=True)
    assert not equal_states(session.initial_state, c.initial_state)  # every draw is new
    session.reset_network()
    assert equal_states(session.new_experiment("original").initial_state, net.state_dict())

    summary = session.summary()
    assert summary.columns[0] == "experiment"
    assert summary["experiment"].tolist() == ["magnitude", "magnitude", "movement", "movement"]
    assert summary["round"].tolist() == [0, 1, 0, 1]
    fig = session.plot_accuracy()
    assert len(fig.axes[0].lines) == 4


def test_session_is_reproducible(digits):
    def draw():
        session = LotterySession(small(), digits, seed=3, **FAST)
        session.reset_network(random=True)
        return session.initial_state

    assert equal_states(draw(), draw())
    state = torch.random.get_rng_state()
    draw()
    assert torch.equal(torch.random.get_rng_state(), state)


def test_session_mistakes(digits):
    session = LotterySession(small(), digits, **FAST)
    session.new_experiment("a")
    with pytest.raises(LthError, match="experiment 'a' already exists"):
        session.new_experiment("a")
    with pytest.raises(LthError, match="unknown LotteryModel setting 'learning_rate'"):
        session.new_experiment("b", learning_rate=0.1)
    with pytest.raises(LthError, match="unknown LotteryModel setting 'rounds'"):
        LotterySession(small(), digits, rounds=3)
    with pytest.raises(LthError, match="lr must be a positive number"):
        LotterySession(small(), digits, lr=0)


# ------------------------------------------------------------------ LotteryRobust


@pytest.fixture(scope="module")
def robust(digits):
    runs = LotteryRobust(lenet, digits, trials=3, seed=0, **FAST)
    runs.run("iterative_pruning", rounds=1)
    return runs


def test_robust_summary_matches_numpy_and_scipy(robust):
    trials = robust.trial_summaries()
    assert len(trials) == 3 and all(len(rows) == 2 for rows in trials)
    summary = robust.summary()
    assert list(summary.columns) == ["line", *SUMMARY_COLUMNS] and set(summary["line"]) == {"ticket"}
    assert len(summary) == 2 * len(DEFAULT_METRICS)
    t = stats.t.ppf(0.975, 2)
    for _, line in summary.iterrows():
        values = np.array([next(r for r in rows if r["round"] == line["round"])[line["metric"]] for rows in trials])
        mean, std = values.mean(), values.std(ddof=1)
        assert line["trials"] == 3
        assert line["mean"] == pytest.approx(mean, abs=1e-12)
        assert line["median"] == pytest.approx(np.median(values), abs=1e-12)
        assert (line["min"], line["max"]) == (values.min(), values.max())
        assert line["std"] == pytest.approx(std, abs=1e-12)
        assert line["ci95_low"] == pytest.approx(mean - t * std / math.sqrt(3), abs=1e-12)
        assert line["ci95_high"] == pytest.approx(mean + t * std / math.sqrt(3), abs=1e-12)
    accuracy = summary[summary["metric"] == "test_accuracy_at_early_stop"]
    assert accuracy["weights_remaining"].tolist() == pytest.approx([1.0, 0.8], abs=1e-3)


def test_robust_trials_differ_and_each_is_reproducible(robust, digits):
    first, second = robust.models[0], robust.models[1]
    assert not equal_states(first.initial_state, second.initial_state)
    alone = LotteryModel(lenet(1), digits, seed=1, **FAST)
    alone.iterative_pruning(rounds=1)
    assert alone.summary().drop(columns="seconds").equals(second.summary().drop(columns="seconds"))
    assert all(torch.equal(alone.mask[k], second.mask[k]) for k in alone.mask)
    fig = robust.plot_accuracy()
    assert fig.axes[0].get_xscale() == "log"


def test_robust_from_a_module_reinitialises_every_trial(digits):
    net = small()
    runs = LotteryRobust(net, digits, trials=2, seed=7, **FAST)
    for i, trial in enumerate(runs.models):
        assert trial.settings.seed == 7 + i
        assert equal_states(trial.initial_state, fresh_initialisation(net, 7 + i).state_dict())
        assert not equal_states(trial.initial_state, net.state_dict())
    summary = runs.run("one_shot", keep=0.5)
    assert sorted(set(summary["round"])) == [0, 1]
    assert runs.trials == 2


def test_robust_mistakes(digits):
    for trials in (0, -1, 1.5, True):
        with pytest.raises(LthError, match="trials must be an integer >= 1") as info:
            LotteryRobust(small(), digits, trials=trials, **FAST)
        assert "\n" not in str(info.value)
    with pytest.raises(LthError, match="factory returned a str"):
        LotteryRobust(lambda seed: "net", digits, trials=1, **FAST)
    with pytest.raises(LthError, match="must be a torch.nn.Module or a factory"):
        LotteryRobust(42, digits, **FAST)
    runs = LotteryRobust(small(), digits, trials=1, **FAST)
    with pytest.raises(LthError, match="unknown method 'prune'"):
        runs.run("prune")
    with pytest.raises(LthError, match=r"bad arguments for iterative_pruning\(\)"):
        runs.run(rounds=1, keep=0.5)
    with pytest.raises(LthError, match=r"call run\(\) first"):
        runs.summary()


def test_robust_trials_side_by_side_equal_trials_alone(digits):
    """vectorize=3: the three trials train in one vectorised step; same masks, accuracies within one
    borderline image (products summed in another order; the 1e-4 check is in test_vectorized.py)."""
    results = {}
    for vectorize in ("off", 3):
        robust = LotteryRobust(lenet, digits, trials=3, vectorize=vectorize, **FAST)
        robust.run("iterative_pruning", rounds=1)
        results[vectorize] = robust
    for alone, together in zip(results["off"].models, results[3].models):
        a, b = alone.summary(), together.summary()
        assert a["kept_weights"].tolist() == b["kept_weights"].tolist()
        for column in ("test_accuracy_at_early_stop", "final_test_accuracy", "val_accuracy_at_early_stop"):
            assert (a[column] - b[column]).abs().max() <= 1 / 300 + 1e-9
        assert all(torch.equal(alone.mask[k], together.mask[k]) for k in alone.mask)
    with pytest.raises(LthError, match="vectorize must be a number of networks, auto or off; got 'x'"):
        LotteryRobust(lenet, digits, trials=2, vectorize="x", **FAST).run("iterative_pruning", rounds=1)
