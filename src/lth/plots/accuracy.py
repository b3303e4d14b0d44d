"""Test accuracy (or any per-round metric) against weights remaining: runs overlaid with their
controls, studies as a mean with 95% CI and min-max bands over trials."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from lth.plots.common import (
    FORMATS, STUDY, TICKET, Source, axes_or_new, legend_below, lighter, new_figure, percent_axis, remaining_axis, save,
    subject,
)
from lth.store.study_dir import ABLATION_PREFIX, BRANCH_PREFIX, TICKET_LINE, line_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CONTROL_MARKERS = "^vDPX"
BRANCH_MARKERS = "<>hp*"
ACCURACY_FILE = "accuracy_vs_weights_remaining"


def band(ax: "Axes", rows: Sequence[Mapping[str, Any]], metric: str, colour: Any, label: str,
         linestyle: str = "-", marker: str = "o") -> list[float]:
    """The mean of ``metric`` over trials (``summarise_trials`` rows) as a line (``linestyle``:
    solid for a ticket, dashed for its controls, dash-dotted for its branches), its 95% CI as a band
    and the min and max as dotted lines, all in ``colour``; returns the x values."""
    rows = sorted((r for r in rows if r["metric"] == metric), key=lambda r: r["round"])
    x = [r["weights_remaining"] for r in rows]
    # A t interval over few trials can pass 100%; an accuracy cannot.
    clip = (lambda v: min(1.0, max(0.0, v))) if "accuracy" in metric else (lambda v: v)
    if rows and all(r["ci95_low"] is not None for r in rows):
        ax.fill_between(x, [clip(r["ci95_low"]) for r in rows], [clip(r["ci95_high"]) for r in rows], color=colour,
                        alpha=0.25 if linestyle == "-" else 0.18, linewidth=0)
    # Min and max as thin lines, not a second fill: with few trials the t interval is the wider one.
    for key in ("min", "max"):
        ax.plot(x, [r[key] for r in rows], linestyle=":", linewidth=1.0, color=colour)
    trials = max((r["trials"] for r in rows), default=0)
    ax.plot(x, [r["mean"] for r in rows], linestyle=linestyle, marker=marker, color=colour, markersize=4,
            label=f"{label} (mean of {trials})")
    return x


def line_label(line: str) -> str:
    """How a study's line is named in legends: ``ticket``, ``reinit control``, ``branch NAME``."""
    if line == TICKET_LINE:
        return line
    if line.startswith(BRANCH_PREFIX):
        return f"branch {line[len(BRANCH_PREFIX):]}"
    if line.startswith(ABLATION_PREFIX):
        return f"{line[len(ABLATION_PREFIX):]} ablation"
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
    ax: "Axes", sources: Sequence[Source], metric: str, end_metric: str | None = None,
) -> int:
    """``metric`` of every source against weights remaining on ``ax``: each run in its colour with
    its controls dashed, its branches dash-dotted (a lighter shade when several runs share the axes), each line of each
    study experiment as a band in its own colour (its ticket solid, its controls dashed, its
    branches dash-dotted). ``end_metric`` adds the ticket's end-of-training value (dotted) for a
    single run. Returns the number of legend columns (1 or 2)."""
    levels: list[float] = []
    colour_index = 0
    bands = study_bands(sources)
    own = [b for b in bands if not b[2].startswith(ABLATION_PREFIX)]  # an ablation takes its method's colour
    colour_of = _colours(len(own) + sum(1 for s in sources if s.kind != STUDY))
    single = len(sources) == 1 and sources[0].kind == TICKET
    method_colour: dict[tuple[Path, str], Any] = {}
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
                label = base if line == TICKET_LINE else (
                    line_label(line) if base == TICKET_LINE else f"{base}: {line_label(line)}")
                linestyle, marker = line_style(line)
                # an ablation is drawn in its method's colour (dashed); every other line in its own
                if line.startswith(ABLATION_PREFIX) and (source.path, name) in method_colour:
                    colour = method_colour[(source.path, name)]
                else:
                    colour = colour_of(colour_index)
                    colour_index += 1
                    if line == TICKET_LINE:
                        method_colour[(source.path, name)] = colour
                levels += band(ax, [r for r in rows if r["experiment"] == name and r["line"] == line], metric,
                               colour, label, linestyle, marker)
            continue
        colour = colour_of(colour_index)
        colour_index += 1
        rounds = sorted(source.rounds, key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in rounds]
        levels += x
        ax.plot(x, [r[metric] for r in rounds], "o-", color=colour, markersize=4.5,
                label="ticket" if single else source.label)
        if single and end_metric:
            ax.plot(x, [r[end_metric] for r in rounds], "s:", color=colour, alpha=0.6, markersize=3.5,
                    label="ticket, end of training")
        for index, (name, control) in enumerate(source.controls.items()):
            control = sorted(control, key=lambda r: r["round"])
            shade = f"C{(colour_index + index) % 10}" if single else lighter(colour)
            ax.plot([r["weights_remaining"] for r in control], [r[metric] for r in control],
                    linestyle="--", marker=CONTROL_MARKERS[index % len(CONTROL_MARKERS)], markersize=4,
                    color=shade, label=f"{name} control" if single else f"{source.label}: {name} control")
        for index, (name, branch) in enumerate(source.branches.items(), start=len(source.controls)):
            branch = sorted(branch, key=lambda r: r["round"])
            shade = f"C{(colour_index + index) % 10}" if single else lighter(colour)
            ax.plot([r["weights_remaining"] for r in branch], [r[metric] for r in branch],
                    linestyle="-.", marker=BRANCH_MARKERS[index % len(BRANCH_MARKERS)], markersize=4,
                    color=shade, label=f"branch {name}" if single else f"{source.label}: branch {name}")
    remaining_axis(ax, levels)
    extra = []
    if bands:  # one key for the bands of every study
        extra = [(Patch(color="0.45", alpha=0.35, linewidth=0), "95% CI of the mean"),
                 (Line2D([], [], color="0.45", linestyle=":", linewidth=1.0), "min and max over trials")]
    # Two columns of legend entries, one when long labels (several studies' lines) would not fit.
    ncol = 1 if any(len(label) > 44 for label in ax.get_legend_handles_labels()[1]) else 2
    legend_below(ax, ncol=ncol, extra=extra)
    return ncol


def _figure(sources: Sequence[Source], metric: str, end_metric: str | None, ylabel: str, what: str,
            y_format: Callable[[Any], None] | None) -> "Figure":
    rows = (sum(len(s.controls) + len(s.branches) + 1 for s in sources if s.kind != STUDY) + len(study_bands(sources))
            + (1 if end_metric and len(sources) == 1 else 0))
    fig = new_figure(6.8, 4.4 + 0.18 * max(0, (rows + 1) // 2 - 2))
    ax = fig.subplots()
    if draw_metric(ax, sources, metric, end_metric if len(sources) == 1 else None) == 1:
        fig.set_size_inches(6.8, 4.4 + 0.18 * max(0, rows + 1 - 2))
    ax.set_ylabel(ylabel)
    if y_format is not None:
        y_format(ax.yaxis)
    title = f"{subject(sources)}: {what}"
    ax.set_title(title if len(title) <= 64 else f"{subject(sources)}\n{what}")  # long names: two lines
    return fig


def accuracy_figure(sources: Sequence[Source]) -> "Figure":
    """The figure :func:`plot_accuracy` saves (test accuracy at early stop vs weights remaining)."""
    return _figure(sources, "test_accuracy_at_early_stop", "final_test_accuracy", "test accuracy at early stop",
                   "test accuracy vs weights remaining", percent_axis)


def plot_accuracy(sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS,
                  stem: str = ACCURACY_FILE) -> list[Path]:
    """Test accuracy at early stop against weights remaining (log x, decreasing to the right)."""
    return save(accuracy_figure(sources), out_dir, stem, formats)


def plot_early_stop(sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS,
                    stem: str = "early_stop_iteration") -> list[Path]:
    """The early-stopping iteration (minimum validation loss) against weights remaining."""
    fig = _figure(sources, "early_stop_iteration", None, "early-stop iteration (min. validation loss)",
                  "early-stopping iteration vs weights remaining", None)
    fig.axes[0].set_ylim(bottom=0)
    fig.axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return save(fig, out_dir, stem, formats)


def draw_accuracy(
    lines: Mapping[str, Sequence[Mapping[str, Any]]], ax: "Axes | None" = None, title: str | None = None,
    dashed: Sequence[str] = (),
) -> "Figure":
    """Test accuracy at early stop (solid) and at the end of training (dashed) against weights
    remaining (log x), one colour per line of per-round rows; returns the figure. The lines named
    in ``dashed`` (controls) are drawn dashed at early stop and dotted at the end."""
    ax = axes_or_new(ax)
    levels: list[float] = []
    controls = 0
    for index, (label, rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in rows]
        levels.extend(x)
        colour = f"C{index % 10}"
        early, end, marker = "-", "--", "o"
        if label in dashed:
            early, end, marker = "--", ":", CONTROL_MARKERS[controls % len(CONTROL_MARKERS)]
            controls += 1
        ax.plot(x, [r["test_accuracy_at_early_stop"] for r in rows], linestyle=early, marker=marker, color=colour,
                label=f"{label} (early stop)")
        ax.plot(x, [r["final_test_accuracy"] for r in rows], linestyle=end, marker="s", color=colour, alpha=0.6,
                label=f"{label} (end)")
    remaining_axis(ax, levels)
    percent_axis(ax.yaxis)
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy of the pruned networks")
    ax.legend(fontsize="small")
    return ax.figure
