"""Statistics over repeated trials: per pruning round, the mean, spread and a Student-t 95% CI.

A trial is the list of per-round rows of one ticket search (as in ``rounds.json``). Rows are
grouped by ``"round"``; only rounds that every trial reached are summarised.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lth.errors import LthError

if TYPE_CHECKING:
    import pandas as pd

#: The metrics summarised when none are asked for (those present in the rows).
DEFAULT_METRICS: tuple[str, ...] = (
    "test_accuracy_at_early_stop",
    "final_test_accuracy",
    "val_accuracy_at_early_stop",
    "final_val_accuracy",
    "early_stop_iteration",
    "final_test_loss",
)

#: The columns of every summary row, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "round",
    "weights_remaining",
    "metric",
    "trials",
    "mean",
    "median",
    "min",
    "max",
    "std",
    "ci95_low",
    "ci95_high",
)


def _by_round(trial: Sequence[Mapping[str, Any]], index: int) -> dict[int, Mapping[str, Any]]:
    rounds: dict[int, Mapping[str, Any]] = {}
    for row in trial:
        if not isinstance(row, Mapping) or "round" not in row:
            raise LthError(f"trial {index} holds a row without a 'round' key; every row must be a mapping with one")
        if row["round"] in rounds:
            raise LthError(f"trial {index} has round {row['round']} twice; each round may appear once per trial")
        rounds[row["round"]] = row
    return rounds


def _number(value: Any, metric: str, round_index: Any, trial: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LthError(
            f"metric {metric!r} of round {round_index} in trial {trial} is {value!r}; it must be a finite number"
        )
    return float(value)


def describe(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, median, min, max, sample std (ddof=1) and the Student-t 95% CI of ``values``.

    With one value the std and the CI are None (undefined), not NaN.
    """
    n = len(values)
    if n == 0:
        raise LthError("cannot describe an empty list of values; give at least one")
    mean = math.fsum(values) / n
    out: dict[str, float | None] = {
        "mean": mean,
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "std": None,
        "ci95_low": None,
        "ci95_high": None,
    }
    if n > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = _t975(n - 1) * std / math.sqrt(n)
        out.update(std=std, ci95_low=mean - half, ci95_high=mean + half)
    return out


def summarise_trials(trials: Sequence[Sequence[Mapping[str, Any]]], metrics: Sequence[str] | None = None) -> list[dict]:
    """One flat row per (round, metric) over the trials, sorted by round then metric order.

    Each row holds ``round``, ``weights_remaining`` (mean over trials), ``metric``, ``trials``
    (n), ``mean``, ``median``, ``min``, ``max``, ``std`` (ddof=1) and ``ci95_low``/``ci95_high``
    = mean ± t(0.975, n-1)·std/sqrt(n); for n = 1 the last three are None. Rounds missing from
    any trial are left out. ``metrics`` defaults to those of :data:`DEFAULT_METRICS` present in
    the rows; a metric asked for explicitly must be present in every summarised row.
    """
    if isinstance(trials, (str, bytes)) or not isinstance(trials, Sequence) or len(trials) == 0:
        raise LthError("summarise_trials needs at least one trial (a list of per-round rows)")
    if metrics is not None and (isinstance(metrics, str) or len(metrics) == 0):
        raise LthError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    per_trial = [_by_round(trial, i) for i, trial in enumerate(trials)]
    common = set(per_trial[0]).intersection(*per_trial[1:])
    rounds = sorted(common)
    if metrics is None:
        present = lambda name: all(name in t[r] for t in per_trial for r in rounds)  # noqa: E731
        metrics = [name for name in DEFAULT_METRICS if present(name)]
    else:
        metrics = list(dict.fromkeys(metrics))
        for name in metrics:
            for i, trial in enumerate(per_trial):
                missing = [r for r in rounds if name not in trial[r]]
                if missing:
                    known = sorted(k for k, v in trial[missing[0]].items() if isinstance(v, (int, float)))
                    raise LthError(
                        f"unknown metric {name!r}: round {missing[0]} of trial {i} has no such key; "
                        f"numeric keys there: {', '.join(known)}"
                    )
    out: list[dict] = []
    for r in rounds:
        remaining = None
        if all("weights_remaining" in t[r] for t in per_trial):
            levels = [_number(t[r]["weights_remaining"], "weights_remaining", r, i) for i, t in enumerate(per_trial)]
            remaining = math.fsum(levels) / len(levels)
        for name in metrics:
            values = [_number(t[r][name], name, r, i) for i, t in enumerate(per_trial)]
            out.append(
                {
                    "round": r,
                    "weights_remaining": remaining,
                    "metric": name,
                    "trials": len(values),
                    **describe(values),
                }
            )
    return out


def summarise_lines(
    trials: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]], metrics: Sequence[str] | None = None
) -> list[dict]:
    """:func:`summarise_trials` of every line of results the trials share, rows tagged ``line``.

    Each trial maps line names to per-round rows: ``ticket``, its controls (``reinit``,
    ``random-prune``) and branches (``branch:NAME``), as :meth:`lth.store.RunDir.lines` gives
    them. Trials without ticket rows are left out; a line is summarised only when every other
    trial has it with rows. Lines come ticket first, then controls, then branches
    (:func:`lth.store.study_dir.line_order`); each row is ``{"line": NAME, **summary row}``.
    """
    from lth.store.study_dir import line_order

    trials = [trial for trial in trials if trial.get("ticket")]
    if not trials:
        return []
    names = sorted(dict.fromkeys(name for trial in trials for name in trial), key=line_order)
    out: list[dict] = []
    for name in names:
        if all(trial.get(name) for trial in trials):
            out.extend({"line": name, **row} for row in summarise_trials([trial[name] for trial in trials], metrics))
    return out


def summary_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``summarise_trials`` rows as a pandas DataFrame (columns in :data:`SUMMARY_COLUMNS` order,
    after a ``line`` column when the rows name their line, as :func:`summarise_lines` rows do)."""
    import pandas as pd

    rows = list(rows)
    columns = list(SUMMARY_COLUMNS)
    if any("line" in row for row in rows):
        columns.insert(0, "line")
    return pd.DataFrame(rows, columns=columns)


#: Short column names of metrics in the compact views (:func:`pivot_summary`,
#: :meth:`lth.LotterySession.pivot`); other metrics keep their names.
SHORT_NAMES: dict[str, str] = {
    "weights_remaining": "weights",
    "test_accuracy_at_early_stop": "test",
    "final_test_accuracy": "test_end",
    "val_accuracy_at_early_stop": "val",
    "final_val_accuracy": "val_end",
    "early_stop_iteration": "es_iter",
    "final_test_loss": "loss_end",
}

#: The metrics of a compact view when none are asked for (those present): test accuracy at early
#: stop, final test accuracy and the early-stop iteration (all six do not fit 80 columns).
PIVOT_METRICS: tuple[str, ...] = ("test_accuracy_at_early_stop", "final_test_accuracy", "early_stop_iteration")

#: The statistics :func:`pivot_summary` can put in the metric columns.
PIVOT_VALUES: tuple[str, ...] = ("mean", "median", "min", "max", "std")


def short_name(metric: str) -> str:
    """A metric's column name in the compact views: ``test_accuracy_at_early_stop`` -> ``test``."""
    return SHORT_NAMES.get(metric, metric)


def pivot_metrics(present: Sequence[str], metrics: Sequence[str] | None, where: str) -> list[str]:
    """The metrics of a compact view: ``metrics`` (each must be in ``present``), else those of
    :data:`PIVOT_METRICS` present (else every one present)."""
    if metrics is None:
        return [m for m in PIVOT_METRICS if m in present] or list(present)
    if isinstance(metrics, str) or len(metrics) == 0:
        raise LthError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    metrics = list(dict.fromkeys(metrics))
    for name in metrics:
        if name not in present:
            raise LthError(f"unknown metric {name!r}: {where} has {', '.join(present) or 'none'}")
    return metrics


def pivot_summary(
    summary: pd.DataFrame | Sequence[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    value: str = "mean",
    ci: bool = True,
) -> pd.DataFrame:
    """The long summary (one row per line, round and metric: :func:`summary_frame`, the rows of
    :func:`summarise_lines` or of a study's ``summary.json``) as one row per line and round, one
    column per metric, under short names (:data:`SHORT_NAMES`), to read at 80 columns.

    The index is (``experiment``,) ``line`` (when the rows name them) and ``round``; the columns
    are ``weights`` (the mean fraction of weights remaining), then per metric its ``value``
    statistic (mean, median, min, max or std), the first metric followed, with ``ci``, by
    ``NAME_ci``: its 95% CI half-width (``ci95_high - mean``; NaN for one trial). ``metrics``
    default to :data:`PIVOT_METRICS` present. Values are the summary's own, unrounded; rows keep
    its order (ticket, controls, branches; rounds ascending)."""
    import pandas as pd

    if value not in PIVOT_VALUES:
        raise LthError(f"unknown statistic {value!r}; choose one of: {', '.join(PIVOT_VALUES)}")
    rows = summary.to_dict("records") if isinstance(summary, pd.DataFrame) else [dict(r) for r in summary]
    keys = [k for k in ("experiment", "line") if any(k in r for r in rows)] + ["round"]
    present = list(dict.fromkeys(r["metric"] for r in rows))
    metrics = pivot_metrics(present, metrics, "the summary")
    columns = ["weights"]
    for i, name in enumerate(metrics):
        columns.append(short_name(name))
        if ci and i == 0:
            columns.append(f"{short_name(name)}_ci")
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["metric"] not in metrics:
            continue
        key = tuple(r.get(k) for k in keys)
        entry = table.setdefault(key, {"weights": r.get("weights_remaining")})
        entry[short_name(r["metric"])] = r[value]
        if ci and r["metric"] == metrics[0]:
            high = r.get("ci95_high")
            entry[f"{short_name(r['metric'])}_ci"] = (
                high - r["mean"] if high is not None and not pd.isna(high) else float("nan")
            )
    index = (
        pd.MultiIndex.from_arrays([list(level) for level in zip(*table)] if table else [[] for _ in keys], names=keys)
        if len(keys) > 1
        else pd.Index([k[0] for k in table], name=keys[0])
    )
    frame = pd.DataFrame([table[k] for k in table], index=index, columns=columns)
    return frame.astype({c: float for c in columns})


@functools.cache
def _t975(dof: int) -> float:
    """Student's t quantile at 0.975 for ``dof`` degrees of freedom (scipy, imported on first use: 1.5 s)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, dof))
