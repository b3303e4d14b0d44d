"""The layout of ``lth report``: results first (headline, round table, figures), configuration last
(the settings that differ from the defaults, then the full configuration collapsed in <details>),
and headline numbers that are the run's and the study's recorded numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_helpers import cli
from lth.plots import open_sources
from lth.report.configuration import config_defaults
from lth.report.headline import HEADLINE_METRIC, TICKET_TOLERANCE, Value, pick_headline, run_headline, study_headlines
from lth.store import RunDir
from lth.store.study_dir import StudyDir

TINY = ["lenet-300-100", "digits", "--iterations", "60", "--eval-every", "20", "--device", "cpu", "--quiet"]
#: What the run's CLI flags change, as (value, default): lenet-300-100's recipe trains 50000 iterations.
CHANGED = {
    "rounds": ("2", "15"),
    "controls": ("reinit", "[]"),
    "iterations": ("60", "50000"),
    "eval_every": ("20", "100"),
    "device": ("cpu", "auto"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A ticket run (2 rounds, reinit control) and a robust study (2 trials of 1 round, reinit
    control) made by the CLI on digits, and the HTML and Markdown reports on each."""
    from lth.cli import main

    root = tmp_path_factory.mktemp("layout")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])  # the report draws its own
        assert main(["find-ticket", *TINY, "--rounds", "2", "--controls", "reinit", "--out", str(root / "run")]) == 0
        assert (
            main(
                [
                    "robust",
                    *TINY,
                    "--trials",
                    "2",
                    "--rounds",
                    "1",
                    "--controls",
                    "reinit",
                    "--out",
                    str(root / "study"),
                ]
            )
            == 0
        )
    out = {"run": root / "run", "study": root / "study"}
    for name in ("run", "study"):
        for suffix in ("html", "md"):
            target = root / f"{name}.{suffix}"
            assert main(["report", str(out[name]), "--out", str(target)]) == 0
            out[f"{name}.{suffix}"] = target
    return out


def _section(text: str, start: str, end: str | None = None) -> str:
    """``text`` from the first ``start`` to the next ``end`` (or its end)."""
    begin = text.index(start)
    stop = text.index(end, begin + len(start)) if end else len(text)
    return text[begin:stop]


def expected_headline(rows: list[dict]):
    """The headline's levels computed here from the recorded rows: (dense, best ticket, best accuracy) rows."""
    dense = next(r for r in rows if r["round"] == 0)
    good = [
        r
        for r in rows
        if r["round"] > 0 and round(r[HEADLINE_METRIC] - dense[HEADLINE_METRIC], 12) >= -TICKET_TOLERANCE
    ]
    ticket = min(good, key=lambda r: (r["weights_remaining"], -r["round"])) if good else None
    best = max(rows, key=lambda r: (r[HEADLINE_METRIC], -r["weights_remaining"]))
    return dense, ticket, best


# ------------------------------------------------------------------ order


@pytest.mark.parametrize("suffix", ["html", "md"])
def test_run_report_leads_with_the_headline_then_rounds_figures_and_configuration(built, suffix):
    text = built[f"run.{suffix}"].read_text()
    h3 = (lambda title: f"<h3>{title}</h3>") if suffix == "html" else (lambda title: f"### {title}\n")
    figure = '<figure id="' if suffix == "html" else "!["
    places = [
        text.index(h3("Headline")),
        text.index(h3("Rounds")),
        text.index(h3("Control: reinit")),
        text.index(h3("Figures")),
        text.index(figure),
        text.index(h3("Configuration")),
    ]
    assert places == sorted(places), places
    section = _section(text, h3("Headline"))
    assert section.count(figure) == 7  # every figure of the run, none before the headline
    # The headline in words (bold), its definition, then its table.
    strong, table = ('<p class="headline">Best ', "<table") if suffix == "html" else ("\n**Best ", "\n| ")
    assert section.index(strong) < section.index("Best ticket: the sparsest pruned round") < section.index(table)


@pytest.mark.parametrize("suffix", ["html", "md"])
def test_study_report_leads_with_the_headline_then_statistics_figures_and_configuration(built, suffix):
    text = built[f"study.{suffix}"].read_text()
    h3 = (lambda title: f"<h3>{title}</h3>") if suffix == "html" else (lambda title: f"### {title}\n")
    figure = '<figure id="' if suffix == "html" else "!["
    experiments = "<caption>Experiments" if suffix == "html" else "*Experiments*"
    places = [
        text.index(h3("Headline")),
        text.index(h3("Statistics over trials")),
        text.index(figure),
        text.index(h3("Configuration")),
        text.index(experiments),
        text.index("<details>"),
    ]
    assert places == sorted(places), places
    assert "Mean of 2 trials: " in _section(text, h3("Headline"), h3("Statistics over trials"))


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("suffix", ["html", "md"])
def test_non_default_settings_come_first_and_the_full_configuration_is_collapsed(built, suffix):
    text = built[f"run.{suffix}"].read_text()
    part = _section(text, "<h3>Configuration</h3>" if suffix == "html" else "### Configuration\n")
    assert "status: complete" in part.split("<details>")[0]
    first, full = part.split("<details>", 1)
    full = full.split("</details>")[0]
    if suffix == "html":
        changed = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", first)
        assert "<summary>Full configuration (" in full
        rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", full)
    else:
        changed = [
            tuple(cell.strip() for cell in line.strip("|").split("|"))
            for line in first.splitlines()
            if line.startswith("| ") and not line.startswith("| setting")
        ]
        assert "<summary>Full configuration (" in full
        rows = [
            tuple(cell.strip() for cell in line.strip("|").split("|"))
            for line in full.splitlines()
            if line.startswith("| ") and not line.startswith("| setting")
        ]
    assert {key: (value, default) for key, value, default in changed} == CHANGED
    assert [key for key, _, _ in changed] == [key for key, _ in rows if key in CHANGED]  # config order
    config = RunDir(built["run"]).config()
    assert [key for key, _ in rows] == list(config)  # every setting, flat: a ticket config nests nothing
    assert ("criterion", "large_final") in rows and ("iterations", "60") in rows


def test_defaults_are_the_config_class_with_the_model_recipe(built):
    config = RunDir(built["run"]).config()
    defaults = config_defaults(config)
    assert defaults["lr"] == "0.0012" and defaults["batch_size"] == "60" and defaults["iterations"] == "50000"
    assert defaults["criterion"] == "large_final" and defaults["rounds"] == "15"
    assert config_defaults({"kind": "supermask-train", "model": "lenet-300-100", "dataset": "digits"}) is None
    assert config_defaults({**config, "model": "no-such-model"}) is None


# ------------------------------------------------------------------ headline numbers


def test_run_headline_is_the_recorded_numbers(built):
    run = RunDir(built["run"])
    rows, controls = run.rounds(), run.controls()
    dense, ticket, best = expected_headline(rows)
    headline = run_headline(open_sources([built["run"]])[0])
    assert headline.dense.ticket == Value(dense[HEADLINE_METRIC])
    assert headline.dense.weights_remaining == dense["weights_remaining"] == 1.0
    assert (headline.best_accuracy.round, headline.best_accuracy.ticket.value) == (best["round"], best[HEADLINE_METRIC])
    if ticket is None:
        assert headline.best_ticket is None
    else:
        assert headline.best_ticket.round == ticket["round"]
        assert headline.best_ticket.weights_remaining == ticket["weights_remaining"]
        assert headline.best_ticket.ticket.value == ticket[HEADLINE_METRIC]
        reinit = next(r for r in controls["reinit"] if r["round"] == ticket["round"])
        assert headline.best_ticket.controls == {"reinit": Value(reinit[HEADLINE_METRIC])}
    # ... and the report prints them, in the headline's table.
    for suffix in ("html", "md"):
        text = built[f"run.{suffix}"].read_text()
        head = _section(text, "Headline", "Rounds")
        for level in filter(None, (dense, ticket, best)):
            assert f"{100 * level[HEADLINE_METRIC]:.2f}%" in head
            assert f"{100 * level['weights_remaining']:.2f}%" in head
            diff = f"{100 * (level[HEADLINE_METRIC] - dense[HEADLINE_METRIC]):+.2f}"
            assert diff in head
        if ticket is not None:
            reinit = next(r for r in controls["reinit"] if r["round"] == ticket["round"])
            sentence = (
                f"Best ticket: round {ticket['round']} at {100 * ticket['weights_remaining']:.2f}% of the "
                f"weights, test accuracy {100 * ticket[HEADLINE_METRIC]:.2f}% vs dense "
                f"{100 * dense[HEADLINE_METRIC]:.2f}%"
            )
            assert sentence in head and f"reinit control {100 * reinit[HEADLINE_METRIC]:.2f}%" in head
        else:
            assert "No pruned level stays within 0.5 points" in head


def test_study_headline_is_the_mean_over_trials_with_its_ci(built):
    summary = StudyDir(built["study"]).summary()
    (headline,) = study_headlines(summary)
    at = {(r["line"], r["round"]): r for r in summary if r["metric"] == HEADLINE_METRIC}
    assert headline.trials == 2 and headline.experiment == at[("ticket", 0)]["experiment"]
    dense = at[("ticket", 0)]
    assert headline.dense.ticket == Value(dense["mean"], dense["ci95_high"] - dense["mean"])
    best = max((r for (line, _), r in at.items() if line == "ticket"), key=lambda r: (r["mean"], -r["round"]))
    assert (headline.best_accuracy.round, headline.best_accuracy.ticket.value) == (best["round"], best["mean"])
    pruned = at[("ticket", 1)]
    good = pruned["mean"] - dense["mean"] >= -TICKET_TOLERANCE - 1e-12
    assert (headline.best_ticket is not None) == good
    level = headline.best_accuracy if best["round"] == 1 else headline.best_ticket
    if level is not None:
        reinit = at[("reinit", 1)]
        assert level.controls == {"reinit": Value(reinit["mean"], reinit["ci95_high"] - reinit["mean"])}
    text = built["study.html"].read_text()
    head = _section(text, "<h3>Headline</h3>", "<h3>Statistics over trials</h3>")
    mean_ci = f"{100 * dense['mean']:.2f} ± {100 * (dense['ci95_high'] - dense['mean']):.2f}%"
    assert mean_ci in head


def test_pick_headline_rules():
    def line(*levels):
        return [{"round": r, "weights_remaining": w, "value": v} for r, w, v in levels]

    ticket = line((0, 1.0, 0.90), (1, 0.8, 0.91), (2, 0.64, 0.895), (3, 0.51, 0.8949), (4, 0.41, 0.70))
    reinit = line((1, 0.8, 0.85), (2, 0.64, 0.84))
    headline = pick_headline({"ticket": ticket, "reinit": reinit})
    assert headline.dense.round == 0 and headline.dense.controls == {}
    assert headline.best_ticket.round == 2  # 0.5 points below dense exactly counts; 0.51 does not
    assert headline.best_ticket.controls == {"reinit": Value(0.84)}
    assert headline.best_accuracy.round == 1 and headline.best_accuracy.ticket == Value(0.91)
    # No pruned level good enough; no dense level (a pruned-at-init round 0): no best ticket.
    assert pick_headline({"ticket": line((0, 1.0, 0.9), (1, 0.8, 0.8))}).best_ticket is None
    alone = pick_headline({"ticket": line((0, 0.1, 0.5), (1, 0.08, 0.6))})
    assert alone.dense is None and alone.best_ticket is None and alone.best_accuracy.round == 1
    assert pick_headline({"ticket": []}) is None
    # On a tie the sparser level is the best accuracy.
    assert pick_headline({"ticket": line((0, 1.0, 0.9), (1, 0.8, 0.9))}).best_accuracy.round == 1


def test_report_on_several_sources_opens_with_every_headline(built, tmp_path, capsys):
    out = tmp_path / "both.md"
    rc, _, err = cli(capsys, "report", built["run"], built["study"], "--out", out)
    assert rc == 0, err
    text = out.read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections[0] == "Headlines" and sections[1] == "Comparison"
    top = _section(text, "## Headlines", "## Comparison")
    assert "**run (lenet-300-100 on digits) — " in top and "**study (" in top
