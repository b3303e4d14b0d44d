"""Figures of studies (robust / session): statistics over trials drawn as bands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.plots.accuracy import ACCURACY_FILE, accuracy_figure
from lth.plots.common import (
    STUDY,
    Source,
    axes_or_new,
    band_key,
    clip,
    fit_ylim,
    metric_bounds,
    percent_axis,
    reference_line,
    remaining_axis,
    root_figure,
    save,
)
from lth.store.study_dir import TICKET_LINE, line_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lth.store.study_dir import StudyDir

#: The opacity of a study's min-max band and of its 95% CI band (over it: darker).
MINMAX_ALPHA, CI_ALPHA = 0.12, 0.3


def draw_trials_accuracy(
    summary: Sequence[Mapping[str, Any]],
    metric: str = "test_accuracy_at_early_stop",
    ax: Axes | None = None,
    label: str | None = None,
    title: str | None = None,
) -> Figure:
    """Mean of ``metric`` over trials against weights remaining, with its 95% CI band and a
    lighter min-max band; ``summary`` holds ``summarise_trials`` rows. Rows that name their
    ``line`` (``summarise_lines``: the ticket, its controls, its branches) give one mean and
    bands per line in its own colour, the ticket solid, controls dashed, branches dash-dotted.
    The CI band is clipped to what the metric can take (an accuracy stays within 0-100%), each
    line's legend key shows its bands' colours and opacities under its mean, and the y range fits
    the data. Returns the figure."""
    from matplotlib.patches import Patch

    from lth.plots.accuracy import DENSE_COLOUR, dense_value, line_label, line_style

    ax = axes_or_new(ax)
    rows = [r for r in summary if r["metric"] == metric]
    lines = sorted(dict.fromkeys(r.get("line", TICKET_LINE) for r in rows), key=line_order) or [TICKET_LINE]
    several = len(lines) > 1
    bounds = metric_bounds(metric)
    levels: list[float] = []
    trials = 0
    entries: list[tuple[Any, str]] = []
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
        ax.fill_between(
            x,
            [r["min"] for r in mine],
            [r["max"] for r in mine],
            color=colour,
            alpha=MINMAX_ALPHA,
            linewidth=0,
            label=None if several else "min-max",
        )
        shaded = bool(mine) and all(r["ci95_low"] is not None for r in mine)
        if shaded:
            ax.fill_between(
                x,
                clip([r["ci95_low"] for r in mine], bounds),
                clip([r["ci95_high"] for r in mine], bounds),
                color=colour,
                alpha=CI_ALPHA,
                linewidth=0,
                label=None if several else "95% CI",
            )
        if several:  # one key per line: its min-max and CI swatches (its colour, their opacities) under its mean
            swatches = [Patch(facecolor=colour, alpha=MINMAX_ALPHA, edgecolor="none", linewidth=0)]
            if shaded:
                swatches.append(band_key(colour, CI_ALPHA, drawn)[0])
            entries.append(((*swatches, band_key(colour, CI_ALPHA, drawn)[1]), f"{name} (mean)"))
    ticket = [r for r in rows if r.get("line", TICKET_LINE) == TICKET_LINE]
    dense = dense_value(ticket, "mean")
    if dense is not None:  # the dense network (round 0) as a reference across the axes
        reference = reference_line(ax, dense, f"{label + ': ' if label else ''}dense (mean)", DENSE_COLOUR)
        entries.append((reference, str(reference.get_label())))
    remaining_axis(ax, levels)
    if bounds == (0.0, 1.0):
        percent_axis(ax.yaxis)
    fit_ylim(ax)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"mean over {trials} trials")
    if several:
        ax.legend(
            [h for h, _ in entries],
            [lbl for _, lbl in entries],
            fontsize="small",
            title="darker band: 95% CI; lighter: min-max",
            title_fontsize="small",
        )
    else:
        ax.legend(fontsize="small")
    return root_figure(ax)


def study_figure(study: StudyDir) -> Figure:
    """The figure :func:`plot_study` saves: every line (ticket, controls, branches) of every
    experiment of the study as a band over its trials."""
    source = Source(Path(study.path), STUDY, Path(study.path).resolve().name)
    from lth.store.study_dir import compare_sources

    # a pruning-at-init study draws the IMP runs it was given (--compare) on the same axes
    others = [_source(path) for path in compare_sources(study)]
    return accuracy_figure([source, *(s for s in others if s is not None)])


def _source(path: str) -> Source | None:
    """A run or study to overlay, as a plot source (None when it cannot be read any more)."""
    from lth.errors import LthError
    from lth.plots.common import open_sources

    try:
        return open_sources([path])[0]
    except LthError:
        return None


def plot_study(study: StudyDir) -> list[Path]:
    """A study's figure: mean test accuracy at early stop of every experiment and line (its ticket
    solid, its controls dashed, its branches dash-dotted) with 95% CI and min-max bands over its
    trials, against weights remaining (``accuracy_vs_weights_remaining.png``)."""
    if not study.summary():
        return []
    return save(study_figure(study), Path(study.path), ACCURACY_FILE, ("png",))
