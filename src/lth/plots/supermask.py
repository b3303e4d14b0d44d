"""Figures of supermask-eval runs: untrained accuracy of masked networks at initialisation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from lth.plots.common import FORMATS, Source, file_stem, new_figure, percent, percent_axis, save
from lth.store.run_dir import RunDir
from lth.store.supermask_rows import read_rows

ACCURACY_FILE = "supermask_accuracy_vs_kept"
HEATMAP_FILE = "supermask_heatmap"


def _supermask_rows(run: RunDir) -> tuple[list[dict], list[str], list[str], list[float]]:
    """The rows of a supermask-eval run and its criteria, transforms and keeps (in first-seen order)."""
    rows = read_rows(run)
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    transforms = list(dict.fromkeys(r["weights"] for r in rows))
    keeps = sorted({r["keep"] for r in rows}, reverse=True)
    return rows, criteria, transforms, keeps


def _title(run: RunDir) -> str:
    config = run.config()
    return f"{config.get('model')} on {config.get('dataset')}"


def accuracy_figure(run: RunDir) -> Any:
    """Untrained test accuracy against the fraction kept (log x), one line per criterion, one
    panel per weights transform."""
    rows, criteria, transforms, keeps = _supermask_rows(run)
    panels = max(1, len(transforms))
    fig = new_figure(4.6 * panels, 4.6)
    axes = fig.subplots(1, panels, sharey=True, squeeze=False)[0]
    cmap = colormaps["tab20" if len(criteria) > 10 else "tab10"]
    markers = "osD^v<>phX*"
    for ax, transform in zip(axes, transforms or [""]):
        for index, criterion in enumerate(criteria):
            points = sorted(
                (
                    (r["keep"], r["test_accuracy"])
                    for r in rows
                    if r["criterion"] == criterion and r["weights"] == transform
                ),
                reverse=True,
            )
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=markers[index % len(markers)],
                markersize=3.5,
                linewidth=1.2,
                color=cmap(index % cmap.N),
                label=criterion,
            )
        ax.set_xscale("log")
        ax.invert_xaxis()
        if keeps:
            step = max(1, (len(keeps) + 5) // 6)
            ax.xaxis.set_major_locator(FixedLocator(keeps[::step]))
        ax.xaxis.set_major_formatter(FuncFormatter(percent))
        ax.xaxis.set_minor_formatter(NullFormatter())
        percent_axis(ax.yaxis)
        ax.set_title(f"weights: {transform}", fontsize="medium")
        ax.set_xlabel("fraction of weights kept (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy, untrained")
    fig.suptitle(f"{_title(run)}: supermasks at initialisation")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize="small", frameon=False
        )
    return fig


def heatmap_figure(run: RunDir) -> Any:
    """Criterion x fraction kept, colour = untrained test accuracy (annotated, in %); one heatmap
    per weights transform."""
    rows, criteria, transforms, keeps = _supermask_rows(run)
    panels = max(1, len(transforms))
    width = max(6.0, 1.6 + 0.5 * len(keeps))
    height = 0.8 + 0.34 * max(1, len(criteria))
    fig = new_figure(width, height * panels + 0.8)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    column = {keep: j for j, keep in enumerate(keeps)}
    line = {criterion: i for i, criterion in enumerate(criteria)}
    image = None
    for ax, transform in zip(axes, transforms or [""]):
        grid = [[float("nan")] * len(keeps) for _ in criteria]
        for r in rows:
            if r["weights"] == transform:
                grid[line[r["criterion"]]][column[r["keep"]]] = r["test_accuracy"]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        for i, values in enumerate(grid):
            for j, value in enumerate(values):
                if value == value:  # not NaN
                    ax.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="black" if value > 0.6 else "white",
                    )
        ax.set_xticks(range(len(keeps)))
        ax.tick_params(axis="x", labelbottom=ax is axes[-1])
        ax.set_yticks(range(len(criteria)), criteria, fontsize=7)
        ax.set_title(f"weights: {transform}", fontsize="medium")
    axes[-1].set_xticklabels([percent(k) for k in keeps], rotation=60, fontsize=7)
    axes[-1].set_xlabel("fraction of weights kept")
    fig.suptitle(f"{_title(run)}: untrained test accuracy (%) of supermasks")
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.01, format=FuncFormatter(percent))
    return fig


def plot_supermask_accuracy_vs_kept(run: RunDir, path: Path | None = None) -> Path:
    """``supermask_accuracy_vs_kept.png`` (or ``path``) of a supermask-eval run."""
    path = Path(path or run.path / f"{ACCURACY_FILE}.png")
    return save(accuracy_figure(run), path.parent, path.stem, (path.suffix.lstrip("."),))[0]


def plot_supermask_heatmap(run: RunDir, path: Path | None = None) -> Path:
    """``supermask_heatmap.png`` (or ``path``) of a supermask-eval run."""
    path = Path(path or run.path / f"{HEATMAP_FILE}.png")
    return save(heatmap_figure(run), path.parent, path.stem, (path.suffix.lstrip("."),))[0]


def plot_supermask_run(run: RunDir) -> list[Path]:
    """Every figure of a supermask-eval run, as PNG in its directory."""
    return [plot_supermask_accuracy_vs_kept(run), plot_supermask_heatmap(run)]


def plot_supermask(sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """For every supermask-eval run: accuracy against fraction kept and the criterion x keep heatmap."""
    paths = []
    for source in sources:
        paths += save(accuracy_figure(source.run), out_dir, file_stem(ACCURACY_FILE, source, sources), formats)
        paths += save(heatmap_figure(source.run), out_dir, file_stem(HEATMAP_FILE, source, sources), formats)
    return paths
