"""The compact views of LotteryRobust and LotterySession summaries: one row per line and round,
metrics as columns under short names, the summary's own values, readable at 80 columns."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lth import LotteryRobust, LotterySession, LthError
from lth.experiments.statistics import (
    DEFAULT_METRICS,
    SHORT_NAMES,
    SUMMARY_COLUMNS,
    pivot_summary,
    summarise_lines,
)
from lth.models import build_model

FAST = dict(iterations=40, eval_every=20, device="cpu", progress=False)
ROUNDS = 2
COLUMNS = ["weights", "test", "test_ci", "test_end", "es_iter"]


def lenet(seed: int):
    return build_model("lenet-300-100", (1, 8, 8), 10, seed=seed)


@pytest.fixture(scope="module")
def robust(digits):
    """3 trials of 2 rounds with a reinit control."""
    runs = LotteryRobust(lenet, digits, trials=3, controls=["reinit"], **FAST)
    runs.run("iterative_pruning", rounds=ROUNDS)
    return runs


def widest(frame: pd.DataFrame) -> int:
    with pd.option_context("display.width", 80):
        return max(len(line) for text in (frame.to_string(), repr(frame)) for line in text.splitlines())


def test_robust_pivot_has_one_row_per_line_and_round(robust):
    wide = robust.pivot()
    assert wide.index.names == ["line", "round"]
    assert list(wide.columns) == COLUMNS
    expected = [("ticket", r) for r in range(ROUNDS + 1)] + [("reinit", r) for r in range(1, ROUNDS + 1)]
    assert list(wide.index) == expected and wide.shape == (len(expected), len(COLUMNS))


def test_robust_pivot_values_are_the_summary_statistics(robust):
    wide = robust.pivot()
    long = robust.summary()
    assert list(long.columns) == ["line", *SUMMARY_COLUMNS]  # summary() itself is unchanged
    stats = {(r["line"], r["round"], r["metric"]): r for r in long.to_dict("records")}
    for (line, round_index), row in wide.iterrows():
        test = stats[(line, round_index, "test_accuracy_at_early_stop")]
        assert row["weights"] == test["weights_remaining"]
        assert row["test"] == test["mean"]
        assert row["test_ci"] == test["ci95_high"] - test["mean"]
        assert row["test_end"] == stats[(line, round_index, "final_test_accuracy")]["mean"]
        assert row["es_iter"] == stats[(line, round_index, "early_stop_iteration")]["mean"]
        # ... which are the means over the trials of what each trial recorded.
        values = [
            next(r for r in trial.lines()[line] if r["round"] == round_index)["test_accuracy_at_early_stop"]
            for trial in robust.models
        ]
        assert row["test"] == pytest.approx(math.fsum(values) / 3, abs=1e-12)


def test_robust_pivot_fits_80_columns_where_the_summary_does_not(robust):
    assert widest(robust.pivot()) <= 80
    assert widest(robust.summary()) > 80  # why the view exists


def test_pivot_other_metrics_and_statistics(robust):
    every = robust.pivot(metrics=list(DEFAULT_METRICS), value="median", ci=False)
    assert list(every.columns) == ["weights", *(SHORT_NAMES[m] for m in DEFAULT_METRICS)]
    stats = {(r["line"], r["round"], r["metric"]): r for r in robust.summary().to_dict("records")}
    for (line, round_index), row in every.iterrows():
        for metric in DEFAULT_METRICS:
            assert row[SHORT_NAMES[metric]] == stats[(line, round_index, metric)]["median"]
    with pytest.raises(LthError, match="unknown metric 'accuracy': the summary has test_accuracy_at_early_stop"):
        robust.pivot(metrics=["accuracy"])
    with pytest.raises(LthError, match="unknown statistic 'average'; choose one of: mean, median"):
        robust.pivot(value="average")


def test_pivot_of_study_rows_and_of_one_trial():
    rows = [
        {
            "round": r,
            "weights_remaining": w,
            "test_accuracy_at_early_stop": a,
            "final_test_accuracy": a,
            "early_stop_iteration": 20,
        }
        for r, w, a in ((0, 1.0, 0.9), (1, 0.8, 0.92))
    ]
    one = pivot_summary(summarise_lines([{"ticket": rows}]))
    assert list(one.index) == [("ticket", 0), ("ticket", 1)]
    assert one["test"].tolist() == [0.9, 0.92] and one["test_ci"].isna().all()  # no CI from one trial
    study = [{"experiment": "base", **r} for r in summarise_lines([{"ticket": rows}, {"ticket": rows}])]
    wide = pivot_summary(study)
    assert wide.index.names == ["experiment", "line", "round"] and list(wide.columns) == COLUMNS
    assert wide.loc[("base", "ticket", 1), "test_ci"] == 0.0
    assert pivot_summary([]).shape == (0, 1)  # nothing summarised: an empty frame


def test_session_pivot(digits):
    session = LotterySession(lenet(0), digits, **FAST)
    session.new_experiment("magnitude", controls="reinit").iterative_pruning(rounds=1)
    session.new_experiment("movement with a long name").iterative_pruning(rounds=1, criterion="movement")
    wide, long = session.pivot(), session.summary()
    assert wide.index.names == ["experiment", "line", "round"]
    assert list(wide.columns) == ["weights", "test", "test_end", "es_iter"]
    assert list(wide.index) == list(zip(long["experiment"], long["line"], long["round"]))
    assert wide["test"].tolist() == long["test_accuracy_at_early_stop"].tolist()
    assert wide["test_end"].tolist() == long["final_test_accuracy"].tolist()
    assert wide["es_iter"].tolist() == long["early_stop_iteration"].tolist()
    assert wide["weights"].tolist() == long["weights_remaining"].tolist()
    assert widest(wide) <= 80 < widest(long)
    assert list(session.pivot(metrics=["final_test_loss"]).columns) == ["weights", "loss_end"]
