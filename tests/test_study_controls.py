"""Studies show their controls (issue 14): every line of results of a study's trials (the ticket,
its ``reinit`` and ``random-prune`` controls) is summarised, printed, compared and drawn.

Controls are trained from round 1 on (round 0 is the dense network, the ticket alone), so a
study of ``--rounds 2`` has ticket rows at rounds 0, 1, 2 and control rows at rounds 1, 2.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from scipy.stats import t as student_t

from cli_helpers import cli
from lth import LotteryRobust, LthError
from lth.experiments.statistics import DEFAULT_METRICS, SUMMARY_COLUMNS
from lth.store import RunDir
from lth.store.index import run_id
from lth.store.study_dir import StudyDir

SMALL = ["--rounds", "2", "--iterations", "60", "--eval-every", "30", "--device", "cpu", "-q"]
CONTROLS = ["--controls", "reinit,random-prune"]
LINES = ["ticket", "reinit", "random-prune"]
ROUNDS = {"ticket": [0, 1, 2], "reinit": [1, 2], "random-prune": [1, 2]}


@pytest.fixture(autouse=True)
def _no_run_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs root holding a 2-trial robust study with both controls (``seeds``) and a single
    find-ticket run with both controls (``single``)."""
    from lth.cli import main

    root = tmp_path_factory.mktemp("controls") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTH_RUNS_ROOT", str(root))
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        assert (
            main(
                ["robust", "lenet-300-100", "digits", "--trials", "2", *SMALL, *CONTROLS, "--out", str(root / "seeds")]
            )
            == 0
        )
        assert main(["find-ticket", "lenet-300-100", "digits", *SMALL, *CONTROLS, "--out", str(root / "single")]) == 0
    return root


@pytest.fixture(scope="module")
def study_dir(root) -> Path:
    return root / "seeds"


def _line_rows(study_dir: Path, trial: int, line: str) -> list[dict]:
    run = RunDir(study_dir / f"trial_{trial:02d}")
    path = run.path / "rounds.json" if line == "ticket" else run.path / "controls" / line / "rounds.json"
    return json.loads(path.read_text())


def test_summary_holds_every_line_with_statistics_by_hand(study_dir):
    summary = StudyDir(study_dir).summary()
    assert summary == json.loads((study_dir / "summary.json").read_text())  # written with its line
    assert all(
        list(row)[:6] == ["experiment", "line", "round", "weights_remaining", "metric", "trials"] for row in summary
    )
    assert list(dict.fromkeys(row["line"] for row in summary)) == LINES  # the ticket, then its controls
    by_key = {(row["line"], row["round"], row["metric"]): row for row in summary}
    assert len(by_key) == len(summary) == (3 + 2 + 2) * len(DEFAULT_METRICS)
    t = float(student_t.ppf(0.975, 1))
    for line in LINES:
        trials = [_line_rows(study_dir, i, line) for i in range(2)]
        assert [[r["round"] for r in rows] for rows in trials] == [ROUNDS[line]] * 2
        assert sorted({r for (name, r, _) in by_key if name == line}) == ROUNDS[line]
        for index, round_index in enumerate(ROUNDS[line]):
            for metric in DEFAULT_METRICS:
                values = [float(rows[index][metric]) for rows in trials]
                mean = math.fsum(values) / 2
                std = statistics.stdev(values)
                half = t * std / math.sqrt(2)
                row = by_key[(line, round_index, metric)]
                assert row["experiment"] == "ticket" and row["trials"] == 2
                assert row["weights_remaining"] == pytest.approx(
                    statistics.fmean(rows[index]["weights_remaining"] for rows in trials), abs=1e-12
                )
                assert row["mean"] == pytest.approx(mean, abs=1e-12)
                assert row["median"] == pytest.approx(statistics.median(values), abs=1e-12)
                assert (row["min"], row["max"]) == (min(values), max(values))
                assert row["std"] == pytest.approx(std, abs=1e-12)
                assert row["ci95_low"] == pytest.approx(mean - half, abs=1e-12)
                assert row["ci95_high"] == pytest.approx(mean + half, abs=1e-12)
    # a control's sparsity is the ticket's at the same round
    for round_index in (1, 2):
        levels = {by_key[(line, round_index, "test_accuracy_at_early_stop")]["weights_remaining"] for line in LINES}
        assert len(levels) == 1


def test_summary_csv_has_the_line_column(study_dir):
    with open(study_dir / "summary.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["experiment", "line", *SUMMARY_COLUMNS]
        table = list(reader)
    summary = StudyDir(study_dir).summary()
    assert [(r["experiment"], r["line"], int(r["round"]), r["metric"]) for r in table] == [
        (r["experiment"], r["line"], r["round"], r["metric"]) for r in summary
    ]
    assert [float(r["mean"]) for r in table] == pytest.approx([r["mean"] for r in summary], abs=1e-12)


def test_study_plot_has_a_band_per_line(study_dir):
    from matplotlib.collections import PolyCollection

    from lth.plots.study import study_figure

    fig = study_figure(StudyDir(study_dir))
    ax = fig.axes[0]
    from matplotlib.collections import LineCollection

    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # one 95% CI band per line
    others = [c for c in ax.collections if not isinstance(c, PolyCollection)]
    assert len(others) == 1 and isinstance(others[0], LineCollection)  # the dense reference
    assert others[0].get_label().startswith("dense (mean of 2)")
    means = [line for line in ax.lines if not line.get_label().startswith("_")]
    assert [m.get_label() for m in means] == [
        "ticket (mean of 2)",
        "reinit control (mean of 2)",
        "random-prune control (mean of 2)",
    ]
    assert [m.get_linestyle() for m in means] == ["-", "--", "--"]  # the ticket solid, the controls dashed
    colours = [m.get_color() for m in means]
    assert len(set(colours)) == 3
    from matplotlib.colors import to_rgb

    assert [to_rgb(band.get_facecolor()[0]) for band in bands] == [to_rgb(c) for c in colours]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert all(m.get_label() in legend for m in means)
    assert (study_dir / "accuracy_vs_weights_remaining.png").stat().st_size > 10_000


def test_show_lists_the_lines(study_dir, capsys):
    rc, out, _ = cli(capsys, "show", study_dir)
    assert rc == 0
    table = [line.split() for line in out.splitlines()[1:]]
    assert table[0][:2] == ["line", "round"]  # one experiment: no experiment column
    shown = [(row[0], int(row[1])) for row in table[2:] if row]
    assert shown == [(line, r) for line in LINES for r in ROUNDS[line]]
    rc, out, _ = cli(capsys, "show", study_dir, "--json")
    summary = json.loads(out)["summary"]
    assert rc == 0 and summary == StudyDir(study_dir).summary()
    assert list(dict.fromkeys(row["line"] for row in summary)) == LINES


def test_an_old_summary_without_lines_reads_as_the_ticket(study_dir, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("study.yaml", "status.json"):
        shutil.copy(study_dir / name, old / name)
    summary = StudyDir(study_dir).summary()
    ticket = [{k: v for k, v in row.items() if k != "line"} for row in summary if row["line"] == "ticket"]
    (old / "summary.json").write_text(json.dumps(ticket))
    read = StudyDir(old).summary()
    assert read == [row for row in summary if row["line"] == "ticket"]
    assert all(list(row)[:3] == ["experiment", "line", "round"] for row in read)
    rc, out, _ = cli(capsys, "show", old)
    assert (
        rc == 0 and "reinit" not in out and out.count("ticket") == 3
    )  # the line of 3 rounds (one experiment: no column)
    (old / "summary.json").write_text(json.dumps([{**ticket[0], "line": 7}]))
    with pytest.raises(LthError, match="entry 0 has line = 7"):
        StudyDir(old).summary()


def test_runs_compare_shows_every_line(root, capsys):
    study, single = run_id("seeds"), run_id("single")
    rc, out, err = cli(capsys, "runs", "compare", "seeds", "single", "--root", root, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["columns"] == [
        study,
        f"{study}/reinit",
        f"{study}/random-prune",
        single,
        f"{single}/reinit",
        f"{single}/random-prune",
    ]
    assert result["column_lines"] == LINES * 2 and result["column_groups"] == [study] * 3 + [single] * 3
    summary = {
        (r["line"], r["round"]): r["mean"]
        for r in StudyDir(root / "seeds").summary()
        if r["metric"] == "test_accuracy_at_early_stop"
    }
    run = RunDir(root / "single")
    lines = {"ticket": run.rounds(), **run.controls()}
    for level in result["levels"]:
        r = level["round"]
        expected = [summary.get((line, r)) for line in LINES]
        expected += [
            next((row["test_accuracy_at_early_stop"] for row in lines[line] if row["round"] == r), None)
            for line in LINES
        ]
        assert (
            level["values"] == pytest.approx(expected, abs=1e-12)
            if r
            else level["values"] == [expected[0], None, None, expected[3], None, None]
        )
    rc, out, _ = cli(capsys, "runs", "compare", "seeds", "single", "--root", root)
    header = out.splitlines()[out.splitlines().index("test_accuracy_at_early_stop per level:") + 1]
    assert f"{study}/reinit" in header and f"{single}/random-prune" in header
    assert header.count("weights left") == 2  # a control's weights left are its ticket's: not repeated


def test_report_statistics_table_has_the_lines(study_dir):
    from lth.report.content import statistics_table

    table = statistics_table(StudyDir(study_dir).summary())
    assert table.headers[:3] == ["experiment", "line", "round"]
    assert [(row[1], int(row[2])) for row in table.rows] == [(line, r) for line in LINES for r in ROUNDS[line]]


def test_lottery_robust_summary_has_the_line_column(digits, monkeypatch):
    from lth.models import build_model

    robust = LotteryRobust(
        lambda seed: build_model("lenet-300-100", (1, 8, 8), 10, seed=seed),
        digits,
        trials=2,
        iterations=20,
        eval_every=10,
        device="cpu",
        progress=False,
    )
    robust.run("iterative_pruning", rounds=1)
    summary = robust.summary()
    assert list(summary.columns) == ["line", *SUMMARY_COLUMNS]
    assert set(summary["line"]) == {"ticket"}  # a LotteryModel trains no controls
    # A trial exposing other lines (``lines``, as RunDir.lines() for a run) gets them summarised.
    for shift, trial in enumerate(robust.models):
        control = [{**row, "test_accuracy_at_early_stop": 0.5 + 0.1 * shift} for row in trial.rows if row["round"]]
        monkeypatch.setattr(trial, "lines", {"reinit": control}, raising=False)
    summary = robust.summary()
    assert list(dict.fromkeys(summary["line"])) == ["ticket", "reinit"]
    row = summary[(summary["line"] == "reinit") & (summary["metric"] == "test_accuracy_at_early_stop")]
    assert row["round"].tolist() == [1] and row["mean"].tolist() == pytest.approx([0.55], abs=1e-12)
    ax = robust.plot_accuracy().axes[0]
    means = [line for line in ax.lines if not line.get_label().startswith("_")]
    assert [(m.get_label(), m.get_linestyle()) for m in means] == [
        ("ticket (mean)", "-"),
        ("reinit control (mean)", "--"),
    ]
