"""Side-by-side comparison of runs: config differences and a metric per weights-remaining level."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lth.store.run_dir import RunDir
from lth.store.study_dir import StudyDir

_NOT_COMPARED = {"name", "data_dir", "device", "checkpoint_every"}


def _lines(path: Path, label: str, metric: str) -> dict[str, dict[int, tuple[float, float]]]:
    """Columns of (weights remaining, metric) by round: one for a run, one per experiment of a study."""
    if StudyDir.is_study(path):
        out: dict[str, dict[int, tuple[float, float]]] = {}
        for row in StudyDir(path).summary():
            if row["metric"] == metric:
                column = label if row["experiment"] == "ticket" else f"{label} {row['experiment']}"
                out.setdefault(column, {})[row["round"]] = (row["weights_remaining"], row["mean"])
        return out
    rounds = RunDir(path).rounds()
    return {label: {r["round"]: (r["weights_remaining"], r[metric]) for r in rounds if metric in r}}


def compare_runs(root: Path, rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """{"config_differences": {key: [value per run]}, "columns": [...], "levels": [{"round",
    "weights_remaining": [...], "values": [...]}]} for index rows of runs under ``root``."""
    configs = [row["config"] for row in rows]
    keys = sorted(set().union(*configs) - _NOT_COMPARED)
    differences = {key: [c.get(key) for c in configs] for key in keys
                   if any(c.get(key) != configs[0].get(key) for c in configs)}
    columns: dict[str, dict[int, tuple[float, float]]] = {}
    for row in rows:
        columns.update(_lines(root / row["path"], row["id"], metric))
    rounds = sorted(set().union(*[set(c) for c in columns.values()])) if columns else []
    levels = [
        {
            "round": r,
            "weights_remaining": [columns[c][r][0] if r in columns[c] else None for c in columns],
            "values": [columns[c][r][1] if r in columns[c] else None for c in columns],
        }
        for r in rounds
    ]
    return {"runs": [row["id"] for row in rows], "metric": metric, "config_differences": differences,
            "columns": list(columns), "levels": levels}
