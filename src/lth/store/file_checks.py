"""What each file of a run directory must hold: the checks its readers apply (a damaged file is
one LthError line naming it, see :mod:`lth.documents`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lth.documents import brief, damaged, is_number

METRIC_FIELDS = ("round", "iteration", "split", "loss", "accuracy")
ROUND_FIELDS = {  # what every rounds.json entry holds (what `lth show` prints)
    "round": lambda v: isinstance(v, int) and not isinstance(v, bool),
    **{
        name: is_number
        for name in (
            "weights_remaining",
            "early_stop_iteration",
            "val_accuracy_at_early_stop",
            "test_accuracy_at_early_stop",
            "final_test_accuracy",
        )
    },
}


def metric_row(path: Path, line: int, row: dict[str, Any]) -> dict[str, Any]:
    """One typed metrics.csv row; LthError naming the line and column that does not parse."""
    if None in row.values():
        raise damaged(path, f"line {line} has fewer fields than the header")
    typed: dict[str, Any] = {"split": row["split"]}
    for name, kind in (("round", int), ("iteration", int), ("loss", float), ("accuracy", float)):
        try:
            typed[name] = kind(row[name])
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a number"
            raise damaged(path, f"line {line} has {name} = {brief(row[name], 40)}, not {what}") from None
    return {name: typed[name] for name in METRIC_FIELDS}


def status_problem(status: dict[str, Any]) -> str | None:
    """What is wrong with the content of a ``status.json``, or None."""
    if not isinstance(status.get("status", ""), str):
        return f"its status is {brief(status['status'], 40)}, not a word"
    wrong = [
        key
        for key in ("runs_total", "runs_complete", "runs_failed")
        if key in status and not (is_int(status[key]) or status[key] is None)
    ]
    return f"its {wrong[0]} is {brief(status[wrong[0]], 40)}, not a whole number" if wrong else None


def _is_tensor(value: Any) -> bool:
    import torch  # here, not at the top: ``lth show`` and ``lth runs`` read run directories without torch

    return isinstance(value, torch.Tensor)


def tensor_map_problem(data: Any) -> str | None:
    """What keeps ``data`` from being a mapping of names to tensors, or None."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not a mapping of names to tensors"
    for key, value in data.items():
        if not isinstance(key, str) or not _is_tensor(value):
            return f"it maps {brief(key, 40)} to a {type(value).__name__}, not a tensor"
    return None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tensor_map(value: Any) -> bool:
    return tensor_map_problem(value) is None


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_line(value: Any) -> bool:  # one line of results: {"rounds": [...], "metrics": [...]}
    return isinstance(value, dict) and isinstance(value.get("rounds"), list) and isinstance(value.get("metrics"), list)


#: The format number of a find-ticket run's ``checkpoint.pt`` (written by ticket_search._Search).
CHECKPOINT_FORMAT = 1
CHECKPOINT_FIELDS: dict[str, Callable[[Any], bool]] = {  # what a checkpoint.pt holds (see ticket_search._Search)
    "format": is_int,
    "round": is_int,
    "stage": lambda v: isinstance(v, str),
    "mask": _is_tensor_map,
    "control_mask": _optional(_is_tensor_map),
    "w_final": _is_tensor_map,
    "rewind_state": _optional(_is_tensor_map),
    "generator": _is_tensor,
    "torch_rng": _is_tensor,
    "snapshots": lambda v: isinstance(v, dict) and all(_is_tensor_map(s) for s in v.values()),
    "masks": lambda v: isinstance(v, list) and all(_is_tensor_map(m) for m in v),
    "ticket": _is_line,
    "controls": lambda v: isinstance(v, dict) and all(_is_line(c) for c in v.values()),
    "training": _optional(lambda v: isinstance(v, dict)),
    "started": lambda v: isinstance(v, str),
    "resumed": is_int,
}
TRAINING_FIELDS: dict[str, Callable[[Any], bool]] = {  # an interrupted training (TrainProgress.as_dict)
    "iteration": is_int,
    "model": _is_tensor_map,
    "optimizer": lambda v: isinstance(v, dict),
    "metrics": lambda v: isinstance(v, list),
    "running": _is_tensor,
    "seen": is_int,
    "best_loss": is_number,
    "best_state": _optional(_is_tensor_map),
    "seconds": is_number,
}


def checkpoint_problem(state: Any) -> str | None:
    """What is wrong with a loaded checkpoint (missing keys, values of the wrong type), or None.

    A checkpoint of another format is left for the resuming code to refuse by its number."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a mapping"
    if "format" in state and state["format"] != CHECKPOINT_FORMAT:
        return None
    parts: tuple[tuple[dict[str, Callable[[Any], bool]], Any, str], ...] = (
        (CHECKPOINT_FIELDS, state, ""),
        (TRAINING_FIELDS, state.get("training"), "training "),
    )
    for fields, values, where in parts:
        if values is None and where:
            continue
        missing = [name for name in fields if name not in values]
        if missing:
            more = f" and {len(missing) - 3} more keys" if len(missing) > 3 else ""
            return f"it lacks {where}{', '.join(repr(name) for name in missing[:3])}{more}"
        wrong = [name for name, ok in fields.items() if not ok(values[name])]
        if wrong:
            return f"its {where}{wrong[0]!r} is a {type(values[wrong[0]]).__name__} of the wrong kind"
    return None
