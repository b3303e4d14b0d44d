"""Side-by-side comparison of runs: config differences and a metric per weights-remaining level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lth.store.run_dir import RunDir
from lth.store.study_dir import TICKET_LINE, StudyDir, line_order

_NOT_COMPARED = {"name", "data_dir", "device", "checkpoint_every"}


Column = tuple[str, str, dict[int, tuple[float, float]]]  # (group, line, {round: (weights remaining, value)})


def _lines(path: Path, label: str, metric: str) -> dict[str, Column]:
    """Columns by name, each (group, line, {round: (weights remaining, metric)}): for a run, its
    ticket and every other line of it (controls, branches); for a study, every line of each
    experiment's summary (the means over trials). The ticket's column is named ``label`` (a study's
    other experiments ``label EXPERIMENT``), another line's ``COLUMN/LINE``."""
    out: dict[str, Column] = {}
    if StudyDir.is_study(path):
        for row in StudyDir(path).summary():
            if row["metric"] == metric:
                group = label if row["experiment"] == "ticket" else f"{label} {row['experiment']}"
                column = group if row["line"] == TICKET_LINE else f"{group}/{row['line']}"
                values = out.setdefault(column, (group, row["line"], {}))[2]
                values[row["round"]] = (row["weights_remaining"], row["mean"])
        return out
    lines = RunDir(path).lines()
    for line in sorted(lines, key=line_order):
        rounds = lines[line]
        values = {r["round"]: (r["weights_remaining"], r[metric]) for r in rounds if metric in r}
        if line == TICKET_LINE or values:
            out[label if line == TICKET_LINE else f"{label}/{line}"] = (label, line, values)
    return out


def compare_runs(root: Path, rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """{"config_differences": {key: [value per run]}, "columns": [...], "column_groups": [the run
    (or study experiment) of each column], "column_lines": [its line: ticket, reinit, random-prune,
    branch:NAME], "levels": [{"round", "weights_remaining": [...], "values": [...]}]} for index
    rows of runs under ``root``: one column per line of results of each run and study experiment."""
    configs = [row["config"] for row in rows]
    keys = sorted(set().union(*configs) - _NOT_COMPARED)
    differences = {
        key: [c.get(key) for c in configs] for key in keys if any(c.get(key) != configs[0].get(key) for c in configs)
    }
    described: dict[str, Column] = {}
    for row in rows:
        described.update(_lines(root / row["path"], row["id"], metric))
    columns = {name: values for name, (_, _, values) in described.items()}
    rounds = sorted(set().union(*[set(c) for c in columns.values()])) if columns else []
    levels = [
        {
            "round": r,
            "weights_remaining": [columns[c][r][0] if r in columns[c] else None for c in columns],
            "values": [columns[c][r][1] if r in columns[c] else None for c in columns],
        }
        for r in rounds
    ]
    return {
        "runs": [row["id"] for row in rows],
        "metric": metric,
        "config_differences": differences,
        "columns": list(columns),
        "column_groups": [group for group, _, _ in described.values()],
        "column_lines": [line for _, line, _ in described.values()],
        "levels": levels,
    }
