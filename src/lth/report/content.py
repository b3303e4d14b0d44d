"""What a report holds, independent of its format: sections of headings, text, tables, figures and
collapsed details gathered from run and study directories.

Each run's or study's section leads with its results: a headline (the best ticket against the
dense network and the controls, :func:`pick_headline`), its tables, its figures; then its status
and configuration: the settings that differ from the defaults (:func:`config_defaults`), and the
full configuration collapsed."""
from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from lth import __version__
from lth.plots import KINDS, Source, draw_kind, open_sources
from lth.plots.kinds import why_not
from lth.plots.common import STABILITY, STUDY, SUPERMASK_EVAL, SUPERMASK_TRAIN, TICKET

#: Kinds drawn once over all sources when a report covers several.
OVERLAY_KINDS = ("accuracy", "early-stop", "learning-curves", "layers")


@dataclass
class Heading:
    text: str


@dataclass
class Text:
    """A paragraph; ``strong`` ones (a headline) are set in bold."""

    text: str
    strong: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """One image: ``name`` is a file stem unique within the report."""

    name: str
    png: bytes
    caption: str


@dataclass
class Details:
    """Blocks shown collapsed under a one-line ``summary`` (an HTML ``<details>`` element, in the
    Markdown report too: GitHub renders it)."""

    summary: str
    blocks: list[Any] = field(default_factory=list)


Block = Union[Heading, Text, Table, Figure, Details]


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    generated: str
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in _walk(s.blocks) if isinstance(b, Figure)]


def _walk(blocks: Sequence[Any]) -> list[Any]:
    """``blocks`` and, in their order, the blocks inside every :class:`Details` among them."""
    out: list[Any] = []
    for block in blocks:
        out.append(block)
        if isinstance(block, Details):
            out += _walk(block.blocks)
    return out


# ------------------------------------------------------------------ formatting


def pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""


def scalar(value: Any) -> str:
    """A config value as YAML would write it (lists joined)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(scalar(v) for v in value) if value else "[]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as dotted keys: {"supermask": {"seed": 0}} -> [("supermask.seed", "0")]."""
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", scalar(value)))
    return rows


def config_table(config: Mapping[str, Any]) -> Table:
    return Table(["setting", "value"], [[k, v] for k, v in flatten(config)])


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, index = base, 2
    while slug in taken:
        slug, index = f"{base}-{index}", index + 1
    taken.add(slug)
    return slug


# ------------------------------------------------------------------ configuration


def config_defaults(config: Mapping[str, Any]) -> Optional[dict[str, str]]:
    """The default of every setting of a ticket-search config (a find-ticket run's, a branch's, a
    supermask-eval or stability run's, a study trial's), flattened as :func:`config_table` writes
    them: :class:`~lth.config.TicketConfig`'s own, with the recipe of ``config["model"]`` filled
    in as ``lth find-ticket MODEL DATASET`` does. None for a config of another kind
    (supermask-train) or of a model not registered in this process (its recipe is unknown)."""
    from lth.config import TicketConfig
    from lth.models import MODELS

    if not isinstance(config, Mapping) or not all(k in config for k in ("model", "dataset", "criterion", "mask1")):
        return None
    try:
        spec = MODELS.get(str(config["model"]))
        base = TicketConfig(model=str(config["model"]), dataset=str(config["dataset"])).with_recipe(spec.recipe)
    except Exception:  # an unknown model (LthError), a recipe this TicketConfig refuses
        return None
    return dict(flatten(base.model_dump()))


def config_blocks(config: Mapping[str, Any], what: str = "configuration") -> list[Any]:
    """The settings that differ from their defaults (:func:`config_defaults`) first, with the
    default beside each, then those without a default to compare with (a run kind's own settings,
    such as ``supermask.*``), then the full configuration, collapsed."""
    from lth.config import TicketConfig

    rows = flatten(config)
    defaults = config_defaults(config)
    blocks: list[Any] = []
    if defaults is None:
        blocks.append(Text(f"No defaults are known for this {what} (not a ticket search's, or its model is not "
                           "registered here): every setting is in the full table below."))
    else:
        recipe_filled = {k for k, f in TicketConfig.model_fields.items() if f.default is None}
        changed = [[key, value, defaults[key]] for key, value in rows
                   if key in defaults and value != defaults[key]
                   and not (value == "null" and key in recipe_filled)]  # None: "take the recipe's"
        own = [[key, value] for key, value in rows if key not in defaults]
        source = f"lth.config.TicketConfig's, with the recipe of {scalar(config.get('model'))} filled in"
        if changed:
            blocks.append(Table(["setting", "value", "default"], changed,
                                f"{len(changed)} setting{'s' * (len(changed) != 1)} differ{'s' * (len(changed) == 1)} "
                                f"from the defaults ({source})"))
        else:
            blocks.append(Text(f"Every setting has its default value ({source})."))
        if own:
            blocks.append(Table(["setting", "value"], own, "Settings of this kind of run (no default to compare "
                                                           "with)"))
    blocks.append(Details(f"Full {what} ({len(rows)} settings)", [config_table(config)]))
    return blocks


# ------------------------------------------------------------------ headlines

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
    ci: Optional[float] = None


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

    dense: Optional[Level]
    best_ticket: Optional[Level]
    best_accuracy: Optional[Level]
    trials: Optional[int] = None  # a study's: the trials each value is the mean of
    experiment: Optional[str] = None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_headline(lines: Mapping[str, Sequence[Mapping[str, Any]]], tolerance: float = TICKET_TOLERANCE,
                  trials: Optional[int] = None, experiment: Optional[str] = None) -> Optional[Headline]:
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
        return Level(int(row["round"]), row.get("label") or f"round {row['round']}", row["weights_remaining"],
                     Value(row["value"], row.get("ci")), controls)

    ticket = [r for r in lines.get("ticket", []) if _number(r.get("value")) and _number(r.get("weights_remaining"))]
    if not ticket:
        return None
    first = next((r for r in ticket if r["round"] == 0 and r["weights_remaining"] >= 1 - 1e-9), None)
    dense = level(first) if first is not None else None
    best_ticket = None
    if first is not None:
        good = [r for r in ticket if r["weights_remaining"] < first["weights_remaining"]
                and r["value"] - first["value"] >= -tolerance - 1e-12]  # 1e-12: 0.5 points exactly counts
        if good:
            best_ticket = level(min(good, key=lambda r: (r["weights_remaining"], -r["round"])))
    best = max(ticket, key=lambda r: (r["value"], -r["weights_remaining"]))
    return Headline(dense, best_ticket, level(best), trials, experiment)


def run_headline(source: Source) -> Optional[Headline]:
    """A ticket run's headline from its recorded rounds (``rounds.json``) and controls."""
    lines = {"ticket": source.rounds, **source.controls}
    return pick_headline({name: [{"round": r["round"], "weights_remaining": r.get("weights_remaining"),
                                  "value": r.get(HEADLINE_METRIC)} for r in rows if _number(r.get(HEADLINE_METRIC))]
                          for name, rows in lines.items()})


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
                {"round": r["round"], "weights_remaining": r["weights_remaining"], "value": r["mean"], "ci": ci,
                 "label": label})
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
    return "".join(f"; {name} control {_acc(v)} ({_diff(v.value, level.ticket.value)} vs the ticket)"
                   for name, v in level.controls.items())


def headline_definition(study: Optional[bool] = False) -> Text:
    """The sentence that defines the headline's levels: of a run (``study`` False), of a study
    (True: means over trials), or of both (None)."""
    level = "round" if study is False else "level"
    means = {False: "", True: " Accuracies are means over the trials; ± is the 95% confidence interval's half-width.",
             None: " A study's accuracies are means over its trials; ± is the 95% confidence interval's half-width."}
    return Text(f"Best ticket: the sparsest pruned {level} whose ticket test accuracy at early stop is at most "
                f"{100 * TICKET_TOLERANCE:g} points below the dense network's (round 0), or above it; best accuracy: "
                f"the {level} with the highest ticket test accuracy at early stop.{means[study]}")


def headline_text(headline: Headline, named: bool = False) -> str:
    """The headline in words: the best ticket against dense and the controls there, then the best
    accuracy; a study's prefixed with the trials averaged (and, ``named``, its experiment)."""
    out = []
    dense, ticket, best = headline.dense, headline.best_ticket, headline.best_accuracy
    if ticket is not None and dense is not None:
        out.append(f"Best ticket: {_where(ticket)}, test accuracy {_acc(ticket.ticket)} vs dense "
                   f"{_acc(dense.ticket)} ({_diff(ticket.ticket.value, dense.ticket.value)}){_controls(ticket)}.")
    elif dense is not None:
        out.append(f"No pruned level stays within {100 * TICKET_TOLERANCE:g} points of the dense accuracy "
                   f"({_acc(dense.ticket)}).")
    else:
        out.append("No dense round 0 (all the weights) to compare with.")
    if best is not None:
        if ticket is not None and best.round == ticket.round:
            out.append("It is also the most accurate level.")
        elif dense is not None and best.round == dense.round:
            out.append(f"Best accuracy: the dense network ({dense.label}).")
        else:
            versus = f" ({_diff(best.ticket.value, dense.ticket.value)} vs dense)" if dense is not None else ""
            out.append(f"Best accuracy: {_where(best)}, test accuracy {_acc(best.ticket)}{versus}"
                       f"{_controls(best)}.")
    text = " ".join(out)
    if headline.trials is not None:
        prefix = f"Experiment {headline.experiment}, mean" if named else "Mean"
        text = f"{prefix} of {headline.trials} trial{'s' * (headline.trials != 1)}: {text}"
    return text


def headline_table(headlines: Sequence[Headline]) -> Table:
    """Dense, best ticket and best accuracy of each headline, with every control at those levels."""
    study = len(headlines) > 1  # a study's experiments, one row group each
    controls = list(dict.fromkeys(name for h in headlines for lv in (h.dense, h.best_ticket, h.best_accuracy)
                                  if lv is not None for name in lv.controls))
    mean = any(h.trials is not None for h in headlines)
    headers = (["experiment"] if study else []) + [
        "", "level", "weights left", "ticket test acc @ES" + (" (mean ± 95% CI)" if mean else ""),
        "vs dense (points)", *(f"{name} test acc @ES" for name in controls)]
    rows = []
    for h in headlines:
        for name, lv in (("dense", h.dense), ("best ticket", h.best_ticket), ("best accuracy", h.best_accuracy)):
            if lv is None:
                continue
            versus = f"{100 * (lv.ticket.value - h.dense.ticket.value):+.2f}" if h.dense is not None else ""
            rows.append(([h.experiment or ""] if study else []) + [
                name, lv.label, pct(lv.weights_remaining), _acc(lv.ticket), versus,
                *(_acc(lv.controls[c]) if c in lv.controls else "" for c in controls)])
    return Table(headers, rows)


def headline_blocks(headlines: Sequence[Headline], study: bool = False) -> list[Any]:
    if not headlines:
        return []
    named = len(headlines) > 1
    return [Heading("Headline"), *(Text(headline_text(h, named), strong=True) for h in headlines),
            headline_definition(study), headline_table(headlines)]


# ------------------------------------------------------------------ tables


def rounds_table(source: Source) -> Table:
    """The per-round table of ``lth show``: ticket values and each control's accuracy at early stop."""
    headers = ["round", "weights left", "early-stop it", "val acc @ES", "test acc @ES", "final test acc"]
    rows = [[str(r["round"]), pct(r["weights_remaining"]), str(r["early_stop_iteration"]),
             pct(r["val_accuracy_at_early_stop"]), pct(r["test_accuracy_at_early_stop"]), pct(r["final_test_accuracy"])]
            for r in source.rounds]
    for name, control in source.controls.items():
        by_round = {r["round"]: r for r in control}
        headers.append(f"{name} test acc @ES")
        for row in rows:
            r = by_round.get(int(row[0]))
            row.append(pct(r["test_accuracy_at_early_stop"]) if r else "")
    return Table(headers, rows)


def control_table(name: str, rounds: Sequence[Mapping[str, Any]]) -> Table:
    return Table(
        ["round", "weights left", "early-stop it", "test acc @ES", "final test acc"],
        [[str(r["round"]), pct(r["weights_remaining"]), str(r["early_stop_iteration"]),
          pct(r["test_accuracy_at_early_stop"]), pct(r["final_test_accuracy"])] for r in rounds],
    )


def _mean_ci(row: Mapping[str, Any] | None, percent: bool = True) -> str:
    if row is None:
        return ""
    scale, unit = (100, "%") if percent else (1, "")
    if row.get("ci95_high") is None:
        return f"{scale * row['mean']:.2f}{unit}"
    return f"{scale * row['mean']:.2f} ± {scale * (row['ci95_high'] - row['mean']):.2f}{unit}"


def statistics_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    """Per experiment, line (its ticket, then its controls, then its branches) and level: test
    accuracy at early stop (mean ± 95% CI half-width, [min, max]), final test accuracy and
    early-stop iteration (means). Rows without a ``line`` are the ticket's."""
    from lth.store.study_dir import TICKET_LINE, line_order

    by_key = {(r["experiment"], r.get("line", TICKET_LINE), r["round"], r["metric"]): r for r in summary}
    experiments = list(dict.fromkeys(r["experiment"] for r in summary))
    keys = sorted((key for key in by_key if key[3] == "test_accuracy_at_early_stop"),
                  key=lambda k: (experiments.index(k[0]), line_order(k[1]), k[2]))
    rows = []
    for experiment, line, round_index, metric in keys:
        r = by_key[(experiment, line, round_index, metric)]
        es = by_key.get((experiment, line, round_index, "early_stop_iteration"))
        level = f"keep {100 * r['keep']:g}%" if "keep" in r else str(round_index)  # a pruning-at-init study's level
        rows.append([experiment, line, level, pct(r["weights_remaining"]), str(r["trials"]), _mean_ci(r),
                     f"[{100 * r['min']:.2f}, {100 * r['max']:.2f}]",
                     _mean_ci(by_key.get((experiment, line, round_index, "final_test_accuracy"))),
                     _mean_ci(es, percent=False)])
    level = "level" if any("keep" in r for r in summary) else "round"
    return Table(["experiment", "line", level, "weights left", "trials", "test acc @ES (mean ± 95% CI)",
                  "[min, max] %", "final test acc", "early-stop it"], rows)


def supermask_eval_table(source: Source) -> Table:
    from lth.supermasks.evaluate import read_rows

    return Table(
        ["criterion", "weights", "keep", "weights left", "test acc", "train acc", "test loss"],
        [[r["criterion"], r["weights"], f"{100 * r['keep']:.3g}%", pct(r["weights_remaining"]), pct(r["test_accuracy"]),
          pct(r["train_accuracy"]), f"{r['test_loss']:.4f}"] for r in read_rows(source.run)],
    )


def _points(entry: Mapping[str, Any], key: str) -> str:
    """A fraction of error as percentage points, mean ± std over pairs: 0.0123 -> '1.23 ± 0.40'."""
    return f"{100 * entry[key]:.2f} ± {100 * (entry.get(f'{key}_std') or 0.0):.2f}"


def stability_table(source: Source) -> Table:
    """One row per level and rewind point k of a stability run: its barriers and verdict."""
    from lth.experiments.stability import read_entries

    return Table(
        ["level", "weights left", "rewind k", "pairs", "test instability (pp)", "train instability (pp)",
         "test loss barrier", "stable"],
        [[str(e["level"]), pct(e["weights_remaining"]), str(e["rewind_iteration"]), str(e.get("pairs", "")),
          _points(e, "instability_test"), _points(e, "instability_train"), f"{e['loss_barrier_test']:.4f}",
          "yes" if e.get("stable") else "no"] for e in read_entries(source.run)],
    )


def stability_definition(source: Source) -> Text:
    """What the stability table's numbers mean, with the run's threshold."""
    settings = source.config.get("stability")
    threshold = settings.get("stable_threshold") if isinstance(settings, Mapping) else None
    threshold = threshold if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else 0.02
    return Text("Instability is the largest error along the linear path between two copies of the network "
                "(trained from the same weights at rewind iteration k with different data orders) minus the mean "
                "of the errors at the path's two ends, in percentage points (pp, mean ± std over pairs), and the "
                f"network is stable at k when its mean test instability is at most {100 * threshold:g} pp.")


def supermask_train_table(source: Source) -> Table:
    from lth.documents import read_document

    path = source.path / "supermask_train.json"
    summary = read_document(path, dict) if path.is_file() else {}  # LthError naming a damaged file
    summary = {k: v for k, v in summary.items() if k != "test_accuracy_sampled"}
    return Table(["result", "value"], [[k, v] for k, v in flatten(summary)])


# ------------------------------------------------------------------ figures


def figures(kinds: Sequence[str], sources: Sequence[Source], work: Path, prefix: str, least: int = 1) -> list[Figure]:
    """PNG figures of ``kinds`` of ``sources``, drawn into ``work``; a kind is drawn when it applies
    to at least ``least`` of the sources."""
    found = []
    for name in kinds:
        if sum(why_not(KINDS[name], s, None) is None for s in sources) < least:
            continue
        for path in draw_kind(name, sources, work / f"{prefix}-{name}", ("png",)):
            found.append(Figure(f"{prefix}-{path.stem}", path.read_bytes(), KINDS[name].description))
    return found


def _status(source: Source) -> Text:
    status = source.study.status() if source.kind == STUDY else source.run.status()
    parts = [f"directory: {source.path}", f"status: {status.get('status', 'unknown')}"]
    for key in ("started", "finished", "device", "runs_complete", "runs_total"):
        if key in status:
            parts.append(f"{key.replace('_', ' ')}: {status[key]}")
    return Text("; ".join(parts))


def source_section(source: Source, anchor: str, work: Path) -> Section:
    """A run's or study's section, results first: its headline (ticket runs and studies), its
    tables, every figure that applies, and last its status and configuration (the settings that
    differ from the defaults, then the full configuration collapsed)."""
    section = Section(f"{source.label}: {source.title}", anchor)
    blocks = section.blocks
    details: list[Any] = [_status(source)]  # the configuration part, after the results
    if source.kind == STUDY:
        description = source.study.study()
        experiments = description.get("experiments", [])
        summary = source.study.summary()
        blocks += headline_blocks(study_headlines(summary), study=True)
        blocks += [Heading("Statistics over trials"), statistics_table(summary)]
        details += [Table(
            ["experiment", "settings", "trials", "complete"],
            [[e["name"], ", ".join(f"{k}={scalar(v)}" for k, v in e.get("settings", {}).items()) or "(base)",
              str(len(e["runs"])),
              str(sum(source.study.run(r["path"]).status().get("status") == "complete" for r in e["runs"]))]
             for e in experiments], "Experiments")]
        if experiments and experiments[0]["runs"]:
            first = experiments[0]["runs"][0]
            trial = source.study.run(first["path"])  # its config.yaml has the recipe filled in
            config = trial.config() if (trial.path / "config.yaml").is_file() else first["config"]
            details += [Text("Configuration of the first trial of the first experiment:"),
                        *config_blocks(config, "configuration of the first trial")]
    else:
        if source.kind == TICKET:
            blocks += headline_blocks([h for h in [run_headline(source)] if h is not None])
            blocks += [Heading("Rounds"), rounds_table(source)]
            for name, rounds in source.controls.items():
                blocks += [Heading(f"Control: {name}"), control_table(name, rounds)]
            for name, rounds in source.branches.items():
                blocks += [Heading(f"Branch: {name}"), control_table(name, rounds)]
        elif source.kind == SUPERMASK_EVAL:
            blocks += [Heading("Supermasks at initialisation"), supermask_eval_table(source)]
        elif source.kind == STABILITY:
            blocks += [Heading("Instability analysis"), stability_definition(source), stability_table(source)]
        elif source.kind == SUPERMASK_TRAIN:
            blocks += [Heading("Learned supermask"), supermask_train_table(source)]
        details += config_blocks(source.config)
    drawn = figures(list(KINDS), [source], work, anchor)
    if drawn:
        blocks += [Heading("Figures"), *drawn]
    blocks += [Heading("Configuration"), *details]
    return section


def headlines_section(sources: Sequence[Source], anchor: str) -> Optional[Section]:
    """For a report on several sources: each one's headline in words, before anything else."""
    blocks: list[Any] = []
    for source in sources:
        if source.kind == STUDY:
            found = study_headlines(source.study.summary())
        elif source.kind == TICKET:
            found = [h for h in [run_headline(source)] if h is not None]
        else:
            continue
        for h in found:
            blocks.append(Text(f"{source.label} ({source.title}) — {headline_text(h, len(found) > 1)}", strong=True))
    if not blocks:
        return None
    kinds = {s.kind == STUDY for s in sources if s.kind in (STUDY, TICKET)}
    return Section("Headlines", anchor, [*blocks, headline_definition(kinds.pop() if len(kinds) == 1 else None)])


def build_report(paths: Sequence[str | Path]) -> Report:
    """Every section of a report on the given run and study directories (figures as PNG bytes)."""
    sources = open_sources(paths)
    taken: set[str] = set()
    sections = []
    with tempfile.TemporaryDirectory(prefix="lth-report-") as tmp:
        work = Path(tmp)
        if len(sources) > 1:
            found = headlines_section(sources, _slug("headlines", taken))
            if found is not None:
                sections.append(found)
            anchor = _slug("comparison", taken)
            overlay = figures(OVERLAY_KINDS, sources, work, anchor, least=2)
            if overlay:
                sections.append(Section("Comparison", anchor, [
                    Text("Every run and study of this report on shared axes: "
                         + ", ".join(s.label for s in sources) + "."), *overlay]))
        for source in sources:
            sections.append(source_section(source, _slug(source.label, taken), work))
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "lth report: " + ", ".join(s.label for s in sources)
    return Report(title, f"generated {generated} by lth {__version__}", sections)
