"""Learning curves: accuracy and loss against training iteration, as small multiples: a few rounds
per panel (shared axes, coloured dense to sparse), the early-stopping iteration of each round
marked; one block of panels per run when several runs are drawn."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from matplotlib import colormaps
from matplotlib.lines import Line2D

from lth.plots.common import (
    FORMATS,
    SUPERMASK_TRAIN,
    Source,
    axes_or_new,
    fit_ylim,
    new_figure,
    percent,
    percent_axis,
    pick_rounds,
    plain_log_axis,
    root_figure,
    save,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEARNING_CURVES_FILE = "learning_curves"
#: At most this many rounds on one axes (evenly spread, first and last always); more lines are unreadable.
MOST_ROUNDS = 8
#: Rounds per panel of the learning-curves figure, and the most panels of one run.
ROUNDS_PER_PANEL = 4
MOST_PANELS = 4
#: How the early-stopping iteration is marked on each curve.
EARLY_STOP_MARKER: dict[str, Any] = dict(
    marker="*", s=90, edgecolors="black", linewidths=0.5, zorder=3.5, clip_on=False
)
EARLY_STOP_LABEL = "early stop (min. val loss)"
DENSE_REFERENCE = "0.55"


def round_panels(
    rounds: Sequence[int], per_panel: int = ROUNDS_PER_PANEL, most_panels: int = MOST_PANELS
) -> list[list[int]]:
    """``rounds`` in consecutive groups of at most ``per_panel``, of near-equal size (5 rounds ->
    3 + 2); beyond ``per_panel * most_panels`` rounds an evenly spread selection (first and last
    always) is shown."""
    per_panel, most_panels = max(1, per_panel), max(1, most_panels)
    shown = pick_rounds(sorted(set(rounds)), per_panel * most_panels)
    if not shown:
        return []
    panels = math.ceil(len(shown) / per_panel)
    size, extra = divmod(len(shown), panels)
    groups, start = [], 0
    for index in range(panels):
        end = start + size + (index < extra)
        groups.append(shown[start:end])
        start = end
    return groups


def _colour(position: int, count: int) -> Any:
    """The colour of the ``position``-th of ``count`` rounds: viridis, dense (dark) to sparse (light)."""
    return colormaps["viridis"](0.9 * position / max(1, count - 1))


def _value_at(points: Sequence[Mapping[str, Any]], iteration: float, key: str) -> float | None:
    """``key`` at ``iteration`` among evaluation ``points`` (sorted by iteration): the evaluation
    there, else interpolated between its neighbours; None outside them."""
    for point in points:
        if point["iteration"] == iteration:
            return float(point[key])
    for before, after in zip(points, points[1:]):
        if before["iteration"] < iteration < after["iteration"]:
            share = (iteration - before["iteration"]) / (after["iteration"] - before["iteration"])
            return float(before[key]) + share * (float(after[key]) - float(before[key]))
    return None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def draw_rounds(
    ax: Axes,
    rounds: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    shown: Sequence[int],
    key: str = "accuracy",
    split: str = "test",
    colours: Mapping[int, Any] | None = None,
    early_stop: bool = True,
    reference: int | None = None,
    labels: bool = True,
) -> list[Any]:
    """One line of ``key`` (accuracy or loss) on ``split`` against iteration per round in ``shown``,
    each in ``colours[round]``; ``early_stop`` marks each round's early-stopping iteration
    (``rounds`` rows' ``early_stop_iteration``) with a star on its curve (a scatter, so the axes'
    lines stay one per round); ``reference`` draws that round (the dense one) first, thin and grey,
    when it is not among ``shown``. Returns the lines drawn, in order."""
    remaining = {r["round"]: r.get("weights_remaining") for r in rounds}
    stops = {r["round"]: r.get("early_stop_iteration") for r in rounds}
    colours = colours or {r: _colour(i, len(shown)) for i, r in enumerate(shown)}
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for row in metrics:
        if row["split"] == split and _finite(row[key]):
            by_round.setdefault(row["round"], []).append(row)
    drawn = []
    if reference is not None and reference not in shown and by_round.get(reference):
        points = sorted(by_round[reference], key=lambda r: r["iteration"])
        kept = remaining.get(reference)
        name = f"round {reference}" + (" (dense)" if kept is not None and kept >= 1 - 1e-9 else "")
        drawn += ax.plot(
            [p["iteration"] for p in points],
            [p[key] for p in points],
            color=DENSE_REFERENCE,
            linewidth=1.0,
            linestyle=(0, (4, 2)),
            zorder=1.8,
            label=name if labels else None,
        )
    stars: list[tuple[float, float, Any]] = []
    for round_index in shown:
        points = sorted(by_round.get(round_index, []), key=lambda r: r["iteration"])
        if not points:
            continue
        kept = remaining.get(round_index)
        label = f"round {round_index}" + (f": {percent(kept)} kept" if kept is not None else "")
        colour = colours[round_index]
        drawn += ax.plot(
            [p["iteration"] for p in points],
            [p[key] for p in points],
            linewidth=1.4,
            color=colour,
            label=label if labels else None,
        )
        stop: Any = stops.get(round_index)  # a number, or None / NaN when the round has none
        if early_stop and _finite(stop):
            value = _value_at(points, float(stop), key)
            if value is not None:
                stars.append((float(stop), value, colour))
    if stars:
        ax.scatter([s[0] for s in stars], [s[1] for s in stars], c=[s[2] for s in stars], **EARLY_STOP_MARKER)
    return drawn


def _early_stop_key() -> Line2D:
    return Line2D(
        [],
        [],
        linestyle="none",
        marker="*",
        markersize=9,
        markerfacecolor="0.6",
        markeredgecolor="black",
        markeredgewidth=0.5,
    )


def _panel_title(group: Sequence[int]) -> str:
    if len(group) == 1:
        return f"round {group[0]}"
    if list(group) == list(range(group[0], group[-1] + 1)):
        return f"rounds {group[0]}-{group[-1]}"
    return "rounds " + ", ".join(str(r) for r in group)


def _has_loss(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(_finite(r.get("loss")) for r in rows)


def _loss_axis(axes: Sequence[Axes]) -> str:
    """Loss on a log axis (the first evaluations would squash the rest) when every loss is
    positive, its range fitted to the data; returns ' (log scale)' for the label, or ''."""
    lines = [line for ax in axes for line in ax.lines]
    log = bool(lines) and all(min(cast("Iterable[float]", line.get_ydata()), default=1) > 0 for line in lines)
    if log:
        for ax in axes:
            ax.set_yscale("log")
    limits = fit_ylim(axes)
    if log and limits:
        for ax in axes:
            plain_log_axis(ax.yaxis, *limits)
    return " (log scale)" if log else ""


def learning_curves_figure(
    sources: Sequence[Source],
    rounds: Sequence[int] | None = None,
    per_panel: int = ROUNDS_PER_PANEL,
    loss: bool = True,
    split: str = "test",
    loss_split: str = "val",
    early_stop: bool = True,
    most_panels: int = MOST_PANELS,
) -> Figure:
    """The figure :func:`plot_learning_curves` saves: for each run a row of panels of ``split``
    accuracy against iteration, ``per_panel`` rounds each (``rounds``: only those rounds; default
    all, evenly thinned past ``per_panel * most_panels``), and below it a row of ``loss_split``
    loss (when ``loss`` and the run records losses), the panels of a row sharing their y axis and
    the panels of a run their x axis. Each panel colours its rounds dense (dark) to sparse (light)
    and labels them; each round's early-stopping iteration is starred (``early_stop``); panels
    without round 0 show the dense round as a grey dashed reference. Every y range fits the data,
    margins included."""
    blocks: list[tuple[Source, list[list[int]], list[dict[str, Any]], bool]] = []
    for source in sources:
        metrics = list(source.run.metrics())
        if source.kind == SUPERMASK_TRAIN:
            groups = [[0]]
        else:
            available = sorted({int(r["round"]) for r in source.rounds})
            wanted = [r for r in available if rounds is None or r in set(rounds)] or available
            groups = round_panels(wanted, per_panel, most_panels)
        with_loss = loss and _has_loss([m for m in metrics if m["split"] == loss_split])
        blocks.append((source, groups, metrics, with_loss))
    columns = max(1, max((len(groups) for _, groups, _, _ in blocks), default=1))
    heights = [h for _, _, _, with_loss in blocks for h in ((3.0, 2.3) if with_loss else (3.0,))]
    fig = new_figure(max(6.4, 3.5 * columns), sum(heights) + 0.6)
    axes = fig.subplots(len(heights), columns, squeeze=False, gridspec_kw={"height_ratios": heights})
    row = 0
    for source, groups, metrics, with_loss in blocks:
        accuracy_row = list(axes[row][: len(groups)])
        loss_row = list(axes[row + 1][: len(groups)]) if with_loss else []
        block = accuracy_row + loss_row
        for ax in axes[row][len(groups) :]:
            ax.set_visible(False)
        if with_loss:
            for ax in axes[row + 1][len(groups) :]:
                ax.set_visible(False)
        for ax in block[1:]:
            ax.sharex(block[0])
        for line_axes in (accuracy_row, loss_row):
            for ax in line_axes[1:]:
                ax.sharey(line_axes[0])
        name = "" if len(sources) == 1 else f"{source.label}: "
        if source.kind == SUPERMASK_TRAIN:
            mask = f"learned mask ({source.config.get('method', 'supermask')})"
            panels = [(accuracy_row[0], "accuracy", split)] + ([(loss_row[0], "loss", loss_split)] if loss_row else [])
            for ax, key, split_ in panels:
                points = sorted(
                    (m for m in metrics if m["split"] == split_ and _finite(m[key])), key=lambda m: m["iteration"]
                )
                ax.plot(
                    [m["iteration"] for m in points], [m[key] for m in points], color="C0", linewidth=1.4, label=mask
                )
            accuracy_row[0].set_title(f"{name}{mask}", fontsize="medium")
        else:
            # viridis over each panel's rounds (dense dark to sparse light): neighbours on one axes stay distinct
            colours = {r: _colour(i, len(group)) for group in groups for i, r in enumerate(group)}
            reference = 0 if 0 in {int(r["round"]) for r in source.rounds} else None
            for index, group in enumerate(groups):
                draw_rounds(
                    accuracy_row[index],
                    source.rounds,
                    metrics,
                    group,
                    "accuracy",
                    split,
                    colours,
                    early_stop,
                    reference,
                )
                if with_loss:
                    draw_rounds(
                        loss_row[index],
                        source.rounds,
                        metrics,
                        group,
                        "loss",
                        loss_split,
                        colours,
                        early_stop,
                        reference,
                        labels=False,
                    )
                accuracy_row[index].set_title(f"{name}{_panel_title(group)}", fontsize="medium")
        for ax in accuracy_row:
            percent_axis(ax.yaxis)
            handles, labels = ax.get_legend_handles_labels()
            if early_stop and source.kind != SUPERMASK_TRAIN and ax.collections:
                handles, labels = handles + [_early_stop_key()], labels + [EARLY_STOP_LABEL]
            if handles:
                ax.legend(handles, labels, fontsize="x-small", loc="best", framealpha=0.85)
        fit_ylim(accuracy_row)
        accuracy_row[0].set_ylabel(f"{split} accuracy")
        if loss_row:
            suffix = _loss_axis(loss_row)
            loss_row[0].set_ylabel(f"{'validation' if loss_split == 'val' else loss_split} loss{suffix}")
        bottom = loss_row or accuracy_row
        for ax in block:
            ax.grid(True, alpha=0.3)
            ax.margins(x=0.03)
            if ax not in bottom:
                ax.tick_params(labelbottom=False)
        for ax in bottom:
            ax.set_xlabel("training iteration")
        for ax in block:
            if ax not in (accuracy_row[0], *loss_row[:1]):
                ax.tick_params(labelleft=False)
        row += 2 if with_loss else 1
    what = f"{split} accuracy" + (
        f" and {'validation' if loss_split == 'val' else loss_split} loss"
        if any(with_loss for *_, with_loss in blocks)
        else ""
    )
    fig.suptitle(
        f"{sources[0].title}: learning curves" if len(sources) == 1 else f"learning curves: {what} during training"
    )
    return fig


def plot_learning_curves(
    sources: Sequence[Source],
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    stem: str = LEARNING_CURVES_FILE,
    rounds: Sequence[int] | None = None,
    per_panel: int = ROUNDS_PER_PANEL,
    loss: bool = True,
) -> list[Path]:
    """Learning curves as small multiples (see :func:`learning_curves_figure`): ``per_panel`` rounds
    per panel, ``rounds`` to choose which (default all), the loss below (``loss``)."""
    return save(learning_curves_figure(sources, rounds, per_panel, loss), out_dir, stem, formats)


def draw_panel(ax: Axes, source: Source, split: str = "test") -> None:
    """The learning curves of one run on ``ax``: up to MOST_ROUNDS rounds, coloured dense to sparse,
    each round's early-stopping iteration starred; the y range fits the data."""
    rows = [row for row in source.run.metrics() if row["split"] == split]
    if source.kind == SUPERMASK_TRAIN:
        ax.plot(
            [r["iteration"] for r in rows],
            [r["accuracy"] for r in rows],
            color="C0",
            linewidth=1.4,
            label=f"learned mask ({source.config.get('method', 'supermask')})",
        )
    else:
        shown = pick_rounds([int(r["round"]) for r in source.rounds], MOST_ROUNDS)
        draw_rounds(ax, source.rounds, rows, shown, "accuracy", split)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{split} accuracy")
    percent_axis(ax.yaxis)
    fit_ylim(ax)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small" if len(ax.lines) > 5 else "small", loc="best")


def draw_learning_curves(
    rounds: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    ax: Axes | None = None,
    split: str = "test",
    title: str | None = None,
    select: Sequence[int] | None = None,
    most: int = MOST_ROUNDS,
    early_stop: bool = True,
    loss_ax: Axes | None = None,
    loss_split: str = "val",
) -> Figure:
    """Accuracy on ``split`` against training iteration, one line per round (metrics rows hold
    round, iteration, split, loss, accuracy); returns the figure. ``select`` names the rounds to
    draw (default: all, evenly thinned to ``most``, the first and last always); ``early_stop``
    stars each round's early-stopping iteration (a scatter: the axes' lines stay one per round);
    ``loss_ax`` also draws the ``loss_split`` loss there. Every y range fits the data."""
    ax = axes_or_new(ax)
    available = sorted({int(r["round"]) for r in rounds})
    shown = [r for r in available if r in set(select)] if select is not None else pick_rounds(available, most)
    colours = {r: _colour(i, len(shown)) for i, r in enumerate(shown)}
    draw_rounds(ax, rounds, metrics, shown, "accuracy", split, colours, early_stop)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{split} accuracy")
    percent_axis(ax.yaxis)
    fit_ylim(ax)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "learning curves")
    if shown:
        handles, labels = ax.get_legend_handles_labels()
        if early_stop and ax.collections:
            handles, labels = handles + [_early_stop_key()], labels + [EARLY_STOP_LABEL]
        ax.legend(handles, labels, fontsize="small", ncol=2 if len(shown) > 8 else 1)
    if loss_ax is not None:
        draw_rounds(loss_ax, rounds, metrics, shown, "loss", loss_split, colours, early_stop, labels=False)
        suffix = _loss_axis([loss_ax])
        loss_ax.set_xlabel("training iteration")
        loss_ax.set_ylabel(f"{'validation' if loss_split == 'val' else loss_split} loss{suffix}")
        loss_ax.grid(True, alpha=0.3)
    return root_figure(ax)
