"""Test accuracy (or any per-round metric) against weights remaining: runs overlaid with their
controls, studies as a mean with 95% CI and min-max bands over trials."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import FuncFormatter

from lth.plots.common import (
    FORMATS,
    STUDY,
    TICKET,
    Source,
    axes_or_new,
    band_key,
    clip,
    fit_ylim,
    legend_below,
    lighter,
    metric_bounds,
    new_figure,
    percent_axis,
    reference_line,
    remaining_axis,
    root_figure,
    save,
    subject,
)
from lth.store.study_dir import ABLATION_PREFIX, BRANCH_PREFIX, TICKET_LINE, line_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CONTROL_MARKERS = "^vDPX"
BRANCH_MARKERS = "<>hp*"
ACCURACY_FILE = "accuracy_vs_weights_remaining"


#: The opacity of a ticket's 95% CI band and of a control's or branch's (fainter, drawn dashed).
BAND_ALPHA, OTHER_BAND_ALPHA = 0.25, 0.18
#: The colour of the one dense reference of a figure (several: each in its run's colour).
DENSE_COLOUR = "0.3"


def band(
    ax: Axes,
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    colour: Any,
    label: str,
    linestyle: str = "-",
    marker: str = "o",
    keys: dict[Any, Any] | None = None,
) -> list[float]:
    """The mean of ``metric`` over trials (``summarise_trials`` rows) as a line (``linestyle``:
    solid for a ticket, dashed for its controls, dash-dotted for its branches), its 95% CI as a band
    (clipped to what the metric can take: an accuracy stays within 0-100%) and the min and max as
    dotted lines, all in ``colour``; returns the x values. ``keys`` maps the mean's line to its
    legend handle: the band's swatch under the line (:func:`band_key`), or the line without a band."""
    rows = sorted((r for r in rows if r["metric"] == metric), key=lambda r: r["round"])
    x = [r["weights_remaining"] for r in rows]
    # A t interval over few trials can pass 100% (or go below 0 iterations); the metric cannot.
    bounds = metric_bounds(metric)
    alpha = BAND_ALPHA if linestyle == "-" else OTHER_BAND_ALPHA
    shaded = bool(rows) and all(r["ci95_low"] is not None for r in rows)
    if shaded:
        ax.fill_between(
            x,
            clip([r["ci95_low"] for r in rows], bounds),
            clip([r["ci95_high"] for r in rows], bounds),
            color=colour,
            alpha=alpha,
            linewidth=0,
        )
    # Min and max as thin lines, not a second fill: with few trials the t interval is the wider one.
    for key in ("min", "max"):
        ax.plot(x, [r[key] for r in rows], linestyle=":", linewidth=1.0, color=colour)
    trials = max((r["trials"] for r in rows), default=0)
    mean = ax.plot(
        x,
        [r["mean"] for r in rows],
        linestyle=linestyle,
        marker=marker,
        color=colour,
        markersize=4,
        label=f"{label} (mean of {trials})",
    )[0]
    if keys is not None:
        keys[mean] = band_key(colour, alpha, mean) if shaded else mean
    return x


def dense_value(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """``key`` of the dense round (round 0 with every weight kept) among per-round ``rows``; None
    when there is none (a run that starts from a pruned mask has no dense round)."""
    for row in rows:
        if row.get("round") == 0 and float(row.get("weights_remaining", 0)) >= 1 - 1e-9 and row.get(key) is not None:
            return float(row[key])
    return None


def draw_dense(ax: Axes, refs: Sequence[tuple[float, str, Any]], label: str = "dense") -> list[Any]:
    """The dense network's value as a dashed horizontal reference across the axes: one grey line
    labelled ``label`` when every (y, label, colour) of ``refs`` agrees, else one per ref."""
    if not refs:
        return []
    if all(abs(y - refs[0][0]) <= 1e-12 for y, _, _ in refs):
        return [reference_line(ax, refs[0][0], label if len(refs) > 1 else refs[0][1], DENSE_COLOUR)]
    return [reference_line(ax, y, name, colour) for y, name, colour in refs]


def line_label(line: str) -> str:
    """How a study's line is named in legends: ``ticket``, ``reinit control``, ``branch NAME``."""
    if line == TICKET_LINE:
        return line
    if line.startswith(BRANCH_PREFIX):
        return f"branch {line[len(BRANCH_PREFIX) :]}"
    if line.startswith(ABLATION_PREFIX):
        return f"{line[len(ABLATION_PREFIX) :]} ablation"
    return f"{line} control"


def line_style(line: str) -> tuple[str, str]:
    """(linestyle, marker) of a study's line: the ticket solid, controls dashed, branches dash-dotted."""
    kind, index, _ = line_order(line)
    if kind == 0:
        return "-", "o"
    if kind == 1:
        return "--", CONTROL_MARKERS[index % len(CONTROL_MARKERS)]
    return "-.", BRANCH_MARKERS[0]


def study_bands(sources: Sequence[Source]) -> list[tuple[Source, str, str]]:
    """(source, experiment, line) of every band the studies among ``sources`` draw, in drawing
    order: per experiment, its ticket, then its controls, then its branches."""
    out = []
    for source in sources:
        if source.kind == STUDY:
            rows = source.study.summary()
            for name in dict.fromkeys(r["experiment"] for r in rows):
                lines = dict.fromkeys(r["line"] for r in rows if r["experiment"] == name)
                out += [(source, name, line) for line in sorted(lines, key=line_order)]
    return out


def _colours(count: int) -> Callable[[int], Any]:
    """Colour ``i`` of ``count`` distinct ones: the tab10 cycle, tab20 beyond ten."""
    if count <= 10:
        return lambda i: f"C{i % 10}"
    from matplotlib import colormaps

    return lambda i: colormaps["tab20"](i % 20)


def draw_metric(
    ax: Axes,
    sources: Sequence[Source],
    metric: str,
    end_metric: str | None = None,
    dense: bool = True,
) -> int:
    """``metric`` of every source against weights remaining on ``ax``: each run in its colour with
    its controls dashed, its branches dash-dotted (a lighter shade when several runs share the axes), each line of each
    study experiment as a band in its own colour (its ticket solid, its controls dashed, its
    branches dash-dotted). ``end_metric`` adds the ticket's end-of-training value (dotted) for a
    single run; every label then says which of the two it shows. ``dense`` draws the dense
    network's value (round 0) as a dashed horizontal reference. Returns the number of legend columns (1 or 2)."""
    levels: list[float] = []
    colour_index = 0
    bands = study_bands(sources)
    own = [b for b in bands if not b[2].startswith(ABLATION_PREFIX)]  # an ablation takes its method's colour
    colour_of = _colours(len(own) + sum(1 for s in sources if s.kind != STUDY))
    single = len(sources) == 1 and sources[0].kind == TICKET
    both = single and bool(end_metric)
    at = " (at early stop)" if both else ""  # with the end-of-training line beside, say which is which
    method_colour: dict[tuple[Path, str], Any] = {}
    keys: dict[Any, Any] = {}
    refs: list[tuple[float, str, Any]] = []
    for source in sources:
        if source.kind == STUDY:
            mine = [(name, line) for s, name, line in bands if s is source]
            experiments = list(dict.fromkeys(name for name, _ in mine))
            rows = source.study.summary()
            for name, line in mine:
                if len(sources) == 1:
                    base = name
                else:
                    base = source.label if len(experiments) == 1 else f"{source.label}: {name}"
                # a robust study's one experiment is called ticket: its lines are "ticket", "reinit control"
                label = (
                    base
                    if line == TICKET_LINE
                    else (line_label(line) if base == TICKET_LINE else f"{base}: {line_label(line)}")
                )
                linestyle, marker = line_style(line)
                # an ablation is drawn in its method's colour (dashed); every other line in its own
                if line.startswith(ABLATION_PREFIX) and (source.path, name) in method_colour:
                    colour = method_colour[(source.path, name)]
                else:
                    colour = colour_of(colour_index)
                    colour_index += 1
                    if line == TICKET_LINE:
                        method_colour[(source.path, name)] = colour
                mine_rows = [r for r in rows if r["experiment"] == name and r["line"] == line]
                levels += band(ax, mine_rows, metric, colour, label, linestyle, marker, keys)
                if line == TICKET_LINE:
                    metric_rows = [r for r in mine_rows if r["metric"] == metric]
                    y = dense_value(metric_rows, "mean")
                    if y is not None:
                        trials = max(r["trials"] for r in metric_rows)
                        owner = (
                            "" if base == TICKET_LINE or len(sources) == 1 and len(experiments) == 1 else f"{base}: "
                        )
                        refs.append((y, f"{owner}dense (mean of {trials})", colour))
            continue
        colour = colour_of(colour_index)
        colour_index += 1
        rounds = sorted(source.rounds, key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in rounds]
        levels += x
        ax.plot(
            x,
            [r[metric] for r in rounds],
            "o-",
            color=colour,
            markersize=4.5,
            label=f"ticket{at}" if single else source.label,
        )
        y = dense_value(rounds, metric)
        if y is not None:
            refs.append((y, f"dense{at}" if single else f"{source.label}: dense", colour))
        if both:
            assert end_metric is not None  # both: a single run and an end_metric
            ax.plot(
                x,
                [r[end_metric] for r in rounds],
                "s:",
                color=colour,
                alpha=0.6,
                markersize=3.5,
                label="ticket (end of training)",
            )
        for index, (name, control) in enumerate(source.controls.items()):
            control = sorted(control, key=lambda r: r["round"])
            shade = f"C{(colour_index + index) % 10}" if single else lighter(colour)
            ax.plot(
                [r["weights_remaining"] for r in control],
                [r[metric] for r in control],
                linestyle="--",
                marker=CONTROL_MARKERS[index % len(CONTROL_MARKERS)],
                markersize=4,
                color=shade,
                label=f"{name} control{at}" if single else f"{source.label}: {name} control",
            )
        for index, (name, branch) in enumerate(source.branches.items(), start=len(source.controls)):
            branch = sorted(branch, key=lambda r: r["round"])
            shade = f"C{(colour_index + index) % 10}" if single else lighter(colour)
            ax.plot(
                [r["weights_remaining"] for r in branch],
                [r[metric] for r in branch],
                linestyle="-.",
                marker=BRANCH_MARKERS[index % len(BRANCH_MARKERS)],
                markersize=4,
                color=shade,
                label=f"branch {name}{at}" if single else f"{source.label}: branch {name}",
            )
    if dense:
        draw_dense(ax, refs, f"dense{at}")
    remaining_axis(ax, levels)
    handles, labels = ax.get_legend_handles_labels()
    entries = [(keys.get(handle, handle), label) for handle, label in zip(handles, labels)]
    title = None
    if bands:  # the bands' meaning once; each line's key shows its own band's colour and opacity
        title = "shaded: 95% CI of the mean; dotted: min and max over trials"
    # Two columns of legend entries, one when long labels (several studies' lines) would not fit.
    ncol = 1 if any(len(label) > 44 for label in labels) else 2
    legend_below(ax, ncol=ncol, entries=entries, title=title)
    return ncol


def _figure(
    sources: Sequence[Source],
    metric: str,
    end_metric: str | None,
    ylabel: str,
    what: str,
    y_format: Callable[[Any], None] | None,
    ylabel_both: str | None = None,
) -> Figure:
    """One axes of ``metric`` (and ``end_metric`` for a single run) against weights remaining; its y
    label is ``ylabel``, or ``ylabel_both`` when the end-of-training line is drawn beside (the
    legend then says which line is which); its y range fits the data."""
    fig = new_figure(6.8, 4.4)
    ax = fig.subplots()
    end = end_metric if len(sources) == 1 and sources[0].kind == TICKET else None
    ncol = draw_metric(ax, sources, metric, end)
    legend = ax.get_legend()
    # the legend under the axes grows the figure, the axes keep their height
    rows = math.ceil(len(legend.get_texts()) / ncol) + (1 if legend.get_title().get_text() else 0) if legend else 0
    fig.set_size_inches(6.8, 4.4 + 0.18 * max(0, rows - 2))
    ax.set_ylabel(ylabel_both if end and ylabel_both else ylabel)
    if y_format is not None:
        y_format(ax.yaxis)
    fit_ylim(ax)
    title = f"{subject(sources)}: {what}"
    ax.set_title(title if len(title) <= 64 else f"{subject(sources)}\n{what}")  # long names: two lines
    return fig


def accuracy_figure(sources: Sequence[Source]) -> Figure:
    """The figure :func:`plot_accuracy` saves (test accuracy at early stop vs weights remaining)."""
    return _figure(
        sources,
        "test_accuracy_at_early_stop",
        "final_test_accuracy",
        "test accuracy at early stop",
        "test accuracy vs weights remaining",
        percent_axis,
        ylabel_both="test accuracy",
    )


def plot_accuracy(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, stem: str = ACCURACY_FILE
) -> list[Path]:
    """Test accuracy at early stop against weights remaining (log x, decreasing to the right)."""
    return save(accuracy_figure(sources), out_dir, stem, formats)


def plot_early_stop(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, stem: str = "early_stop_iteration"
) -> list[Path]:
    """The early-stopping iteration (minimum validation loss) against weights remaining."""
    fig = _figure(
        sources,
        "early_stop_iteration",
        None,
        "early-stop iteration (min. validation loss)",
        "early-stopping iteration vs weights remaining",
        None,
    )
    fit_ylim(fig.axes[0], include=(0,))  # an iteration count from 0, the highest point clear of the top
    fig.axes[0].set_ylim(bottom=0)
    fig.axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return save(fig, out_dir, stem, formats)


def draw_accuracy(
    lines: Mapping[str, Sequence[Mapping[str, Any]]],
    ax: Axes | None = None,
    title: str | None = None,
    dashed: Sequence[str] = (),
    dense: bool = True,
) -> Figure:
    """Test accuracy at early stop (solid) and at the end of training (dashed) against weights
    remaining (log x), one colour per line of per-round rows; returns the figure. The lines named
    in ``dashed`` (controls) are drawn dashed at early stop and dotted at the end. ``dense`` adds
    the dense network's accuracy at early stop (round 0) as a dashed horizontal reference (not
    one of the axes' ``lines``). The y range fits the data."""
    ax = axes_or_new(ax)
    levels: list[float] = []
    controls = 0
    refs: list[tuple[float, str, Any]] = []
    for index, (label, rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in rows]
        levels.extend(x)
        colour = f"C{index % 10}"
        early, end, marker = "-", "--", "o"
        if label in dashed:
            early, end, marker = "--", ":", CONTROL_MARKERS[controls % len(CONTROL_MARKERS)]
            controls += 1
        ax.plot(
            x,
            [r["test_accuracy_at_early_stop"] for r in rows],
            linestyle=early,
            marker=marker,
            color=colour,
            label=f"{label} (early stop)",
        )
        ax.plot(
            x,
            [r["final_test_accuracy"] for r in rows],
            linestyle=end,
            marker="s",
            color=colour,
            alpha=0.6,
            label=f"{label} (end)",
        )
        y = dense_value(rows, "test_accuracy_at_early_stop")
        if y is not None:
            refs.append((y, f"{label}: dense (early stop)" if len(lines) > 1 else "dense (early stop)", colour))
    if dense:
        draw_dense(ax, refs, "dense (early stop)")
    remaining_axis(ax, levels)
    percent_axis(ax.yaxis)
    fit_ylim(ax)
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy of the pruned networks")
    ax.legend(fontsize="small")
    return root_figure(ax)
