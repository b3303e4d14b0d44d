"""Figures of a run, drawn only from what the store wrote."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from lth.atomic import atomic_write_bytes  # noqa: E402
from lth.store.run_dir import RunDir  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _save(fig: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."), dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _percent(value: float, _pos: object = None) -> str:
    return f"{100 * value:.3g}%"


def plot_accuracy_vs_weights_remaining(run: RunDir, path: Path | None = None) -> Path:
    """Test accuracy (early stop and end of training) against weights remaining, log x axis."""
    rounds = run.rounds()
    path = path or run.path / "accuracy_vs_weights_remaining.png"
    x = [r["weights_remaining"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [r["test_accuracy_at_early_stop"] for r in rounds], "o-", label="at early stop")
    ax.plot(x, [r["final_test_accuracy"] for r in rounds], "s--", alpha=0.7, label="end of training")
    for (name, control), marker in zip(run.controls().items(), "^vDx"):
        ax.plot(
            [r["weights_remaining"] for r in control], [r["test_accuracy_at_early_stop"] for r in control],
            marker + ":", label=f"{name} control (early stop)",
        )
    ax.set_xscale("log")
    ax.invert_xaxis()
    step = max(1, (len(x) + 7) // 8)  # at most ~8 labelled ticks, at the measured levels
    ax.xaxis.set_major_locator(FixedLocator(x[::step]))
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    config = run.config()
    ax.set_title(f"{config['model']} on {config['dataset']}: ticket accuracy")
    ax.set_xlabel("weights remaining (log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    # Below the axes: with controls, four lines cross the whole plot and any inner corner hides data.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small", frameon=False)
    _save(fig, path)
    return path


def plot_learning_curves(run: RunDir, path: Path | None = None) -> Path:
    """Test accuracy against training iteration, one line per round (as in Frankle & Carbin)."""
    rounds = {r["round"]: r["weights_remaining"] for r in run.rounds()}
    rows = [row for row in run.metrics() if row["split"] == "test"]
    path = path or run.path / "learning_curves.png"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("viridis")
    for index, (round_index, remaining) in enumerate(sorted(rounds.items())):
        points = [row for row in rows if row["round"] == round_index]
        ax.plot(
            [row["iteration"] for row in points],
            [row["accuracy"] for row in points],
            color=cmap(index / max(1, len(rounds) - 1)),
            label=f"{_percent(remaining)} kept",
            linewidth=1.2,
        )
    # Zoom on where rounds differ: the first evaluations (near chance) would squash the rest.
    late = [row["accuracy"] for row in rows if row["iteration"] >= 0.1 * max(row["iteration"] for row in rows)]
    if late:
        ax.set_ylim(bottom=max(0.0, min(late) - 0.02), top=min(1.0, max(late) + 0.01))
    config = run.config()
    ax.set_title(f"{config['model']} on {config['dataset']}: learning curves")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(rounds) > 8 else 1)
    _save(fig, path)
    return path


def plot_run(run: RunDir) -> list[Path]:
    """Every standard figure of a ticket-search run."""
    return [plot_accuracy_vs_weights_remaining(run), plot_learning_curves(run)]


# ------------------------------------------------------------------ supermasks at initialisation


def _supermask_rows(run: RunDir) -> tuple[list[dict], list[str], list[str], list[float]]:
    """The rows of a supermask-eval run and its criteria, transforms and keeps (in first-seen order)."""
    from lth.supermasks.evaluate import read_rows  # lazy: that module imports this one

    rows = read_rows(run)
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    transforms = list(dict.fromkeys(r["weights"] for r in rows))
    keeps = sorted({r["keep"] for r in rows}, reverse=True)
    return rows, criteria, transforms, keeps


def plot_supermask_accuracy_vs_kept(run: RunDir, path: Path | None = None) -> Path:
    """Untrained test accuracy against the fraction kept (log x), one line per criterion, one
    panel per weights transform."""
    rows, criteria, transforms, keeps = _supermask_rows(run)
    path = path or run.path / "supermask_accuracy_vs_kept.png"
    panels = max(1, len(transforms))
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab20" if len(criteria) > 10 else "tab10")
    markers = "osD^v<>phX*"
    for ax, transform in zip(axes[0], transforms or [""]):
        for index, criterion in enumerate(criteria):
            points = sorted(
                ((r["keep"], r["test_accuracy"]) for r in rows
                 if r["criterion"] == criterion and r["weights"] == transform),
                reverse=True,
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=markers[index % len(markers)],
                    markersize=3.5, linewidth=1.2, color=cmap(index % cmap.N), label=criterion)
        ax.set_xscale("log")
        ax.invert_xaxis()
        if keeps:
            step = max(1, (len(keeps) + 5) // 6)
            ax.xaxis.set_major_locator(FixedLocator(keeps[::step]))
        ax.xaxis.set_major_formatter(FuncFormatter(_percent))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(_percent))
        ax.set_title(f"weights: {transform}", fontsize="medium")
        ax.set_xlabel("fraction of weights kept (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy, untrained")
    config = run.config()
    fig.suptitle(f"{config['model']} on {config['dataset']}: supermasks at initialisation")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(4, len(labels)), fontsize="small", frameon=False)
    _save(fig, path)
    return path


def plot_supermask_heatmap(run: RunDir, path: Path | None = None) -> Path:
    """Criterion x fraction kept, colour = untrained test accuracy (annotated, in %); one heatmap
    per weights transform."""
    rows, criteria, transforms, keeps = _supermask_rows(run)
    path = path or run.path / "supermask_heatmap.png"
    panels = max(1, len(transforms))
    width = max(6.0, 1.6 + 0.5 * len(keeps))
    height = 0.8 + 0.34 * max(1, len(criteria))
    fig, axes = plt.subplots(panels, 1, figsize=(width, height * panels + 0.8), squeeze=False, layout="constrained")
    column = {keep: j for j, keep in enumerate(keeps)}
    line = {criterion: i for i, criterion in enumerate(criteria)}
    image = None
    for ax, transform in zip(axes[:, 0], transforms or [""]):
        grid = [[float("nan")] * len(keeps) for _ in criteria]
        for r in rows:
            if r["weights"] == transform:
                grid[line[r["criterion"]]][column[r["keep"]]] = r["test_accuracy"]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        for i, values in enumerate(grid):
            for j, value in enumerate(values):
                if value == value:  # not NaN
                    ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=6.5,
                            color="black" if value > 0.6 else "white")
        ax.set_xticks(range(len(keeps)))
        ax.tick_params(axis="x", labelbottom=ax is axes[-1, 0])
        ax.set_yticks(range(len(criteria)), criteria, fontsize=7)
        ax.set_title(f"weights: {transform}", fontsize="medium")
    axes[-1, 0].set_xticklabels([_percent(k) for k in keeps], rotation=60, fontsize=7)
    axes[-1, 0].set_xlabel("fraction of weights kept")
    config = run.config()
    fig.suptitle(f"{config['model']} on {config['dataset']}: untrained test accuracy (%) of supermasks")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:, 0]), fraction=0.03, pad=0.01, format=FuncFormatter(_percent))
    _save(fig, path)
    return path


def plot_supermask_run(run: RunDir) -> list[Path]:
    """Every figure of a supermask-eval run."""
    return [plot_supermask_accuracy_vs_kept(run), plot_supermask_heatmap(run)]


# ------------------------------------------------------------------ figures from rows (Python API)


def _axes(ax: "Axes | None") -> "Axes":
    """The given axes, or the axes of a new figure that pyplot does not track (nothing leaks)."""
    if ax is not None:
        return ax
    return Figure(figsize=(6.4, 4.2)).subplots()


def _remaining_axis(ax: "Axes", levels: Sequence[float]) -> None:
    """Weights remaining on a log x axis, decreasing to the right, ticks at the measured levels."""
    levels = sorted({float(v) for v in levels if v and v > 0}, reverse=True)
    ax.set_xscale("log")
    if levels:
        step = max(1, (len(levels) + 7) // 8)
        ax.xaxis.set_major_locator(FixedLocator(levels[::step]))
        if len(levels) == 1:
            ax.set_xlim(levels[0] * 1.25, levels[0] / 1.25)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.set_xlabel("weights remaining (log scale)")
    ax.grid(True, which="both", alpha=0.3)


def draw_accuracy(
    lines: Mapping[str, Sequence[Mapping[str, Any]]], ax: "Axes | None" = None, title: str | None = None
) -> "Figure":
    """Test accuracy at early stop (solid) and at the end of training (dashed) against weights
    remaining (log x), one colour per line of per-round rows; returns the figure."""
    ax = _axes(ax)
    levels: list[float] = []
    for index, (label, rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r["round"])
        x = [r["weights_remaining"] for r in rows]
        levels.extend(x)
        colour = f"C{index % 10}"
        ax.plot(x, [r["test_accuracy_at_early_stop"] for r in rows], "o-", color=colour, label=f"{label} (early stop)")
        ax.plot(x, [r["final_test_accuracy"] for r in rows], "s--", color=colour, alpha=0.6, label=f"{label} (end)")
    _remaining_axis(ax, levels)
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy of the pruned networks")
    ax.legend(fontsize="small")
    return ax.figure


def draw_learning_curves(
    rounds: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    ax: "Axes | None" = None,
    split: str = "test",
    title: str | None = None,
) -> "Figure":
    """Accuracy on ``split`` against training iteration, one line per round (metrics rows hold
    round, iteration, split, accuracy); returns the figure."""
    ax = _axes(ax)
    remaining = {r["round"]: r["weights_remaining"] for r in rounds}
    cmap = plt.get_cmap("viridis")
    for index, round_index in enumerate(sorted(remaining)):
        points = [m for m in metrics if m["round"] == round_index and m["split"] == split]
        ax.plot([m["iteration"] for m in points], [m["accuracy"] for m in points], linewidth=1.2,
                color=cmap(index / max(1, len(remaining) - 1)), label=f"{_percent(remaining[round_index])} kept")
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"{split} accuracy")
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "learning curves")
    if remaining:
        ax.legend(fontsize="small", ncol=2 if len(remaining) > 8 else 1)
    return ax.figure


def draw_trials_accuracy(
    summary: Sequence[Mapping[str, Any]],
    metric: str = "test_accuracy_at_early_stop",
    ax: "Axes | None" = None,
    label: str | None = None,
    title: str | None = None,
) -> "Figure":
    """Mean of ``metric`` over trials against weights remaining, with its 95% CI band and a
    lighter min-max band; ``summary`` holds ``summarise_trials`` rows. Returns the figure."""
    ax = _axes(ax)
    rows = sorted((r for r in summary if r["metric"] == metric), key=lambda r: r["round"])
    x = [r["weights_remaining"] for r in rows]
    line = ax.plot(x, [r["mean"] for r in rows], "o-", label=f"{label or metric} (mean)")[0]
    colour = line.get_color()
    ax.fill_between(x, [r["min"] for r in rows], [r["max"] for r in rows], color=colour, alpha=0.12,
                    linewidth=0, label="min-max")
    if all(r["ci95_low"] is not None for r in rows):
        ax.fill_between(x, [r["ci95_low"] for r in rows], [r["ci95_high"] for r in rows], color=colour,
                        alpha=0.3, linewidth=0, label="95% CI")
    _remaining_axis(ax, x)
    ax.set_ylabel(metric.replace("_", " "))
    trials = rows[0]["trials"] if rows else 0
    ax.set_title(title or f"mean over {trials} trials")
    ax.legend(fontsize="small")
    return ax.figure


def plot_study(study: Any) -> list[Path]:
    """A study's figure: mean test accuracy at early stop of every experiment with 95% CI and
    min-max bands over its trials, against weights remaining (``accuracy_vs_weights_remaining.png``)."""
    rows = study.summary()
    if not rows:
        return []
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    experiments = list(dict.fromkeys(r["experiment"] for r in rows))
    for name in experiments:
        draw_trials_accuracy([r for r in rows if r["experiment"] == name], ax=ax,
                             label=name if len(experiments) > 1 else "ticket")
    trials = max(r["trials"] for r in rows)
    kind = study.study().get("kind", "study")
    ax.set_title(f"{kind}: test accuracy at early stop, mean over {trials} trials (bands: 95% CI, min-max)")
    path = study.path / "accuracy_vs_weights_remaining.png"
    _save(fig, path)
    return [path]
