"""What a report holds, gathered from run and study directories into format-free blocks
(:mod:`lth.report.blocks`).

Each run's or study's section leads with its results: a headline (the best ticket against the
dense network and the controls, :mod:`lth.report.headline`), its tables, its figures; then its
status and configuration (:mod:`lth.report.configuration`): the settings that differ from the
defaults, and the full configuration collapsed."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lth import __version__
from lth.plots import KINDS, Source, draw_kind, open_sources
from lth.plots.common import STABILITY, STUDY, SUPERMASK_EVAL, SUPERMASK_TRAIN, TICKET
from lth.plots.kinds import why_not
from lth.report.blocks import Figure, Heading, Report, Section, Table, Text, pct
from lth.report.configuration import config_blocks, flatten, scalar
from lth.report.headline import headline_blocks, headline_definition, headline_text, run_headline, study_headlines

#: Kinds drawn once over all sources when a report covers several.
OVERLAY_KINDS = ("accuracy", "early-stop", "learning-curves", "layers")


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, index = base, 2
    while slug in taken:
        slug, index = f"{base}-{index}", index + 1
    taken.add(slug)
    return slug


# ------------------------------------------------------------------ tables


def rounds_table(source: Source) -> Table:
    """The per-round table of ``lth show``: ticket values and each control's accuracy at early stop."""
    headers = ["round", "weights left", "early-stop it", "val acc @ES", "test acc @ES", "final test acc"]
    rows = [
        [
            str(r["round"]),
            pct(r["weights_remaining"]),
            str(r["early_stop_iteration"]),
            pct(r["val_accuracy_at_early_stop"]),
            pct(r["test_accuracy_at_early_stop"]),
            pct(r["final_test_accuracy"]),
        ]
        for r in source.rounds
    ]
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
        [
            [
                str(r["round"]),
                pct(r["weights_remaining"]),
                str(r["early_stop_iteration"]),
                pct(r["test_accuracy_at_early_stop"]),
                pct(r["final_test_accuracy"]),
            ]
            for r in rounds
        ],
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
    keys = sorted(
        (key for key in by_key if key[3] == "test_accuracy_at_early_stop"),
        key=lambda k: (experiments.index(k[0]), line_order(k[1]), k[2]),
    )
    rows = []
    for experiment, line, round_index, metric in keys:
        r = by_key[(experiment, line, round_index, metric)]
        es = by_key.get((experiment, line, round_index, "early_stop_iteration"))
        level = f"keep {100 * r['keep']:g}%" if "keep" in r else str(round_index)  # a pruning-at-init study's level
        rows.append(
            [
                experiment,
                line,
                level,
                pct(r["weights_remaining"]),
                str(r["trials"]),
                _mean_ci(r),
                f"[{100 * r['min']:.2f}, {100 * r['max']:.2f}]",
                _mean_ci(by_key.get((experiment, line, round_index, "final_test_accuracy"))),
                _mean_ci(es, percent=False),
            ]
        )
    level = "level" if any("keep" in r for r in summary) else "round"
    return Table(
        [
            "experiment",
            "line",
            level,
            "weights left",
            "trials",
            "test acc @ES (mean ± 95% CI)",
            "[min, max] %",
            "final test acc",
            "early-stop it",
        ],
        rows,
    )


def supermask_eval_table(source: Source) -> Table:
    from lth.supermasks.evaluate import read_rows

    return Table(
        ["criterion", "weights", "keep", "weights left", "test acc", "train acc", "test loss"],
        [
            [
                r["criterion"],
                r["weights"],
                f"{100 * r['keep']:.3g}%",
                pct(r["weights_remaining"]),
                pct(r["test_accuracy"]),
                pct(r["train_accuracy"]),
                f"{r['test_loss']:.4f}",
            ]
            for r in read_rows(source.run)
        ],
    )


def _points(entry: Mapping[str, Any], key: str) -> str:
    """A fraction of error as percentage points, mean ± std over pairs: 0.0123 -> '1.23 ± 0.40'."""
    return f"{100 * entry[key]:.2f} ± {100 * (entry.get(f'{key}_std') or 0.0):.2f}"


def stability_table(source: Source) -> Table:
    """One row per level and rewind point k of a stability run: its barriers and verdict."""
    from lth.experiments.stability import read_entries

    return Table(
        [
            "level",
            "weights left",
            "rewind k",
            "pairs",
            "test instability (pp)",
            "train instability (pp)",
            "test loss barrier",
            "stable",
        ],
        [
            [
                str(e["level"]),
                pct(e["weights_remaining"]),
                str(e["rewind_iteration"]),
                str(e.get("pairs", "")),
                _points(e, "instability_test"),
                _points(e, "instability_train"),
                f"{e['loss_barrier_test']:.4f}",
                "yes" if e.get("stable") else "no",
            ]
            for e in read_entries(source.run)
        ],
    )


def stability_definition(source: Source) -> Text:
    """What the stability table's numbers mean, with the run's threshold."""
    settings = source.config.get("stability")
    threshold = settings.get("stable_threshold") if isinstance(settings, Mapping) else None
    threshold = threshold if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else 0.02
    return Text(
        "Instability is the largest error along the linear path between two copies of the network "
        "(trained from the same weights at rewind iteration k with different data orders) minus the mean "
        "of the errors at the path's two ends, in percentage points (pp, mean ± std over pairs), and the "
        f"network is stable at k when its mean test instability is at most {100 * threshold:g} pp."
    )


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
        details += [
            Table(
                ["experiment", "settings", "trials", "complete"],
                [
                    [
                        e["name"],
                        ", ".join(f"{k}={scalar(v)}" for k, v in e.get("settings", {}).items()) or "(base)",
                        str(len(e["runs"])),
                        str(sum(source.study.run(r["path"]).status().get("status") == "complete" for r in e["runs"])),
                    ]
                    for e in experiments
                ],
                "Experiments",
            )
        ]
        if experiments and experiments[0]["runs"]:
            first = experiments[0]["runs"][0]
            trial = source.study.run(first["path"])  # its config.yaml has the recipe filled in
            config = trial.config() if (trial.path / "config.yaml").is_file() else first["config"]
            details += [
                Text("Configuration of the first trial of the first experiment:"),
                *config_blocks(config, "configuration of the first trial"),
            ]
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


def headlines_section(sources: Sequence[Source], anchor: str) -> Section | None:
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
                sections.append(
                    Section(
                        "Comparison",
                        anchor,
                        [
                            Text(
                                "Every run and study of this report on shared axes: "
                                + ", ".join(s.label for s in sources)
                                + "."
                            ),
                            *overlay,
                        ],
                    )
                )
        for source in sources:
            sections.append(source_section(source, _slug(source.label, taken), work))
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "lth report: " + ", ".join(s.label for s in sources)
    return Report(title, f"generated {generated} by lth {__version__}", sections)
