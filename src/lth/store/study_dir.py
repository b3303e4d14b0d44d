"""The layout of a study directory: many ticket searches (trials x experiments) and their statistics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lth.atomic import atomic_write_text
from lth.errors import LthError
from lth.store.run_dir import RunDir

STUDY_FILE = "study.yaml"


class StudyDir:
    """A directory holding a robust or session study.

    Layout::

        study.yaml          kind (robust | session), the experiments and every run's config
        status.json         running | complete, runs done / total
        EXPERIMENT/trial_NN/  one find-ticket run directory per trial (robust: trial_NN/)
        summary.json        per experiment and round: mean, median, min, max, std, 95% CI
        summary.csv         the same as a flat table
        *.png               plots with bands over trials
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def is_study(path: str | Path) -> bool:
        return (Path(path) / STUDY_FILE).is_file()

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> "StudyDir":
        """Make a fresh study directory, marked as lth's; refuse an existing non-empty one unless
        ``overwrite``, and then replace only an lth study's own files (see :mod:`lth.store.ownership`)."""
        from lth.store.ownership import claim_directory

        return cls(claim_directory(path, "study", overwrite))

    @classmethod
    def open(cls, path: str | Path) -> "StudyDir":
        if not cls.is_study(path):
            raise LthError(f"{str(path)!r} is not an lth study directory (no {STUDY_FILE})")
        return cls(path)

    def write_study(self, study: dict[str, Any]) -> None:
        atomic_write_text(self.path / STUDY_FILE, yaml.safe_dump(study, sort_keys=False))

    def study(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / STUDY_FILE).read_text())

    def write_status(self, **fields: Any) -> None:
        """Write ``status.json`` and update the runs root's results index."""
        from lth.store.index import index_run

        atomic_write_text(self.path / "status.json", json.dumps(fields, indent=2) + "\n")
        index_run(self.path)

    def status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_summary(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        atomic_write_text(self.path / "summary.json", json.dumps(rows, indent=2) + "\n")
        atomic_write_text(self.path / "summary.csv", pd.DataFrame(rows).to_csv(index=False))

    def summary(self) -> list[dict[str, Any]]:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def run(self, relative: str) -> RunDir:
        return RunDir(self.path / relative)
