"""Tests for LotteryModel.stability: instability analysis of the user's own model (tiny MLP on digits)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from lth import LotteryModel, LthError
from lth.experiments.branch_kinds import level_seed
from lth.experiments.stability import entries_frame
from lth.training import Trainer, interpolation
from lth.training.evaluate import evaluate

QUICK = dict(iterations=30, eval_every=10, device="cpu", progress=False)
ANALYSIS = dict(rewind=[0, 10], copies=2, points=3)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def timeless(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["seconds"])


@pytest.fixture(scope="module")
def dense(digits):
    """An untrained dense ticket and its analysis at k = 0 and 10 (2 copies, 3 points)."""
    ticket = LotteryModel(mlp(), digits, **QUICK)
    return ticket, ticket.stability(**ANALYSIS)


def test_columns_and_rows(dense):
    ticket, frame = dense
    base = list(entries_frame([]).columns)
    assert list(frame.columns) == [*base, "stable_threshold", "per_pair", "children"]
    assert frame["rewind_iteration"].tolist() == [0, 10]
    assert frame["level"].tolist() == [0, 0]
    assert frame["weights_remaining"].tolist() == [1.0, 1.0]
    assert frame["copies"].tolist() == [2, 2] and frame["trials"].tolist() == [1, 1]
    assert frame["pairs"].tolist() == [1, 1]
    assert frame["stable_threshold"].tolist() == [0.02, 0.02]
    for _, row in frame.iterrows():
        path = row["path"]
        assert path["alpha"] == [0.0, 0.5, 1.0]
        assert set(path) == {"alpha", "test_error", "train_error", "test_loss", "train_loss"}
        for split in ("test", "train"):  # one pair: the barriers are those of the mean path, exactly
            errors, losses = path[f"{split}_error"], path[f"{split}_loss"]
            assert row[f"instability_{split}"] == max(errors) - (errors[0] + errors[-1]) / 2
            assert row[f"loss_barrier_{split}"] == max(losses) - (losses[0] + losses[-1]) / 2
            assert row[f"instability_{split}_std"] == 0.0
        assert row["stable"] == (row["instability_test"] <= 0.02)
        children = row["children"]
        assert [c["copy"] for c in children] == [0, 1]
        assert [c["seed"] for c in children] == [level_seed(0, "stability-child", c) for c in (0, 1)]
        assert row["child_test_error"] == math.fsum(1 - c["final_test_accuracy"] for c in children) / 2
    assert ticket.rows == [] and ticket.round == 0  # nothing trained for the ticket itself


def test_path_ends_are_the_children(dense, digits):
    """alpha 0 and 1 are the two children, bit for bit: the same errors as evaluating them directly."""
    ticket, frame = dense
    for _, row in frame.iterrows():
        path, children = row["path"], row["children"]
        for end, child in ((0, children[0]), (-1, children[1])):
            assert path["test_error"][end] == 1.0 - child["final_test_accuracy"]
            assert path["test_loss"][end] == child["final_test_loss"]
    # Child 0 at k = 0, trained again by hand from w_0 with its documented data order, evaluated directly.
    net = mlp()
    settings = ticket.settings
    trainer = Trainer(
        digits,
        settings.batch_size,
        settings.optimizer_settings(),
        level_seed(0, "stability-child", 0),
        settings.eval_every,
        progress=False,
    )
    trainer.train(net, ticket.mask, start=0, stop=30)
    n = digits.train_x.shape[0]
    generator = torch.Generator().manual_seed(level_seed(0, "stability-path-train", 0))
    index = torch.randperm(n, generator=generator)[:n].sort().values
    test_loss, test_accuracy = evaluate(net, digits.test_x, digits.test_y).tolist()
    train_loss, train_accuracy = evaluate(net, digits.train_x[index], digits.train_y[index]).tolist()
    path = frame["path"][0]
    assert (path["test_error"][0], path["test_loss"][0]) == (1.0 - test_accuracy, test_loss)
    assert (path["train_error"][0], path["train_loss"][0]) == (1.0 - train_accuracy, train_loss)


def test_same_seed_same_frame(dense):
    ticket, frame = dense
    pd.testing.assert_frame_equal(ticket.stability(**ANALYSIS), frame)


def test_three_copies_three_pairs(digits):
    ticket = LotteryModel(mlp(), digits, **QUICK)
    frame = ticket.stability(rewind=0, copies=3, points=2, seed=7)
    row = frame.iloc[0]
    assert row["pairs"] == 3 and row["copies"] == 3
    assert [p["pair"] for p in row["per_pair"]] == ["0-1", "0-2", "1-2"]
    assert [c["seed"] for c in row["children"]] == [level_seed(7, "stability-child", c) for c in range(3)]
    values = [p["instability_test"] for p in row["per_pair"]]
    assert row["instability_test"] == math.fsum(values) / 3
    errors = [1 - c["final_test_accuracy"] for c in row["children"]]
    assert row["path"]["test_error"][0] == math.fsum([errors[0], errors[0], errors[1]]) / 3  # mean of the pairs' ends
    assert row["path"]["test_error"][1] == math.fsum([errors[1], errors[2], errors[2]]) / 3


def test_pruned_ticket_analysed_under_its_mask_and_left_untouched(digits, monkeypatch):
    seen = []
    original = interpolation.evaluate_path

    def spy(model, a, b, mask, points, splits, batch_norm_data=None):
        seen.append((a, b, mask))
        return original(model, a, b, mask, points, splits, batch_norm_data)

    ticket = LotteryModel(mlp(), digits, **QUICK)
    ticket.iterative_pruning(rounds=1, rate=0.5)
    mask = ticket.mask
    before = (
        ticket.summary(),
        ticket.metrics(),
        ticket.model.state_dict(),
        ticket._generator.get_state(),
        torch.get_rng_state(),
    )
    monkeypatch.setattr(interpolation, "evaluate_path", spy)
    frame = ticket.stability(points=2)
    monkeypatch.undo()
    row = frame.iloc[0]
    assert (row["level"], row["rewind_iteration"]) == (1, 0)
    assert row["weights_remaining"] == mask.density() < 0.6
    ((a, b, used),) = seen
    assert list(used) == list(mask) and all(torch.equal(used[n].cpu(), mask[n]) for n in mask)
    for name, m in mask.items():  # both children: pruned weights exactly 0
        assert bool((a[name][~m] == 0).all()) and bool((b[name][~m] == 0).all())
        assert not torch.equal(a[name], b[name])  # different data orders
    # Nothing of the experiment changed ...
    after = (
        ticket.summary(),
        ticket.metrics(),
        ticket.model.state_dict(),
        ticket._generator.get_state(),
        torch.get_rng_state(),
    )
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_frame_equal(after[1], before[1])
    assert all(torch.equal(after[2][k], v) for k, v in before[2].items())
    assert torch.equal(after[3], before[3]) and torch.equal(after[4], before[4])
    # ... so the next round is the same as without the analysis.
    ticket.iterative_pruning(rounds=1, rate=0.5)
    plain = LotteryModel(mlp(), digits, **QUICK)
    plain.iterative_pruning(rounds=2, rate=0.5)
    pd.testing.assert_frame_equal(timeless(ticket.summary()), timeless(plain.summary()))
    assert all(torch.equal(ticket.mask[n], plain.mask[n]) for n in mask)
    theirs = plain.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ticket.model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(copies=1), "copies must be a whole number from 2 to 64 (instability compares pairs of copies), got 1"),
        (dict(copies=True), "copies must be a whole number from 2 to 64"),
        (dict(points=1), "points must be a whole number from 2 to 10001 (a path has two ends), got 1"),
        (dict(path_train_size=0), "path_train_size must be a whole number >= 1"),
        (
            dict(rewind=30),
            "rewind point 30 is not before the end of training (budget 30 iterations); give iterations from 0 to 29",
        ),
        (dict(rewind=[0, -1]), "rewind point -1 is negative; give iterations from 0 to 29"),
        (dict(rewind=[0.5]), "rewind point 0.5 is not a whole number of iterations; give iterations from 0 to 29"),
        (dict(rewind=[]), "rewind is empty; give rewind iterations from 0 to 29"),
        (dict(rewind="0,10"), "rewind must be an iteration or a list of iterations, got '0,10'"),
        (dict(stable_threshold=101), "stable_threshold must be between 0 and 100 percentage points, got 101"),
        (dict(stable_threshold=-0.5), "stable_threshold must be between 0 and 100 percentage points, got -0.5"),
        (dict(stable_threshold=float("nan")), "stable_threshold must be between 0 and 100 percentage points, got nan"),
        (dict(batch_norm_reset="yes"), "batch_norm_reset must be True or False, got 'yes'"),
        (dict(seed=1.5), "seed must be None (the model's seed) or an integer"),
    ],
)
def test_bad_input(dense, kwargs, expected):
    ticket, _ = dense
    with pytest.raises(LthError) as error:
        ticket.stability(**kwargs)
    assert one_line(error).startswith(expected)


def test_rewind_before_a_pruned_round_start(digits):
    ticket = LotteryModel(mlp(), digits, **QUICK, rewind_iteration=5)
    ticket.train()
    ticket.prune(rate=0.5)
    with pytest.raises(LthError) as error:
        ticket.stability(rewind=[0, 10])
    assert one_line(error) == (
        "rewind point 0 is before round 1's start: pruned rounds restart from rewind_iteration "
        "5; give iterations from 5 to 29"
    )
