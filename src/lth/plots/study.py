"""Figures of studies (robust / session): statistics over trials drawn as bands."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.plots.accuracy import ACCURACY_FILE, accuracy_figure
from lth.plots.common import STUDY, Source, axes_or_new, percent_axis, remaining_axis, save
from lth.store.study_dir import TICKET_LINE, line_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lth.store.study_dir import StudyDir


def draw_trials_accuracy(
    summary: Sequence[Mapping[str, Any]],
    metric: str = "test_accuracy_at_early_stop",
    ax: "Axes | None" = None,
    label: str | None = None,
    title: str | None = None,
) -> "Figure":
    """Mean of ``metric`` over trials against weights remaining, with its 95% CI band and a
    lighter min-max band; ``summary`` holds ``summarise_trials`` rows. Rows that name their
    ``line`` (``summarise_lines``: the ticket, its controls, its branches) give one mean and
    bands per line in its own colour, the ticket solid, controls dashed, branches dash-dotted.
    Returns the figure."""
    from matplotlib.patches import Patch

    from lth.plots.accuracy import line_label, line_style

    ax = axes_or_new(ax)
    rows = [r for r in summary if r["metric"] == metric]
    lines = sorted(dict.fromkeys(r.get("line", TICKET_LINE) for r in rows), key=line_order) or [TICKET_LINE]
    several = len(lines) > 1
    levels: list[float] = []
    trials = 0
    for line in lines:
        mine = sorted((r for r in rows if r.get("line", TICKET_LINE) == line), key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in mine]
        levels += x
        trials = max([trials, *(r["trials"] for r in mine)])
        name = label or metric
        if several:
            name = f"{label}: {line_label(line)}" if label else line_label(line)
        linestyle, marker = line_style(line)
        drawn = ax.plot(x, [r["mean"] for r in mine], linestyle=linestyle, marker=marker, label=f"{name} (mean)")[0]
        colour = drawn.get_color()
        ax.fill_between(x, [r["min"] for r in mine], [r["max"] for r in mine], color=colour, alpha=0.12,
                        linewidth=0, label=None if several else "min-max")
        if all(r["ci95_low"] is not None for r in mine):
            ax.fill_between(x, [r["ci95_low"] for r in mine], [r["ci95_high"] for r in mine], color=colour,
                            alpha=0.3, linewidth=0, label=None if several else "95% CI")
    remaining_axis(ax, levels)
    percent_axis(ax.yaxis)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"mean over {trials} trials")
    handles, labels = ax.get_legend_handles_labels()
    if several:  # one grey key for the bands of every line
        handles += [Patch(color="0.45", alpha=0.3, linewidth=0), Patch(color="0.45", alpha=0.12, linewidth=0)]
        labels += ["95% CI", "min-max"]
    ax.legend(handles, labels, fontsize="small")
    return ax.figure


def study_figure(study: "StudyDir") -> "Figure":
    """The figure :func:`plot_study` saves: every line (ticket, controls, branches) of every
    experiment of the study as a band over its trials."""
    source = Source(Path(study.path), STUDY, Path(study.path).resolve().name)
    from lth.experiments.init_pruning_study import compare_sources

    # a pruning-at-init study draws the IMP runs it was given (--compare) on the same axes
    others = [_source(path) for path in compare_sources(study)]
    return accuracy_figure([source, *(s for s in others if s is not None)])


def _source(path: str) -> "Source | None":
    """A run or study to overlay, as a plot source (None when it cannot be read any more)."""
    from lth.errors import LthError
    from lth.plots.common import open_sources

    try:
        return open_sources([path])[0]
    except LthError:
        return None


def plot_study(study: "StudyDir") -> list[Path]:
    """A study's figure: mean test accuracy at early stop of every experiment and line (its ticket
    solid, its controls dashed, its branches dash-dotted) with 95% CI and min-max bands over its
    trials, against weights remaining (``accuracy_vs_weights_remaining.png``)."""
    if not study.summary():
        return []
    return save(study_figure(study), Path(study.path), ACCURACY_FILE, ("png",))
