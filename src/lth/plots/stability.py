"""Figures of stability runs: error along the linear paths, and instability against the rewind point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps

from lth.plots.common import FORMATS, Source, file_stem, new_figure, percent_axis, save
from lth.store.run_dir import RunDir
from lth.store.stability_rows import read_entries

PATH_FILE = "stability_path"
INSTABILITY_FILE = "instability"


def _level_label(entry: dict[str, Any]) -> str:
    return f"level {entry['level']}: {100 * entry['weights_remaining']:.3g}% of weights"


def _title(run: RunDir) -> str:
    config = run.config()
    return f"{config.get('model')} on {config.get('dataset')}"


def path_figure(run: RunDir) -> Any:
    """Error along the linear path between children (mean over pairs), one panel per level, one colour
    per rewind point k; test solid, training subset dashed."""
    entries = read_entries(run)
    levels = list(dict.fromkeys(e["level"] for e in entries)) or [0]
    rewinds = sorted({e["rewind_iteration"] for e in entries})
    fig = new_figure(4.4 * len(levels), 4.2)
    axes = fig.subplots(1, len(levels), sharey=True, squeeze=False)[0]
    cmap = colormaps["viridis"]
    for ax, level in zip(axes, levels):
        for entry in (e for e in entries if e["level"] == level):
            index = rewinds.index(entry["rewind_iteration"])
            colour = cmap(index / max(1, len(rewinds) - 1) * 0.9)
            path = entry["path"]
            ax.plot(
                path["alpha"], path["test_error"], color=colour, linewidth=1.5, label=f"k = {entry['rewind_iteration']}"
            )
            if path.get("train_error"):
                ax.plot(path["alpha"], path["train_error"], color=colour, linewidth=1.0, linestyle="--")
            ax.set_title(_level_label(entry), fontsize="medium")
        ax.set_xlabel("interpolation alpha")
        ax.set_xlim(0, 1)
        percent_axis(ax.yaxis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%): test solid, train dashed")
    axes[-1].legend(fontsize="small", title="rewind point")
    fig.suptitle(f"{_title(run)}: error along the linear path between copies")
    return fig


def instability_figure(runs: RunDir | Sequence[RunDir]) -> Any:
    """Test instability (percentage points, mean +- std over pairs) against the rewind iteration
    (symmetric-log x: k = 0 included), one line per level of each run (several runs: their levels
    on one figure, labelled with the run's directory name); the stability threshold dotted."""
    runs = [runs] if isinstance(runs, RunDir) else list(runs)
    fig = new_figure()
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    lines, positive, thresholds = 0, [], set()
    for run in runs:
        entries = read_entries(run)
        prefix = f"{run.path.name}, " if len(runs) > 1 else ""
        for level in dict.fromkeys(e["level"] for e in entries):
            rows = sorted((e for e in entries if e["level"] == level), key=lambda e: e["rewind_iteration"])
            ax.errorbar(
                [e["rewind_iteration"] for e in rows],
                [100 * e["instability_test"] for e in rows],
                yerr=[100 * e["instability_test_std"] for e in rows],
                marker="o",
                markersize=4,
                capsize=3,
                color=cmap(lines % cmap.N),
                label=prefix + _level_label(rows[0]),
            )
            lines += 1
        positive += [e["rewind_iteration"] for e in entries if e["rewind_iteration"] > 0]
        thresholds |= {e.get("stable_threshold", 0.02) for e in entries}
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
    for threshold in sorted(thresholds):
        ax.axhline(
            100 * threshold,
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"stable: at most {100 * threshold:g} points",
        )
    ax.set_xlabel("rewind iteration k (symmetric log scale)")
    ax.set_ylabel("test instability (percentage points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{_title(runs[0])}: instability against the rewind point")
    return fig


def plot_stability_run(run: RunDir) -> list[Path]:
    """Both figures of a stability run, as PNG in its directory (none before its first path)."""
    if not read_entries(run):
        return []
    return save(path_figure(run), run.path, PATH_FILE, ("png",)) + save(
        instability_figure(run), run.path, INSTABILITY_FILE, ("png",)
    )


def plot_stability(sources: Sequence[Source], out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """For every stability run: the error along the paths and the instability against k; for several,
    also their instabilities on one figure (``instability.*``)."""
    paths = []
    for source in sources:
        paths += save(path_figure(source.run), out_dir, file_stem(PATH_FILE, source, sources), formats)
        paths += save(instability_figure(source.run), out_dir, file_stem(INSTABILITY_FILE, source, sources), formats)
    if len(sources) > 1:
        paths += save(instability_figure([s.run for s in sources]), out_dir, INSTABILITY_FILE, formats)
    return paths
