"""The pruning decision of one round seen in the weights: w_i against w_f coloured kept/pruned
(Zhou et al.'s view) and histograms at initialisation and at the end of training, kept vs pruned.

For round N (>= 1) the points are the weights trained in round N-1 (kept by mask N-1); w_i is the
value they are rewound to (``weights/rewind.pt`` when rewinding to k > 0, else ``weights/init.pt``),
w_f the value at the end of round N-1, and the colour says whether mask N keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lth.errors import LthError
from lth.plots.common import FORMATS, Source, file_stem, grid_shape, layer_label, new_figure, percent, save

KEPT_COLOUR, PRUNED_COLOUR = "tab:blue", "tab:orange"
#: Points drawn per layer in the scatter (a seeded random subsample; counts are of all weights).
SCATTER_POINTS = 3000
#: Histograms per layer up to this many layers; beyond, one pooled histogram in units of each layer's std.
HIST_LAYERS = 6


@dataclass
class Layer:
    """One prunable tensor's weights alive before round N: initial and final values, kept by mask N."""

    name: str
    initial: torch.Tensor
    final: torch.Tensor
    kept: torch.Tensor


def default_round(source: Source, chosen: int | None) -> int:
    """The chosen round, else the last one."""
    return chosen if chosen is not None else max(source.round_indices, default=0)


def check_weights(source: Source, chosen: int | None) -> str | None:
    """Why the weights figures cannot be drawn for ``source`` (None when they can)."""
    if len(source.round_indices) < 2:
        return "it has no pruned round yet (round 1 needs to finish)"
    round_index = default_round(source, chosen)
    if round_index == 0:
        return "round 0 is the dense network, with no pruning decision to show; choose --round 1 or later"
    needed = [
        source.run.mask_path(round_index),
        source.run.mask_path(round_index - 1),
        source.path / "weights" / f"final_round_{round_index - 1:02d}.pt",
        source.path / "weights" / "init.pt",
    ]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        return f"it lacks {missing[0].relative_to(source.path)}"
    return None


def load_layers(source: Source, round_index: int) -> tuple[list[Layer], str]:
    """The layers of ``round_index``'s decision and the name of the initial values (w_i or w_k)."""
    run = source.run
    rewound = (run.path / "weights" / "rewind.pt").is_file()
    initial = run.load_weights("rewind" if rewound else "init")  # LthError naming a damaged file
    final = run.load_weights(f"final_round_{round_index - 1:02d}")
    before, after = run.load_mask(round_index - 1), run.load_mask(round_index)
    for name, kept in after.items():  # files of another run or model mixed in
        found = (initial.get(name), final.get(name), before.get(name, kept))
        if any(t is None or tuple(t.shape) != tuple(kept.shape) for t in found):
            raise LthError(
                f"the weights and masks of run {str(run.path)!r} do not match: {name!r} is missing from "
                f"one of them or has another shape; the run is damaged"
            )
    layers = []
    for name, kept in after.items():
        alive = before[name].bool() if name in before else torch.ones_like(kept, dtype=torch.bool)
        layers.append(Layer(name, initial[name][alive].float(), final[name][alive].float(), kept.bool()[alive]))
    rewind = source.config.get("rewind")
    return layers, (f"w at the rewind point ({rewind})" if rewound else "initial weight w_i")


def _subsample(count: int, most: int, seed: int) -> torch.Tensor:
    if count <= most:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:most]


def _title(source: Source, round_index: int) -> str:
    rounds = {r["round"]: r for r in source.rounds}
    criterion = source.config.get("criterion", "the criterion")
    before = percent(rounds[round_index - 1]["weights_remaining"]) if round_index - 1 in rounds else "?"
    after = percent(rounds[round_index]["weights_remaining"]) if round_index in rounds else "?"
    return f"{source.title}: pruning into round {round_index} by {criterion} ({before} \u2192 {after} of weights left)"


def _scatter(source: Source, round_index: int) -> Any:
    layers, initial_label = load_layers(source, round_index)
    rows, columns = grid_shape(len(layers), 3)
    fig = new_figure(4.2 * columns, 3.9 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for index, (ax, layer) in enumerate(zip(axes, layers)):
        pick = _subsample(layer.kept.numel(), SCATTER_POINTS, index)
        x, y, kept = layer.initial[pick], layer.final[pick], layer.kept[pick]
        ax.scatter(x[~kept], y[~kept], s=3, alpha=0.5, color=PRUNED_COLOUR, linewidths=0, rasterized=True)
        ax.scatter(x[kept], y[kept], s=3, alpha=0.5, color=KEPT_COLOUR, linewidths=0, rasterized=True)
        low = float(min(layer.initial.min(), layer.final.min())) if layer.kept.numel() else -1.0
        high = float(max(layer.initial.max(), layer.final.max())) if layer.kept.numel() else 1.0
        ax.plot([low, high], [low, high], color="0.4", linewidth=0.8, linestyle=":")
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.axvline(0, color="0.6", linewidth=0.6)
        total, kept_count = layer.kept.numel(), int(layer.kept.sum())
        shown = f", {len(pick):,} shown" if len(pick) < total else ""
        ax.set_title(f"{layer_label(layer.name)}: {kept_count:,} of {total:,} kept{shown}", fontsize="small")
        ax.set_xlabel(initial_label, fontsize="small")
        ax.set_ylabel(f"w_f, end of round {round_index - 1}", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.25)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    handles = [
        axes[0].scatter([], [], s=16, color=KEPT_COLOUR, label=f"kept by mask {round_index}"),
        axes[0].scatter([], [], s=16, color=PRUNED_COLOUR, label=f"pruned by mask {round_index}"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    fig.suptitle(_title(source, round_index), fontsize="medium")
    return fig


def _hist(source: Source, round_index: int) -> Any:
    layers, initial_label = load_layers(source, round_index)
    pooled = len(layers) > HIST_LAYERS
    if pooled:  # in units of each layer's initial std, so that every layer counts on one axis
        scales = [(float(lay.initial.std()) or 1.0) if lay.initial.numel() > 1 else 1.0 for lay in layers]
        initial = torch.cat([lay.initial / s for lay, s in zip(layers, scales)])
        final = torch.cat([lay.final / s for lay, s in zip(layers, scales)])
        groups = [("all prunable layers", initial, final, torch.cat([lay.kept for lay in layers]))]
    else:
        groups = [(layer_label(lay.name), lay.initial, lay.final, lay.kept) for lay in layers]
    columns = len(groups)
    fig = new_figure(max(6.4, 3.4 * columns), 5.9)
    axes = fig.subplots(2, columns, squeeze=False)
    for column, (name, initial, final, kept) in enumerate(groups):
        for row, (values, when) in enumerate(((initial, initial_label), (final, f"end of round {round_index - 1}"))):
            ax = axes[row, column]
            data = [values[~kept].numpy(), values[kept].numpy()]
            ax.hist(
                data,
                bins=60,
                stacked=True,
                histtype="stepfilled",
                color=[PRUNED_COLOUR, KEPT_COLOUR],
                linewidth=0,
                label=[f"pruned by mask {round_index}", f"kept by mask {round_index}"],
            )
            ax.set_title(f"{name}: {when}", fontsize="small")
            ax.tick_params(labelsize="x-small")
            ax.grid(True, alpha=0.25)
            if row == 1:
                ax.set_xlabel("weight / the layer's initial std" if pooled else "weight value", fontsize="small")
            if column == 0:
                ax.set_ylabel("number of weights", fontsize="small")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    fig.suptitle(_title(source, round_index), fontsize="medium")
    return fig


def plot_weights_scatter(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, round_index: int | None = None
) -> list[Path]:
    """For every run, w_i against w_f of the weights alive before round N, coloured kept/pruned by mask N."""
    paths = []
    for source in sources:
        chosen = default_round(source, round_index)
        fig = _scatter(source, chosen)
        paths += save(fig, out_dir, file_stem(f"weights_scatter_round_{chosen:02d}", source, sources), formats)
    return paths


def plot_weights_hist(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, round_index: int | None = None
) -> list[Path]:
    """For every run, stacked histograms (pruned + kept) of the weights alive before round N, at
    initialisation and at the end of round N-1."""
    paths = []
    for source in sources:
        chosen = default_round(source, round_index)
        fig = _hist(source, chosen)
        paths += save(fig, out_dir, file_stem(f"weights_hist_round_{chosen:02d}", source, sources), formats)
    return paths
