"""Figures that read right: a dense reference, y ranges that fit the data (nothing cut off, no fixed
0-100%), labels that name every series, bands clipped to what a metric can take with legend keys
that match them, tick labels as precise as their spacing needs, learning curves as small
multiples with the loss and the early-stopping iteration. Built from small synthetic run and study
directories (instant), inspected on the matplotlib objects."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.colors import to_rgb, to_rgba
from matplotlib.patches import Rectangle

from lth.plots import draw_accuracy, draw_learning_curves, draw_trials_accuracy, plot_run, plot_study
from lth.plots.accuracy import accuracy_figure, plot_accuracy
from lth.plots.common import STUDY, TICKET, LevelFormatter, PercentFormatter, Source, drawn_y
from lth.plots.learning_curves import (
    EARLY_STOP_LABEL,
    learning_curves_figure,
    plot_learning_curves,
    round_panels,
)
from lth.store import RunDir
from lth.store.study_dir import StudyDir

ITERATIONS = [0, 50, 100, 150, 200, 250, 300]


def level(round_index: int, rate: float = 0.2) -> float:
    return (1 - rate) ** round_index  # 0.8 ** 9 = 0.134217728...: float noise a label must not show


def accuracy_at(round_index: int, iteration: int) -> float:
    """A learning curve from near chance to ~0.8-0.9, later rounds a little higher."""
    if iteration == 0:
        return 0.1 + 0.01 * round_index
    return 0.80 + 0.005 * round_index + 0.04 * (1 - math.exp(-iteration / 100))


def loss_at(round_index: int, iteration: int) -> float:
    return 2.3 if iteration == 0 else 0.4 + 0.3 * math.exp(-iteration / 100) + 0.01 * round_index


def make_run(
    path: Path,
    rounds: int = 4,
    accuracies: list[float] | None = None,
    controls: tuple[str, ...] = (),
    early_stops: list[int] | None = None,
    rate: float = 0.2,
) -> Path:
    """A finished find-ticket run directory: config.yaml, rounds.json, metrics.csv (train, val and
    test rows), and ``controls/NAME/rounds.json`` for every control."""
    run = RunDir(path)
    path.mkdir(parents=True)
    run.write_config({"kind": "find-ticket", "model": "lenet-300-100", "dataset": "fashion-mnist"})
    accuracies = accuracies or [0.84 + 0.01 * r for r in range(rounds + 1)]
    early_stops = early_stops or [(150 + 50 * r) % 350 or 50 for r in range(rounds + 1)]
    rows, metrics = [], []
    for r in range(rounds + 1):
        rows.append(
            {
                "round": r,
                "weights_remaining": level(r, rate),
                "early_stop_iteration": early_stops[r],
                "val_accuracy_at_early_stop": accuracies[r] + 0.01,
                "test_accuracy_at_early_stop": accuracies[r],
                "final_test_accuracy": accuracies[r] - 0.015,
                "final_val_accuracy": accuracies[r] - 0.01,
            }
        )
        for it in ITERATIONS:
            for split in ("val", "test") if it == 0 else ("train", "val", "test"):
                metrics.append(
                    {
                        "round": r,
                        "iteration": it,
                        "split": split,
                        "loss": loss_at(r, it),
                        "accuracy": accuracy_at(r, it),
                    }
                )
    run.write_rounds(rows)
    run.write_metrics(metrics)
    for index, name in enumerate(controls):
        control = RunDir(path / "controls" / name)
        control.path.mkdir(parents=True)
        control.write_rounds(
            [
                {**row, "test_accuracy_at_early_stop": row["test_accuracy_at_early_stop"] - 0.02 * (index + 1)}
                for row in rows
                if row["round"] > 0
            ]
        )
    return path


def ticket(path: Path) -> Source:
    return Source(path, TICKET, path.name)


def summary_row(
    line: str,
    round_index: int,
    mean: float,
    low: float | None,
    high: float | None,
    metric: str = "test_accuracy_at_early_stop",
) -> dict:
    return {
        "experiment": "ticket",
        "line": line,
        "round": round_index,
        "metric": metric,
        "weights_remaining": level(round_index),
        "trials": 3,
        "mean": mean,
        "median": mean,
        "min": mean - 0.01,
        "max": min(1.0, mean + 0.01),
        "std": 0.01,
        "ci95_low": low,
        "ci95_high": high,
    }


def study_rows() -> list[dict]:
    """A robust study's summary: the ticket's 95% CI passes 100% at round 2 (t interval over three
    trials), the reinit control's goes below 0 iterations at round 1."""
    rows = [
        summary_row("ticket", 0, 0.85, 0.83, 0.87),
        summary_row("ticket", 1, 0.90, 0.86, 0.94),
        summary_row("ticket", 2, 0.985, 0.95, 1.03),
        summary_row("reinit", 1, 0.86, 0.82, 0.90),
        summary_row("reinit", 2, 0.84, 0.80, 0.88),
    ]
    rows += [
        summary_row(line, r, 200.0, -40.0 if line == "reinit" else 150.0, 280.0, "early_stop_iteration")
        for line, r in (("ticket", 0), ("ticket", 1), ("ticket", 2), ("reinit", 1), ("reinit", 2))
    ]
    return rows


def make_study(path: Path) -> Path:
    study = StudyDir(path)
    path.mkdir(parents=True)
    study.write_study(
        {
            "kind": "robust",
            "name": "syn",
            "spec": {},
            "experiments": [
                {
                    "name": "ticket",
                    "settings": {},
                    "runs": [{"trial": t, "path": f"trial_{t:02d}", "config": {}} for t in range(3)],
                }
            ],
        }
    )
    study.write_summary(study_rows())
    return path


def by_label(ax, prefix: str) -> list:
    return [a for a in [*ax.lines, *ax.collections] if str(a.get_label()).startswith(prefix)]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def series_y(ax) -> list[float]:
    return drawn_y(ax)


def strictly_inside(ax, values) -> bool:
    low, high = ax.get_ylim()
    return all(low < v < high for v in values)


# ------------------------------------------------------------------ accuracy vs weights remaining


def test_accuracy_draws_the_dense_network_as_a_dashed_reference(tmp_path):
    run = make_run(tmp_path / "run", accuracies=[0.853, 0.86, 0.87, 0.88, 0.845], controls=("reinit",))
    ax = accuracy_figure([ticket(run)]).axes[0]
    (dense,) = by_label(ax, "dense")
    assert isinstance(dense, LineCollection)
    (segment,) = dense.get_segments()
    assert [tuple(p) for p in segment] == [(0.0, 0.853), (1.0, 0.853)]  # the whole width, at round 0's accuracy
    assert dense.get_transform() == ax.get_yaxis_transform()
    assert dense.get_linestyle()[0][1] is not None  # dashed
    assert "dense (at early stop)" in legend_texts(ax)


def test_dense_reference_needs_a_dense_round(tmp_path):
    run = make_run(tmp_path / "run")
    rows = RunDir(run).rounds()
    rows[0]["weights_remaining"] = 0.5  # started from a pruned mask: round 0 is not the dense network
    RunDir(run).write_rounds(rows)
    assert by_label(accuracy_figure([ticket(run)]).axes[0], "dense") == []


def test_accuracy_y_range_fits_the_data_with_a_margin(tmp_path):
    run = make_run(tmp_path / "run", accuracies=[0.82, 0.85, 0.88, 0.89, 0.83], controls=("reinit",))
    ax = accuracy_figure([ticket(run)]).axes[0]
    low, high = ax.get_ylim()
    values = series_y(ax)
    assert min(values) == pytest.approx(0.805) and max(values) == pytest.approx(0.89)  # end of training, ticket
    assert strictly_inside(ax, values)  # no point on (or past) the edge
    assert 0.7 < low < 0.805 and 0.89 < high < 0.95  # not 0-100%: the 8 points between 80% and 90% fill the axes
    margin = (high - low) - (max(values) - min(values))
    assert 0 < margin < 0.25 * (high - low)


def test_accuracy_y_label_and_legend_name_every_series(tmp_path):
    run = make_run(tmp_path / "run", controls=("reinit",))
    ax = accuracy_figure([ticket(run)]).axes[0]
    # the end-of-training line is drawn beside: the axis names the quantity, the legend each series
    assert ax.get_ylabel() == "test accuracy"
    texts = legend_texts(ax)
    assert texts == [
        "ticket (at early stop)",
        "ticket (end of training)",
        "reinit control (at early stop)",
        "dense (at early stop)",
    ]
    for artist in [*ax.lines, *ax.collections]:  # everything drawn with a name is in the legend
        if not str(artist.get_label()).startswith("_"):
            assert artist.get_label() in texts
    # two runs: one quantity (at early stop) for every series, named in the label; each series in the legend
    other = make_run(tmp_path / "other", accuracies=[0.8, 0.81, 0.82, 0.83, 0.84], controls=("reinit",), rate=0.3)
    ax = accuracy_figure([ticket(run), ticket(other)]).axes[0]
    assert ax.get_ylabel() == "test accuracy at early stop"
    assert {"run", "other", "run: reinit control", "other: reinit control", "run: dense", "other: dense"} <= set(
        legend_texts(ax)
    )
    # the same dense accuracy (same seed, same data) is one reference, not two on top of each other
    ax = accuracy_figure([ticket(run), ticket(make_run(tmp_path / "again", rate=0.3))]).axes[0]
    assert [a.get_label() for a in by_label(ax, "dense")] == ["dense"]


def test_accuracy_tick_labels_are_as_precise_as_needed_and_distinct(tmp_path):
    run = make_run(tmp_path / "run", rounds=11)
    fig = accuracy_figure([ticket(run)])
    fig.canvas.draw()
    ax = fig.axes[0]
    x_labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(x_labels)) == len(x_labels) and "100%" in x_labels and "8.59%" in x_labels
    for text in x_labels:  # three significant digits, never float noise such as 13.421772799999998%
        assert re.fullmatch(r"\d+(\.\d+)?%", text), text
        assert len(text.rstrip("%").replace(".", "").lstrip("0")) <= 3, text
    y_labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(set(y_labels)) == len(y_labels)
    decimals = {len(t.rstrip("%").partition(".")[2]) for t in y_labels}
    assert len(decimals) == 1 and decimals.pop() <= 2  # one precision per axis, as fine as the spacing
    for text, tick in zip(y_labels, ax.get_yticks()):  # and every label says exactly where its tick is
        assert float(text.rstrip("%")) == pytest.approx(100 * tick, abs=1e-9)


def test_level_and_percent_formatters():
    levels = [level(r) for r in range(12)]
    assert LevelFormatter().format_ticks(levels[:4] + levels[9:10]) == ["100%", "80%", "64%", "51.2%", "13.4%"]
    assert LevelFormatter().format_ticks([0.4096]) == ["41.0%"]  # 3 significant digits, not '41%'
    assert LevelFormatter().format_ticks([0.4105, 0.4096]) == ["41.05%", "40.96%"]  # distinct, not 41.0% twice
    assert PercentFormatter().format_ticks([0.8, 0.8125, 0.825]) == ["80.00%", "81.25%", "82.50%"]
    assert PercentFormatter().format_ticks([0.8, 0.82, 0.84]) == ["80%", "82%", "84%"]
    assert PercentFormatter().format_ticks([0.81, 0.8150000000000001, 0.82]) == ["81.0%", "81.5%", "82.0%"]
    assert PercentFormatter().format_ticks([-1e-17, 0.2, 0.4]) == ["0%", "20%", "40%"]  # no '-0%'


def test_early_stop_axis_starts_at_zero_and_clears_the_highest_point(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr("lth.plots.accuracy.save", lambda fig, *args: figures.append(fig) or [])
    from lth.plots.accuracy import plot_early_stop

    plot_early_stop([ticket(make_run(tmp_path / "run", early_stops=[250, 250, 250, 250, 250]))], tmp_path)
    ax = figures[0].axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 250  # a flat 250 is not drawn on the top edge
    (dense,) = by_label(ax, "dense")
    assert dense.get_segments()[0][0][1] == 250


def test_draw_accuracy_api_adds_the_dense_reference_without_adding_lines(tmp_path):
    rows = RunDir(make_run(tmp_path / "run", accuracies=[0.85, 0.86, 0.87, 0.88, 0.86])).rounds()
    ax = draw_accuracy({"ticket": rows}).axes[0]
    assert len(ax.lines) == 2  # early stop and end, as before
    (dense,) = by_label(ax, "dense (early stop)")
    assert dense.get_segments()[0][0][1] == pytest.approx(0.85)
    assert strictly_inside(ax, series_y(ax)) and ax.get_ylim()[0] > 0.5


# ------------------------------------------------------------------ studies: bands over trials


def study_source(tmp_path: Path) -> Source:
    path = make_study(tmp_path / "study")
    return Source(path, STUDY, path.name)


def test_study_bands_are_clipped_to_the_metric_range(tmp_path):
    ax = accuracy_figure([study_source(tmp_path)]).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # the ticket's CI and the control's
    tops = [max(path.vertices[:, 1].max() for path in band.get_paths()) for band in bands]
    assert max(tops) == pytest.approx(1.0)  # the ticket's 103% is drawn at 100%, not past it, not dropped
    for band in bands:
        for path in band.get_paths():
            assert (path.vertices[:, 1] >= 0).all() and (path.vertices[:, 1] <= 1.0 + 1e-12).all()
    assert strictly_inside(ax, series_y(ax))
    # an iteration count is never negative: the control's interval stops at 0
    study = StudyDir(tmp_path / "study")
    from lth.plots.accuracy import _figure

    ax = _figure([Source(study.path, STUDY, "study")], "early_stop_iteration", None, "it", "it", None).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert min(path.vertices[:, 1].min() for band in bands for path in band.get_paths()) == pytest.approx(0.0)


def test_study_legend_keys_show_each_band_in_its_colour_and_opacity(tmp_path):
    ax = accuracy_figure([study_source(tmp_path)]).axes[0]
    legend = ax.get_legend()
    texts = legend_texts(ax)
    assert texts[:2] == ["ticket (mean of 3)", "reinit control (mean of 3)"]
    assert "95% CI of the mean" in legend.get_title().get_text()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    keys = legend.legend_handles
    for band, key in zip(bands, keys[:2]):  # a swatch of the band's colour and alpha, the mean's line over it
        assert isinstance(key, Rectangle)
        assert tuple(key.get_facecolor()) == pytest.approx(tuple(band.get_facecolor()[0]))
    assert keys[0].get_facecolor()[3] != keys[1].get_facecolor()[3]  # the ticket's band is denser than a control's
    # and the mean lines keep their labels (code finds them by label)
    assert {line.get_label() for line in ax.lines if not line.get_label().startswith("_")} == set(texts[:2])
    (dense,) = by_label(ax, "dense")
    assert dense.get_label() == "dense (mean of 3)" and dense.get_segments()[0][0][1] == pytest.approx(0.85)


def test_draw_trials_accuracy_clips_and_keys_every_line(tmp_path):
    ax = draw_trials_accuracy(study_rows()).axes[0]
    means = {line.get_label(): line for line in ax.lines if line.get_label().endswith("(mean)")}
    assert set(means) == {"ticket (mean)", "reinit control (mean)"}
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # a min-max and a CI band per line
    for band in bands:
        for path in band.get_paths():
            assert (path.vertices[:, 1] <= 1.0 + 1e-12).all() and (path.vertices[:, 1] >= 0).all()
    keys = ax.get_legend().legend_handles
    for key, line in zip(keys, means.values()):  # the first swatch: the line's min-max band
        assert isinstance(key, Rectangle)
        assert tuple(key.get_facecolor()[:3]) == pytest.approx(to_rgb(line.get_color()))
        assert key.get_facecolor()[3] == pytest.approx(0.12)
    assert strictly_inside(ax, series_y(ax)) and ax.get_ylim()[1] < 1.1


def test_plot_study_writes_its_one_file(tmp_path):
    study = StudyDir(make_study(tmp_path / "study"))
    assert [p.name for p in plot_study(study)] == ["accuracy_vs_weights_remaining.png"]


# ------------------------------------------------------------------ learning curves


@pytest.mark.parametrize(
    "rounds, panels",
    [
        (2, [[0, 1, 2]]),
        (4, [[0, 1, 2], [3, 4]]),
        (7, [[0, 1, 2, 3], [4, 5, 6, 7]]),
        (11, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
    ],
)
def test_round_panels_split_rounds_evenly(rounds, panels):
    assert round_panels(list(range(rounds + 1))) == panels


def test_round_panels_thin_many_rounds_keeping_first_and_last():
    groups = round_panels(list(range(31)))
    shown = [r for g in groups for r in g]
    assert len(groups) == 4 and all(len(g) == 4 for g in groups)
    assert shown[0] == 0 and shown[-1] == 30 and shown == sorted(set(shown))


def visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def round_lines(ax):
    return [line for line in ax.lines if line.get_label().startswith("round ") and "dense" not in line.get_label()]


@pytest.mark.parametrize("rounds, expected", [(2, 1), (4, 2), (11, 3), (15, 4), (25, 4)])
def test_learning_curves_are_small_multiples(tmp_path, rounds, expected):
    run = make_run(tmp_path / "run", rounds=rounds)
    fig = learning_curves_figure([ticket(run)])
    axes = visible(fig)
    assert len(axes) == 2 * expected  # a row of accuracy panels over a row of loss panels
    accuracy, loss = axes[:expected], axes[expected:]
    shown = [line.get_label() for ax in accuracy for line in round_lines(ax)]
    assert all(1 <= len(round_lines(ax)) <= 4 for ax in accuracy)
    assert len(shown) == len(set(shown)) == min(rounds + 1, 16)
    assert shown[0].startswith("round 0:") and shown[-1].startswith(f"round {rounds}:")
    for row in (accuracy, loss):  # one y range per row, one x range per run
        assert all(row[0].get_shared_y_axes().joined(row[0], ax) for ax in row[1:])
        assert all(ax.get_ylim() == row[0].get_ylim() for ax in row)
    assert all(ax.get_xlim() == axes[0].get_xlim() for ax in axes)
    assert accuracy[0].get_ylabel() == "test accuracy"
    assert loss[0].get_ylabel() == "validation loss (log scale)"
    # the later panels show the dense round as a grey reference
    if expected > 1:
        assert [line.get_label() for line in accuracy[1].lines][0] == "round 0 (dense)"


def test_learning_curves_rounds_parameter_chooses_the_rounds(tmp_path):
    run = make_run(tmp_path / "run", rounds=11)
    fig = learning_curves_figure([ticket(run)], rounds=[0, 5, 11])
    (accuracy, loss) = visible(fig)
    assert [line.get_label() for line in round_lines(accuracy)] == [
        "round 0: 100% kept",
        "round 5: 32.8% kept",
        "round 11: 8.59% kept",
    ]
    assert accuracy.get_title() == "rounds 0, 5, 11"
    fig = learning_curves_figure([ticket(run)], rounds=[1, 2, 3], per_panel=1, loss=False)
    assert [ax.get_title() for ax in visible(fig)] == ["round 1", "round 2", "round 3"]


def test_learning_curves_star_the_recorded_early_stop(tmp_path):
    stops = [250, 100, 300, 150, 50]
    run = make_run(tmp_path / "run", rounds=4, early_stops=stops)
    fig = learning_curves_figure([ticket(run)], per_panel=5)
    accuracy, loss = visible(fig)
    (stars,) = [c for c in accuracy.collections if isinstance(c, PathCollection)]
    assert stars.get_offsets().ravel().tolist() == pytest.approx(
        [v for r, stop in enumerate(stops) for v in (stop, accuracy_at(r, stop))]
    )
    (loss_stars,) = [c for c in loss.collections if isinstance(c, PathCollection)]
    assert loss_stars.get_offsets().ravel().tolist() == pytest.approx(
        [v for r, stop in enumerate(stops) for v in (stop, loss_at(r, stop))]
    )
    colours = [to_rgba(line.get_color()) for line in round_lines(accuracy)]
    assert stars.get_facecolors().ravel().tolist() == pytest.approx([v for c in colours for v in c])
    assert EARLY_STOP_LABEL in legend_texts(accuracy)


def test_learning_curves_cut_no_line(tmp_path):
    run = make_run(tmp_path / "run", rounds=6)
    for ax in visible(learning_curves_figure([ticket(run)])):
        values = series_y(ax)
        assert values and strictly_inside(ax, values), ax.get_ylabel()
    ax = visible(learning_curves_figure([ticket(run)]))[0]
    assert ax.get_ylim()[0] < 0.1 and ax.get_ylim()[1] < 0.95  # from iteration 0 (near chance) to the best


def test_learning_curves_without_loss_and_of_several_runs(tmp_path):
    one, two = make_run(tmp_path / "one", rounds=5), make_run(tmp_path / "two", rounds=2)
    fig = learning_curves_figure([ticket(one), ticket(two)])
    assert len(visible(fig)) == 2 * 2 + 2 * 1  # one: 2 panels (3 + 3 rounds) over its loss; two: 1 over 1
    assert [ax.get_title() for ax in visible(fig) if ax.get_title()] == [
        "one: rounds 0-2",
        "one: rounds 3-5",
        "two: rounds 0-2",
    ]
    assert len(visible(learning_curves_figure([ticket(one)], loss=False))) == 2


def test_draw_learning_curves_api_keeps_one_line_per_round(tmp_path):
    run = RunDir(make_run(tmp_path / "run", rounds=2, early_stops=[50, 100, 150]))
    fig = draw_learning_curves(run.rounds(), run.metrics())
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    (stars,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [p[0] for p in stars.get_offsets()] == [50, 100, 150]
    assert strictly_inside(ax, series_y(ax))
    ax = draw_learning_curves(run.rounds(), run.metrics(), select=[0, 2], early_stop=False).axes[0]
    assert [line.get_label() for line in ax.lines] == ["round 0: 100% kept", "round 2: 64% kept"]
    assert not ax.collections


def test_plot_run_writes_the_same_files(tmp_path):
    run = make_run(tmp_path / "run", controls=("reinit",))
    assert [p.name for p in plot_run(RunDir(run))] == ["accuracy_vs_weights_remaining.png", "learning_curves.png"]
    out = tmp_path / "out"
    assert [p.name for p in plot_accuracy([ticket(run)], out)] == [
        "accuracy_vs_weights_remaining.png",
        "accuracy_vs_weights_remaining.svg",
    ]
    assert [p.name for p in plot_learning_curves([ticket(run)], out, ("png",))] == ["learning_curves.png"]
