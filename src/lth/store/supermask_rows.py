"""The results table of a supermask-eval run: ``supermask_eval.csv`` and ``supermask_eval.json``.

Written by :mod:`lth.supermasks.evaluate`; read by the plots, the results index, ``lth show``
and the reports, none of which need the evaluation itself.
"""

from __future__ import annotations

from typing import Any

from lth import jsonio
from lth.atomic import atomic_write_csv, atomic_write_text
from lth.documents import is_number, read_document, row_problem
from lth.store.run_dir import RunDir

ROWS_CSV = "supermask_eval.csv"
ROWS_JSON = "supermask_eval.json"
ROW_FIELDS = (
    "criterion",
    "keep",
    "weights",
    "test_accuracy",
    "train_accuracy",
    "test_loss",
    "train_loss",
    "weights_remaining",
)


def write_rows(run: RunDir, rows: list[dict[str, Any]]) -> None:
    """``supermask_eval.csv`` and ``supermask_eval.json`` (atomic writes)."""
    atomic_write_csv(run.path / ROWS_CSV, ROW_FIELDS, rows)
    atomic_write_text(run.path / ROWS_JSON, jsonio.dumps(rows, indent=2) + "\n")


def read_rows(run: RunDir) -> list[dict[str, Any]]:
    """The rows of a supermask-eval run ([] when it has none yet)."""
    path = run.path / ROWS_JSON
    if not path.is_file():
        return []
    fields = {
        name: (lambda v: isinstance(v, str)) if name in ("criterion", "weights") else is_number for name in ROW_FIELDS
    }
    return read_document(path, list, lambda rows: row_problem(rows, fields, "entry"))  # LthError if damaged
