"""Figures of runs and studies, drawn only from what the store wrote.

One module per family of figures (accuracy, early stop, learning curves, weights, layers, first
layer, supermask, stability, study); ``kinds`` names them for ``lth plot`` and ``lth report``.
Figures are pyplot-free (Agg canvas) and every file is written atomically as PNG and/or SVG.
"""

from __future__ import annotations

from pathlib import Path

from lth.plots.accuracy import ACCURACY_FILE, draw_accuracy, plot_accuracy, plot_early_stop
from lth.plots.common import FORMATS, Source, open_sources
from lth.plots.first_layer import plot_first_layer
from lth.plots.kinds import ALL, KINDS, PlotKind, PlotResult, draw_kind, kind_names, make_plots, resolve_kinds
from lth.plots.layers import plot_layers
from lth.plots.learning_curves import LEARNING_CURVES_FILE, draw_learning_curves, plot_learning_curves
from lth.plots.stability import plot_stability, plot_stability_run
from lth.plots.study import draw_trials_accuracy, plot_study
from lth.plots.supermask import (
    plot_supermask,
    plot_supermask_accuracy_vs_kept,
    plot_supermask_heatmap,
    plot_supermask_run,
)
from lth.plots.weights import plot_weights_hist, plot_weights_scatter
from lth.store.run_dir import RunDir


def plot_accuracy_vs_weights_remaining(run: RunDir, path: Path | None = None) -> Path:
    """``accuracy_vs_weights_remaining.png`` (or ``path``) of a find-ticket run."""
    path = Path(path or Path(run.path) / f"{ACCURACY_FILE}.png")
    source = Source(Path(run.path), "find-ticket", Path(run.path).name)
    return plot_accuracy([source], path.parent, (path.suffix.lstrip("."),), stem=path.stem)[0]


def plot_run_learning_curves(run: RunDir, path: Path | None = None) -> Path:
    """``learning_curves.png`` (or ``path``) of a find-ticket run."""
    path = Path(path or Path(run.path) / f"{LEARNING_CURVES_FILE}.png")
    source = Source(Path(run.path), "find-ticket", Path(run.path).name)
    return plot_learning_curves([source], path.parent, (path.suffix.lstrip("."),), stem=path.stem)[0]


def plot_run(run: RunDir) -> list[Path]:
    """The cheap figures of a find-ticket run, as PNG in its directory (called after every round):
    ``accuracy_vs_weights_remaining.png`` and ``learning_curves.png``."""
    return [plot_accuracy_vs_weights_remaining(run), plot_run_learning_curves(run)]


__all__ = [
    "ALL",
    "FORMATS",
    "KINDS",
    "PlotKind",
    "PlotResult",
    "Source",
    "draw_accuracy",
    "draw_kind",
    "draw_learning_curves",
    "draw_trials_accuracy",
    "kind_names",
    "make_plots",
    "open_sources",
    "plot_accuracy",
    "plot_accuracy_vs_weights_remaining",
    "plot_early_stop",
    "plot_first_layer",
    "plot_layers",
    "plot_learning_curves",
    "plot_run",
    "plot_run_learning_curves",
    "plot_stability",
    "plot_stability_run",
    "plot_study",
    "plot_supermask",
    "plot_supermask_accuracy_vs_kept",
    "plot_supermask_heatmap",
    "plot_supermask_run",
    "plot_weights_hist",
    "plot_weights_scatter",
    "resolve_kinds",
]
