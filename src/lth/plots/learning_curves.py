"""Learning curves: test accuracy against training iteration, several rounds on one axis (as in
Frankle & Carbin's figures); one panel per run when several runs are drawn."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib import colormaps

from lth.plots.common import (
    FORMATS, SUPERMASK_TRAIN, axes_or_new, Source, grid_shape, new_figure, percent, percent_axis, pick_rounds, save,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEARNING_CURVES_FILE = "learning_curves"
#: At most this many rounds per panel (evenly spread, first and last always); more lines are unreadable.
MOST_ROUNDS = 8


def _zoom(ax: "Axes", accuracies: Sequence[tuple[int, float]]) -> None:
    """Zoom on where rounds differ: the first evaluations (near chance) would squash the rest."""
    if not accuracies:
        return
    last = max(it for it, _ in accuracies)
    late = [acc for it, acc in accuracies if it >= 0.1 * last]
    if late:
        ax.set_ylim(bottom=max(0.0, min(late) - 0.02), top=min(1.0, max(late) + 0.01))


def draw_panel(ax: "Axes", source: Source, split: str = "test") -> None:
    """The learning curves of one run on ``ax``: up to MOST_ROUNDS rounds, coloured dense to sparse."""
    rows = [row for row in source.run.metrics() if row["split"] == split]
    if source.kind == SUPERMASK_TRAIN:
        ax.plot([r["iteration"] for r in rows], [r["accuracy"] for r in rows], color="C0", linewidth=1.4,
                label=f"learned mask ({source.config.get('method', 'supermask')})")
    else:
        remaining = {r["round"]: r["weights_remaining"] for r in source.rounds}
        shown = pick_rounds(list(remaining), MOST_ROUNDS)
        cmap = colormaps["viridis"]
        for index, round_index in enumerate(shown):
            points = [row for row in rows if row["round"] == round_index]
            ax.plot([row["iteration"] for row in points], [row["accuracy"] for row in points], linewidth=1.3,
                    color=cmap(0.9 * index / max(1, len(shown) - 1)),
                    label=f"round {round_index}: {percent(remaining[round_index])} kept")
    if source.kind != SUPERMASK_TRAIN:  # one line: nothing to tell apart, show it whole
        _zoom(ax, [(r["iteration"], r["accuracy"]) for r in rows])
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{split} accuracy")
    percent_axis(ax.yaxis)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small" if len(ax.lines) > 5 else "small", loc="lower right")


def plot_learning_curves(sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS,
                         stem: str = LEARNING_CURVES_FILE) -> list[Path]:
    """One panel per run (up to 3 per row), several rounds on each."""
    rows, columns = grid_shape(len(sources), 3)
    fig = new_figure(6.4 if columns == 1 else 5.0 * columns, 4.2 if rows == 1 else 3.8 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, source in zip(axes, sources):
        draw_panel(ax, source)
        ax.set_title(source.title if len(sources) == 1 else f"{source.label}\n{source.title}",
                     fontsize="medium")
    for ax in axes[len(sources):]:
        ax.set_visible(False)
    if len(sources) == 1:
        axes[0].set_title(f"{sources[0].title}: learning curves")
    else:
        fig.suptitle("learning curves: test accuracy during training")
    return save(fig, out_dir, stem, formats)


def draw_learning_curves(
    rounds: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    ax: "Axes | None" = None,
    split: str = "test",
    title: str | None = None,
) -> "Figure":
    """Accuracy on ``split`` against training iteration, one line per round (metrics rows hold
    round, iteration, split, accuracy); returns the figure."""
    ax = axes_or_new(ax)
    remaining = {r["round"]: r["weights_remaining"] for r in rounds}
    cmap = colormaps["viridis"]
    for index, round_index in enumerate(sorted(remaining)):
        points = [m for m in metrics if m["round"] == round_index and m["split"] == split]
        ax.plot([m["iteration"] for m in points], [m["accuracy"] for m in points], linewidth=1.2,
                color=cmap(index / max(1, len(remaining) - 1)), label=f"{percent(remaining[round_index])} kept")
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{split} accuracy")
    percent_axis(ax.yaxis)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "learning curves")
    if remaining:
        ax.legend(fontsize="small", ncol=2 if len(remaining) > 8 else 1)
    return ax.figure
