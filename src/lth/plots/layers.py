"""Per-layer weights remaining against the pruning round (one panel per run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from lth.plots.common import FORMATS, Source, grid_shape, layer_label, new_figure, percent, save

LAYERS_FILE = "layers_weights_remaining"
MARKERS = "osD^vPX*"


def plot_layers(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, stem: str = LAYERS_FILE
) -> list[Path]:
    """Fraction of each prunable tensor still kept after every round (log y), the whole network dashed;
    x ticks name the round and the overall weights remaining."""
    rows, columns = grid_shape(len(sources), 2)
    fig = new_figure(6.4 if columns == 1 else 5.6 * columns, 4.4 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, source in zip(axes, sources):
        rounds = sorted(source.rounds, key=lambda r: r["round"])
        x = [r["round"] for r in rounds]
        names = list(rounds[0].get("layers", {}))
        lowest = 1.0
        for index, name in enumerate(names):
            y = [r["layers"].get(name, float("nan")) for r in rounds]
            lowest = min([lowest, *[v for v in y if v > 0]])
            # Layers pruned at the same rate coincide: earlier layers are drawn wider and underneath.
            ax.plot(
                x,
                y,
                marker=MARKERS[index % len(MARKERS)],
                markersize=max(3.0, 7.5 - 0.9 * index),
                linewidth=max(1.0, 3.2 - 0.45 * index),
                color=f"C{index % 10}",
                label=layer_label(name),
            )
        overall = [r["weights_remaining"] for r in rounds]
        lowest = min([lowest, *[v for v in overall if v > 0]])
        ax.plot(x, overall, "k--", linewidth=1.6, label="all prunable weights")
        ax.set_yscale("log")
        ax.set_ylim(top=1.15, bottom=lowest / 1.5)
        subs = (1.0, 2.0, 3.0, 5.0, 7.0) if lowest > 0.1 else (1.0, 2.0, 5.0)  # a few labels, whatever the range
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(percent))
        step = max(1, (len(x) + 7) // 8)
        ax.xaxis.set_major_locator(FixedLocator(x[::step]))
        ax.set_xticks(x[::step], [f"{r}\n{percent(w)}" for r, w in zip(x[::step], overall[::step])])
        ax.set_xlabel("pruning round (weights remaining overall)")
        ax.set_ylabel("weights remaining in the layer (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(source.title if len(sources) == 1 else f"{source.label}\n{source.title}", fontsize="medium")
        # Every line starts at 100% on the left and falls to the right: the lower left is free.
        ax.legend(loc="lower left", fontsize="small", ncol=2 if len(names) > 4 else 1)
    for ax in axes[len(sources) :]:
        ax.set_visible(False)
    if len(sources) == 1:
        axes[0].set_title(f"{sources[0].title}: weights remaining per layer")
    else:
        fig.suptitle("weights remaining per layer")
    return save(fig, out_dir, stem, formats)
