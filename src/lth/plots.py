"""Figures of a run, drawn only from what the store wrote."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from lth.atomic import atomic_write_bytes  # noqa: E402
from lth.store.run_dir import RunDir  # noqa: E402


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
