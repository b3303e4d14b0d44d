"""Tests for lth.experiments.statistics: per-round summaries over trials, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lth import LthError, summarise_trials
from lth.experiments.statistics import DEFAULT_METRICS, SUMMARY_COLUMNS, describe, summary_frame

# Student t quantile 0.975 with 2 degrees of freedom, in closed form: for 2 degrees of freedom
# t_p = (2p - 1) * sqrt(2 / (4p(1 - p))) = 0.95 * sqrt(2 / 0.0975) = 4.3026527297494638...
# (the often-quoted 4.302652729911275 is off in the 10th digit).
T_975_2 = 0.95 * math.sqrt(2 / 0.0975)


def row(round_index: int, remaining: float, **metrics: float) -> dict:
    return {
        "round": round_index,
        "weights_remaining": remaining,
        "layers": {"fc.weight": remaining},
        "seconds": 0.1,
        **metrics,
    }


def trial(*accuracies: float, iteration: int = 100) -> list[dict]:
    """One row per round (weights remaining 0.8^round) with the given test accuracies at early stop."""
    return [
        row(r, 0.8**r, test_accuracy_at_early_stop=a, early_stop_iteration=iteration) for r, a in enumerate(accuracies)
    ]


def pick(rows: list[dict], round_index: int, metric: str) -> dict:
    (found,) = [r for r in rows if r["round"] == round_index and r["metric"] == metric]
    return found


def test_three_trials_by_hand():
    rows = summarise_trials([trial(0.80), trial(0.90), trial(0.85)], ["test_accuracy_at_early_stop"])
    assert len(rows) == 1
    (r,) = rows
    assert list(r) == list(SUMMARY_COLUMNS)
    half = T_975_2 * 0.05 / math.sqrt(3)
    assert r["round"] == 0 and r["weights_remaining"] == 1.0 and r["trials"] == 3
    assert r["metric"] == "test_accuracy_at_early_stop"
    assert r["mean"] == pytest.approx(0.85, abs=1e-15)
    assert r["median"] == pytest.approx(0.85, abs=1e-15)
    assert (r["min"], r["max"]) == (0.80, 0.90)
    assert r["std"] == pytest.approx(0.05, abs=1e-15)
    assert r["ci95_low"] == pytest.approx(0.85 - half, abs=1e-14)
    assert r["ci95_high"] == pytest.approx(0.85 + half, abs=1e-14)
    assert T_975_2 == pytest.approx(4.302652729749464, abs=1e-14)
    assert T_975_2 == pytest.approx(4.302652729911275, rel=1e-10)
    assert all(type(r[k]) is float for k in ("mean", "median", "min", "max", "std", "ci95_low", "ci95_high"))


def test_one_trial_has_no_spread_and_is_json_friendly():
    rows = summarise_trials([trial(0.9, 0.7)])
    assert [r["round"] for r in rows] == [0, 0, 1, 1]
    for r in rows:
        assert r["trials"] == 1 and r["std"] is None and r["ci95_low"] is None and r["ci95_high"] is None
        assert r["mean"] == r["median"] == r["min"] == r["max"]
    text = json.dumps(rows, allow_nan=False)  # no NaN anywhere
    assert json.loads(text) == rows


def test_default_metrics_are_those_present_in_order():
    rows = summarise_trials([trial(0.8, 0.7), trial(0.9, 0.6)])
    present = [m for m in DEFAULT_METRICS if m in ("test_accuracy_at_early_stop", "early_stop_iteration")]
    assert [(r["round"], r["metric"]) for r in rows] == [(r_, m) for r_ in (0, 1) for m in present]
    assert pick(rows, 1, "test_accuracy_at_early_stop")["weights_remaining"] == pytest.approx(0.8)
    iteration = pick(rows, 0, "early_stop_iteration")
    assert iteration["mean"] == 100.0 and iteration["std"] == 0.0 and iteration["ci95_low"] == 100.0


def test_metric_order_follows_the_request():
    rows = summarise_trials([trial(0.8), trial(0.9)], ["early_stop_iteration", "test_accuracy_at_early_stop"])
    assert [r["metric"] for r in rows] == ["early_stop_iteration", "test_accuracy_at_early_stop"]


def test_only_rounds_common_to_every_trial():
    a = trial(0.8, 0.7, 0.6)
    b = trial(0.9, 0.6)
    c = [r for r in trial(0.85, 0.65, 0.55) if r["round"] != 1]  # rounds 0 and 2
    rows = summarise_trials([a, b, c], ["test_accuracy_at_early_stop"])
    assert [r["round"] for r in rows] == [0]
    rows = summarise_trials([a, b], ["test_accuracy_at_early_stop"])
    assert [r["round"] for r in rows] == [0, 1]
    assert pick(rows, 1, "test_accuracy_at_early_stop")["mean"] == pytest.approx(0.65)


def test_rows_are_grouped_by_round_not_by_position():
    a = trial(0.8, 0.6)
    b = list(reversed(trial(0.9, 0.7)))
    rows = summarise_trials([a, b], ["test_accuracy_at_early_stop"])
    assert pick(rows, 0, "test_accuracy_at_early_stop")["mean"] == pytest.approx(0.85)
    assert pick(rows, 1, "test_accuracy_at_early_stop")["mean"] == pytest.approx(0.65)


def test_weights_remaining_is_the_mean_over_trials():
    a = [row(0, 1.0, acc=0.5), row(1, 0.80, acc=0.5)]
    b = [row(0, 1.0, acc=0.5), row(1, 0.82, acc=0.7)]
    rows = summarise_trials([a, b], ["acc"])
    assert pick(rows, 1, "acc")["weights_remaining"] == pytest.approx(0.81)


def test_unknown_metric_and_bad_input_raise_lth_error():
    with pytest.raises(LthError, match="unknown metric 'accuracy'") as info:
        summarise_trials([trial(0.8)], ["accuracy"])
    assert "test_accuracy_at_early_stop" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LthError, match="at least one trial"):
        summarise_trials([])
    with pytest.raises(LthError, match="round 0 twice"):
        summarise_trials([trial(0.8) + trial(0.9)])
    with pytest.raises(LthError, match="without a 'round'"):
        summarise_trials([[{"test_accuracy_at_early_stop": 0.5}]])
    with pytest.raises(LthError, match="finite number"):
        summarise_trials([trial(0.8), trial(float("nan"))])
    with pytest.raises(LthError, match="non-empty list"):
        summarise_trials([trial(0.8)], "test_accuracy_at_early_stop")


def test_summary_frame_columns():
    frame = summary_frame(summarise_trials([trial(0.8, 0.7), trial(0.9, 0.6), trial(0.85, 0.65)]))
    assert list(frame.columns) == list(SUMMARY_COLUMNS)
    assert len(frame) == 4
    assert summary_frame([]).columns.tolist() == list(SUMMARY_COLUMNS)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=12))
def test_describe_matches_numpy_and_scipy(values):
    d = describe(values)
    a = np.array(values)
    n = len(values)
    assert d["mean"] == pytest.approx(a.mean(), abs=1e-9)
    assert d["median"] == pytest.approx(np.median(a), abs=1e-9)
    assert d["std"] == pytest.approx(a.std(ddof=1), abs=1e-9)
    half = stats.t.ppf(0.975, n - 1) * a.std(ddof=1) / math.sqrt(n)
    assert d["ci95_low"] == pytest.approx(a.mean() - half, abs=1e-8)
    assert d["ci95_high"] == pytest.approx(a.mean() + half, abs=1e-8)
    assert d["min"] <= d["mean"] + 1e-9 and d["mean"] <= d["max"] + 1e-9
