"""The headline of a run or a study experiment: the best ticket (the sparsest level within
:data:`TICKET_TOLERANCE` of the dense network), the most accurate level, and the controls there."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lth.plots import Source
from lth.report.blocks import Heading, Table, Text, pct

#: The metric the headline ranks levels by: test accuracy at the early-stopping iteration.
HEADLINE_METRIC = "test_accuracy_at_early_stop"
#: A pruned level is the best ticket when, sparsest of all, its test accuracy is at most this far
#: below the dense network's (a fraction: 0.005 is 0.5 percentage points).
TICKET_TOLERANCE = 0.005


@dataclass(frozen=True)
class Value:
    """A level's test accuracy: a run's recorded value, or a study's mean with its 95% CI
    half-width (``ci``; None for one trial or a run)."""

    value: float
    ci: float | None = None


@dataclass(frozen=True)
class Level:
    """One pruning level of the headline: the ticket's accuracy and each control's there."""

    round: int
    label: str  # "round 3", or "round 1 (keep 10%)" (a pruning-at-init study)
    weights_remaining: float
    ticket: Value
    controls: dict[str, Value]


@dataclass(frozen=True)
class Headline:
    """What a run or a study experiment found (see :func:`pick_headline`)."""

    dense: Level | None
    best_ticket: Level | None
    best_accuracy: Level | None
    trials: int | None = None  # a study's: the trials each value is the mean of
    experiment: str | None = None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_headline(
    lines: Mapping[str, Sequence[Mapping[str, Any]]],
    tolerance: float = TICKET_TOLERANCE,
    trials: int | None = None,
    experiment: str | None = None,
) -> Headline | None:
    """The headline of ``lines`` (``ticket`` and its controls), each a list of levels: mappings
    with ``round``, ``weights_remaining``, ``value`` and optionally ``ci`` and ``label``.

    ``dense`` is round 0 when it holds all the weights; ``best_ticket`` the sparsest pruned level
    whose ticket value is at least the dense value minus ``tolerance`` (the later round on a tie;
    None without a dense level or when no pruned level is that good); ``best_accuracy`` the
    level of the highest ticket value (the sparser on a tie). None without ticket levels."""

    def level(row: Mapping[str, Any]) -> Level:
        controls = {}
        for name, rows in lines.items():
            if name == "ticket":
                continue
            match = next((r for r in rows if r["round"] == row["round"]), None)
            if match is not None:
                controls[name] = Value(match["value"], match.get("ci"))
        return Level(
            int(row["round"]),
            row.get("label") or f"round {row['round']}",
            row["weights_remaining"],
            Value(row["value"], row.get("ci")),
            controls,
        )

    ticket = [r for r in lines.get("ticket", []) if _number(r.get("value")) and _number(r.get("weights_remaining"))]
    if not ticket:
        return None
    first = next((r for r in ticket if r["round"] == 0 and r["weights_remaining"] >= 1 - 1e-9), None)
    dense = level(first) if first is not None else None
    best_ticket = None
    if first is not None:
        good = [
            r
            for r in ticket
            if r["weights_remaining"] < first["weights_remaining"] and r["value"] - first["value"] >= -tolerance - 1e-12
        ]  # 1e-12: 0.5 points exactly counts
        if good:
            best_ticket = level(min(good, key=lambda r: (r["weights_remaining"], -r["round"])))
    best = max(ticket, key=lambda r: (r["value"], -r["weights_remaining"]))
    return Headline(dense, best_ticket, level(best), trials, experiment)


def run_headline(source: Source) -> Headline | None:
    """A ticket run's headline from its recorded rounds (``rounds.json``) and controls."""
    lines = {"ticket": source.rounds, **source.controls}
    return pick_headline(
        {
            name: [
                {"round": r["round"], "weights_remaining": r.get("weights_remaining"), "value": r.get(HEADLINE_METRIC)}
                for r in rows
                if _number(r.get(HEADLINE_METRIC))
            ]
            for name, rows in lines.items()
        }
    )


def study_headlines(summary: Sequence[Mapping[str, Any]]) -> list[Headline]:
    """One headline per experiment of a study, from its summary: means over the trials with
    their 95% CI half-widths."""
    from lth.store.study_dir import TICKET_LINE

    rows = [r for r in summary if r.get("metric") == HEADLINE_METRIC]
    out = []
    for experiment in dict.fromkeys(r["experiment"] for r in rows):
        mine = [r for r in rows if r["experiment"] == experiment]
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            if str(r.get("line", "")).startswith("branch:"):
                continue  # branches are not controls
            ci = r["ci95_high"] - r["mean"] if _number(r.get("ci95_high")) else None
            label = f"round {r['round']}" + (f" (keep {100 * r['keep']:g}%)" if "keep" in r else "")
            lines.setdefault(r.get("line", TICKET_LINE), []).append(
                {
                    "round": r["round"],
                    "weights_remaining": r["weights_remaining"],
                    "value": r["mean"],
                    "ci": ci,
                    "label": label,
                }
            )
        trials = max((int(r["trials"]) for r in mine if _number(r.get("trials"))), default=None)
        headline = pick_headline(lines, trials=trials, experiment=experiment)
        if headline is not None:
            out.append(headline)
    return out


def _acc(value: Value) -> str:
    """82.49% (a run), or 82.49 ± 0.31% (a mean over trials with its 95% CI half-width)."""
    if value.ci is None:
        return pct(value.value)
    return f"{100 * value.value:.2f} ± {100 * value.ci:.2f}%"


def _diff(a: float, b: float) -> str:
    return f"{100 * (a - b):+.2f} points"


def _where(level: Level) -> str:
    return f"{level.label} at {pct(level.weights_remaining)} of the weights"


def _controls(level: Level) -> str:
    return "".join(
        f"; {name} control {_acc(v)} ({_diff(v.value, level.ticket.value)} vs the ticket)"
        for name, v in level.controls.items()
    )


def headline_definition(study: bool | None = False) -> Text:
    """The sentence that defines the headline's levels: of a run (``study`` False), of a study
    (True: means over trials), or of both (None)."""
    level = "round" if study is False else "level"
    means = {
        False: "",
        True: " Accuracies are means over the trials; ± is the 95% confidence interval's half-width.",
        None: " A study's accuracies are means over its trials; ± is the 95% confidence interval's half-width.",
    }
    return Text(
        f"Best ticket: the sparsest pruned {level} whose ticket test accuracy at early stop is at most "
        f"{100 * TICKET_TOLERANCE:g} points below the dense network's (round 0), or above it; best accuracy: "
        f"the {level} with the highest ticket test accuracy at early stop.{means[study]}"
    )


def headline_text(headline: Headline, named: bool = False) -> str:
    """The headline in words: the best ticket against dense and the controls there, then the best
    accuracy; a study's prefixed with the trials averaged (and, ``named``, its experiment)."""
    out = []
    dense, ticket, best = headline.dense, headline.best_ticket, headline.best_accuracy
    if ticket is not None and dense is not None:
        out.append(
            f"Best ticket: {_where(ticket)}, test accuracy {_acc(ticket.ticket)} vs dense "
            f"{_acc(dense.ticket)} ({_diff(ticket.ticket.value, dense.ticket.value)}){_controls(ticket)}."
        )
    elif dense is not None:
        out.append(
            f"No pruned level stays within {100 * TICKET_TOLERANCE:g} points of the dense accuracy "
            f"({_acc(dense.ticket)})."
        )
    else:
        out.append("No dense round 0 (all the weights) to compare with.")
    if best is not None:
        if ticket is not None and best.round == ticket.round:
            out.append("It is also the most accurate level.")
        elif dense is not None and best.round == dense.round:
            out.append(f"Best accuracy: the dense network ({dense.label}).")
        else:
            versus = f" ({_diff(best.ticket.value, dense.ticket.value)} vs dense)" if dense is not None else ""
            out.append(f"Best accuracy: {_where(best)}, test accuracy {_acc(best.ticket)}{versus}{_controls(best)}.")
    text = " ".join(out)
    if headline.trials is not None:
        prefix = f"Experiment {headline.experiment}, mean" if named else "Mean"
        text = f"{prefix} of {headline.trials} trial{'s' * (headline.trials != 1)}: {text}"
    return text


def headline_table(headlines: Sequence[Headline]) -> Table:
    """Dense, best ticket and best accuracy of each headline, with every control at those levels."""
    study = len(headlines) > 1  # a study's experiments, one row group each
    controls = list(
        dict.fromkeys(
            name
            for h in headlines
            for lv in (h.dense, h.best_ticket, h.best_accuracy)
            if lv is not None
            for name in lv.controls
        )
    )
    mean = any(h.trials is not None for h in headlines)
    headers = (["experiment"] if study else []) + [
        "",
        "level",
        "weights left",
        "ticket test acc @ES" + (" (mean ± 95% CI)" if mean else ""),
        "vs dense (points)",
        *(f"{name} test acc @ES" for name in controls),
    ]
    rows = []
    for h in headlines:
        for name, lv in (("dense", h.dense), ("best ticket", h.best_ticket), ("best accuracy", h.best_accuracy)):
            if lv is None:
                continue
            versus = f"{100 * (lv.ticket.value - h.dense.ticket.value):+.2f}" if h.dense is not None else ""
            rows.append(
                ([h.experiment or ""] if study else [])
                + [
                    name,
                    lv.label,
                    pct(lv.weights_remaining),
                    _acc(lv.ticket),
                    versus,
                    *(_acc(lv.controls[c]) if c in lv.controls else "" for c in controls),
                ]
            )
    return Table(headers, rows)


def headline_blocks(headlines: Sequence[Headline], study: bool = False) -> list[Any]:
    if not headlines:
        return []
    named = len(headlines) > 1
    return [
        Heading("Headline"),
        *(Text(headline_text(h, named), strong=True) for h in headlines),
        headline_definition(study),
        headline_table(headlines),
    ]
