"""The mask of the first prunable layer as an image, when that layer sees the input image.

Linear first layer (e.g. LeNet-300-100): for every input pixel, how many of the layer's units still
connect to it (channels summed). Convolutional first layer: for every kernel position, how many
kernel weights (over all filters and input channels) are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from lth.documents import damaged
from lth.masks import Mask
from lth.plots.common import (
    FORMATS,
    SUPERMASK_TRAIN,
    TICKET,
    Source,
    file_stem,
    layer_label,
    new_figure,
    percent,
    pick_rounds,
    save,
)

FIRST_LAYER_FILE = "first_layer_mask"
#: Rounds shown side by side when no --round is chosen (evenly spread, the last always).
PANELS = 4


def input_shape(source: Source) -> tuple[int, int, int] | None:
    """(C, H, W) of the run's dataset when it is a registered one."""
    from lth.data import DATASETS

    try:
        # tuple(): a copy, whatever sequence the dataset was registered with (three numbers).
        return cast("tuple[int, int, int]", tuple(DATASETS.get(str(source.config.get("dataset"))).input_shape))
    except Exception:  # a user data set, or a name no longer registered
        return None


def _masks(source: Source, chosen: int | None) -> list[tuple[str, Mask]]:
    """(panel title prefix, mask) for every panel."""
    if source.kind == SUPERMASK_TRAIN:
        return [("learned mask", Mask.load(source.path / "mask.pt"))]
    rounds = source.round_indices
    if chosen is not None:
        shown = [chosen]
    else:
        pruned = [r for r in rounds if r > 0]
        shown = pick_rounds(pruned, PANELS) if pruned else rounds[-1:]
    return [(f"round {r}", source.run.load_mask(r)) for r in shown]


def _layer(mask: Mask) -> tuple[str, torch.Tensor]:
    name = next(iter(mask))
    return name, mask[name].bool()


def check_first_layer(source: Source, chosen: int | None) -> str | None:
    """Why the first-layer figure cannot be drawn for ``source`` (None when it can)."""
    if source.kind == TICKET and not source.round_indices:
        return "it has no finished round yet"
    path = (
        source.path / "mask.pt"
        if source.kind == SUPERMASK_TRAIN
        else source.run.mask_path(chosen if chosen is not None else source.round_indices[-1])
    )
    if not path.is_file():
        return f"it lacks {path.relative_to(source.path)}"
    shape = input_shape(source)
    if shape is None:
        return f"its dataset {source.config.get('dataset')!r} is not a registered one, so its image shape is unknown"
    mask = Mask.load(path)
    if not mask:
        raise damaged(path, "it holds no masks")
    name, layer = _layer(mask)
    channels, height, width = shape
    sees_image = (layer.dim() == 2 and layer.shape[1] == channels * height * width and height * width > 1) or (
        layer.dim() == 4 and layer.shape[1] == channels
    )
    if not sees_image:
        return (
            f"its first prunable layer {name!r} (shape {tuple(layer.shape)}) does not see the "
            f"{channels}x{height}x{width} input image"
        )
    return None


def _draw(source: Source, chosen: int | None) -> Any:
    masks = _masks(source, chosen)
    shape = input_shape(source)
    assert shape is not None  # drawn only for sources that the kind's check let through (a registered dataset)
    channels, height, width = shape
    name, first = _layer(masks[0][1])
    conv = first.dim() == 4
    if conv:
        out_channels, in_channels, kh, kw = first.shape
        most = out_channels * in_channels
        what = (
            f"kept kernel weights per position (of {out_channels} filters x {in_channels} "
            f"channel{'s' * (in_channels != 1)})"
        )
    else:
        most = first.shape[0] * channels
        what = f"units still connected to the pixel (of {first.shape[0]}" + (
            f" x {channels} channels, summed)" if channels > 1 else ")"
        )
    panels = len(masks)
    fig = new_figure(2.6 * panels + 1.4, 3.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    image = None
    for ax, (title, mask) in zip(axes, masks):
        _, layer = _layer(mask)
        if conv:
            counts = layer.sum(dim=(0, 1)).float()
        else:
            counts = layer.sum(dim=0).float().reshape(channels, height, width).sum(dim=0)
        image = ax.imshow(counts.numpy(), cmap="viridis", vmin=0, vmax=most, interpolation="nearest")
        if conv and counts.numel() <= 49:
            for i, line in enumerate(counts.tolist()):
                for j, value in enumerate(line):
                    ax.text(
                        j,
                        i,
                        f"{value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if value > 0.6 * most else "white",
                    )
        ax.set_title(f"{title}: {percent(float(layer.float().mean()))} of {layer_label(name)} kept", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), fraction=0.046 if panels > 1 else 0.08, pad=0.02)
        bar.ax.tick_params(labelsize="x-small")
    kind = "kernel positions" if conv else f"{height}x{width} input pixels"
    fig.suptitle(f"{source.title}: {layer_label(name)} mask over the {kind}\ncolour: {what}", fontsize="small")
    return fig


def plot_first_layer(
    sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS, round_index: int | None = None
) -> list[Path]:
    """For every run, the first layer's mask as an image (several rounds side by side unless one is chosen)."""
    paths = []
    for source in sources:
        chosen = None if source.kind == SUPERMASK_TRAIN else round_index
        stem = FIRST_LAYER_FILE if chosen is None else f"{FIRST_LAYER_FILE}_round_{chosen:02d}"
        paths += save(_draw(source, chosen), out_dir, file_stem(stem, source, sources), formats)
    return paths
