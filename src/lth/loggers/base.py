"""What every logger backend implements, and the tag names they share.

Tags (TensorBoard) and metric keys (MLflow) are the same strings:

* ``round_03/test/accuracy``, ``round_03/val/loss``, ``round_03/train/loss`` -- one value per
  evaluation of the ticket's round 3, step = training iteration;
* ``reinit/round_03/test/accuracy`` -- the same for a control (here ``reinit``);
* ``ticket/test_accuracy_at_early_stop``, ``ticket/weights_remaining``,
  ``ticket/early_stop_iteration``, ... and ``ticket/layer_density/LAYER`` -- the round's
  summary (as in ``rounds.json``), step = round index; ``reinit/...`` for a control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

TICKET = "ticket"  # the line name of the ticket itself; controls use their own names
SUMMARY_KEYS = (
    "weights_remaining",
    "kept_weights",
    "total_weights",
    "early_stop_iteration",
    "val_accuracy_at_early_stop",
    "test_accuracy_at_early_stop",
    "final_val_accuracy",
    "final_test_accuracy",
    "final_test_loss",
    "seconds",
)


class Logger(Protocol):
    """One open destination for a run's metrics (see :func:`lth.loggers.make_loggers`)."""

    fresh: bool
    """True when the destination holds nothing of this run yet: the search then replays the
    rounds it recorded before (a resumed run whose earlier log cannot be found)."""

    def log_round(self, line: str, summary: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> None:
        """Record one finished round of ``line`` (``ticket`` or a control): its summary and metric rows."""

    def close(self, status: str = "complete") -> None:
        """Flush and release; ``status`` is one of ``complete``, ``failed``, ``killed``."""


def round_scalars(
    line: str, summary: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]
) -> list[tuple[str, float, int]]:
    """The (tag, value, step) triples that mirror one round of ``line``."""
    r = int(summary["round"])
    prefix = f"round_{r:02d}" if line == TICKET else f"{line}/round_{r:02d}"
    out = [
        (f"{prefix}/{row['split']}/{name}", float(row[name]), int(row["iteration"]))
        for row in metrics
        for name in ("loss", "accuracy")
    ]
    out += [(f"{line}/{key}", float(summary[key]), r) for key in SUMMARY_KEYS if summary.get(key) is not None]
    out += [(f"{line}/layer_density/{layer}", float(value), r) for layer, value in summary.get("layers", {}).items()]
    return out


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as flat ``key: scalar`` pairs: nested keys joined by ``.``, lists comma-joined."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = value
    return flat
