"""The results of a stability run: ``stability.json`` (one entry per level and rewind point) and
``stability.csv`` (the error and loss along every path, one row per point).

Written by :mod:`lth.experiments.stability`; read by the plots, the results index, ``lth show``
and the reports, none of which need the analysis itself.
"""

from __future__ import annotations

from typing import Any

from lth import jsonio
from lth.atomic import atomic_write_csv, atomic_write_text
from lth.documents import is_number, read_document
from lth.store.run_dir import RunDir

ROWS_JSON, ROWS_CSV = "stability.json", "stability.csv"
CSV_FIELDS = ("trial", "level", "weights_remaining", "rewind_iteration", "pair", "alpha", "split", "error", "loss")


def write_rows(run: RunDir, entries: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """``stability.json`` (the entries) and ``stability.csv`` (long rows), each written atomically."""
    atomic_write_csv(run.path / ROWS_CSV, CSV_FIELDS, rows)
    atomic_write_text(run.path / ROWS_JSON, jsonio.dumps(entries, indent=2) + "\n")


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"an entry is a {type(entry).__name__}, not a mapping"
    for key in (
        "level",
        "weights_remaining",
        "rewind_iteration",
        "instability_test",
        "instability_train",
        "loss_barrier_test",
    ):
        if not is_number(entry.get(key)):
            return f"an entry's {key!r} is not a number"
    path = entry.get("path")
    if not isinstance(path, dict) or not all(isinstance(path.get(k), list) for k in ("alpha", "test_error")):
        return "an entry's 'path' lacks its alpha and test_error lists"
    return None


def read_entries(run: RunDir) -> list[dict[str, Any]]:
    """The entries of a stability run's ``stability.json`` ([] before its first path; LthError if damaged)."""
    path = run.path / ROWS_JSON
    if not path.is_file():
        return []

    def check(entries: list) -> str | None:
        for entry in entries:
            problem = _entry_problem(entry)
            if problem:
                return problem
        return None

    return read_document(path, list, check)
