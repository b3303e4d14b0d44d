"""Figures of studies (robust / session): statistics over trials drawn as bands."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.plots.accuracy import ACCURACY_FILE, plot_accuracy
from lth.plots.common import STUDY, Source, axes_or_new, percent_axis, remaining_axis

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
    lighter min-max band; ``summary`` holds ``summarise_trials`` rows. Returns the figure."""
    ax = axes_or_new(ax)
    rows = sorted((r for r in summary if r["metric"] == metric), key=lambda r: r["round"])
    x = [r["weights_remaining"] for r in rows]
    line = ax.plot(x, [r["mean"] for r in rows], "o-", label=f"{label or metric} (mean)")[0]
    colour = line.get_color()
    ax.fill_between(x, [r["min"] for r in rows], [r["max"] for r in rows], color=colour, alpha=0.12,
                    linewidth=0, label="min-max")
    if all(r["ci95_low"] is not None for r in rows):
        ax.fill_between(x, [r["ci95_low"] for r in rows], [r["ci95_high"] for r in rows], color=colour,
                        alpha=0.3, linewidth=0, label="95% CI")
    remaining_axis(ax, x)
    percent_axis(ax.yaxis)
    ax.set_ylabel(metric.replace("_", " "))
    trials = rows[0]["trials"] if rows else 0
    ax.set_title(title or f"mean over {trials} trials")
    ax.legend(fontsize="small")
    return ax.figure


def plot_study(study: "StudyDir") -> list[Path]:
    """A study's figure: mean test accuracy at early stop of every experiment with 95% CI and
    min-max bands over its trials, against weights remaining (``accuracy_vs_weights_remaining.png``)."""
    if not study.summary():
        return []
    source = Source(Path(study.path), STUDY, Path(study.path).resolve().name)
    return plot_accuracy([source], Path(study.path), formats=("png",), stem=ACCURACY_FILE)
