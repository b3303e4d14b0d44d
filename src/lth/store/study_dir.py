"""The layout of a study directory: many ticket searches (trials x experiments) and their statistics."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path, PurePath
from typing import Any

import yaml

from lth import jsonio
from lth.atomic import atomic_write_text
from lth.documents import brief, is_number, read_document, row_problem
from lth.errors import LthError
from lth.store.file_checks import is_int, status_problem
from lth.store.run_dir import RunDir, status_written

STUDY_FILE = "study.yaml"
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml if built in: the same text, faster
_PARSED: dict[bytes, bytes] = {}  # study.yaml contents read or written here: SHA-1 -> pickled content
_PARSED_MAX = 4


def _digest(path: Path) -> bytes | None:
    """The SHA-1 of the file's bytes (None if unreadable: read_document then says why)."""
    try:
        return hashlib.sha1(path.read_bytes()).digest()
    except OSError:
        return None


def _remember(digest: bytes, study: dict[str, Any]) -> None:
    _PARSED.pop(digest, None)
    _PARSED[digest] = pickle.dumps(study, protocol=pickle.HIGHEST_PROTOCOL)
    while len(_PARSED) > _PARSED_MAX:
        del _PARSED[next(iter(_PARSED))]


def _number_or_none(value: Any) -> bool:
    return value is None or is_number(value)


SUMMARY_FIELDS = {  # what every summary.json entry holds (lth.experiments.statistics.summarise_trials)
    "experiment": lambda v: isinstance(v, str),
    "round": is_int,
    "metric": lambda v: isinstance(v, str),
    "weights_remaining": _number_or_none,
    "trials": is_int,
    "mean": _number_or_none,
    "min": _number_or_none,
    "max": _number_or_none,
    "ci95_low": _number_or_none,
    "ci95_high": _number_or_none,  # None: NaN written as null
}
#: The ticket's line in a summary (``line`` of an entry; entries written before lines were
#: summarised have none, and are the ticket's). Controls are named as such, branches ``branch:NAME``.
TICKET_LINE = "ticket"
BRANCH_PREFIX = "branch:"
#: A pruning-at-initialisation study's ablation lines: ``ablation:shuffle`` beside the method's own mask.
ABLATION_PREFIX = "ablation:"


def line_order(name: str) -> tuple[int, int, str]:
    """Sort key of a study's lines: the ticket, then its controls (``reinit``, ``random-prune``,
    then any other by name), then its branches (``branch:NAME``, by name)."""
    from lth.config import CONTROL_NAMES

    if name == TICKET_LINE:
        return (0, 0, "")
    if name.startswith(BRANCH_PREFIX):
        return (2, 0, name)
    if name.startswith(ABLATION_PREFIX):  # after the method's own line, in the order they were named
        from lth.init_pruning.ablations import ABLATIONS

        ablation = name[len(ABLATION_PREFIX) :]
        return (1, ABLATIONS.index(ablation) if ablation in ABLATIONS else len(ABLATIONS), name)
    return (1, CONTROL_NAMES.index(name) if name in CONTROL_NAMES else len(CONTROL_NAMES), name)


def _summary_problem(rows: list[Any]) -> str | None:
    """What is wrong with the first bad ``summary.json`` entry (``line`` optional), or None."""
    problem = row_problem(rows, SUMMARY_FIELDS, "entry")
    if problem is None:
        bad = next((i for i, row in enumerate(rows) if not isinstance(row.get("line", TICKET_LINE), str)), None)
        problem = None if bad is None else f"entry {bad} has line = {brief(rows[bad]['line'], 40)}"
    return problem


_EXPERIMENT_FIELDS = {
    "name": lambda v: isinstance(v, str),
    "settings": lambda v: isinstance(v, dict),
    "runs": lambda v: isinstance(v, list) and len(v) > 0,
}
_RUN_FIELDS = {
    "trial": is_int,
    "path": lambda v: isinstance(v, str) and _inside(v),
    "config": lambda v: isinstance(v, dict),
}


def _inside(relative: str) -> bool:
    """A relative path that stays inside the study directory."""
    path = PurePath(relative)
    return bool(relative) and not path.is_absolute() and ".." not in path.parts


def _study_problem(study: dict[str, Any]) -> str | None:
    """What is wrong with the content of a ``study.yaml``, or None."""
    if not isinstance(study.get("kind"), str):
        return "it names no kind (robust or session)"
    if not isinstance(study.get("spec", {}), dict):
        return "its spec is not a mapping"
    experiments = study.get("experiments")
    if not isinstance(experiments, list):
        return "it has no list of experiments"
    problem = row_problem(experiments, _EXPERIMENT_FIELDS, "experiment")
    for i, experiment in enumerate(experiments):
        problem = problem or row_problem(experiment["runs"], _RUN_FIELDS, f"experiment {i}, run")
    return problem


class StudyDir:
    """A directory holding a robust or session study.

    Layout::

        study.yaml          kind (robust | session), the experiments and every run's config
        status.json         running | complete, runs done / total
        EXPERIMENT/trial_NN/  one find-ticket run directory per trial (robust: trial_NN/)
        dense/              the shared dense trunk: round 0 per key (lth.experiments.dense_trunk)
        summary.json        per experiment, line (ticket, controls, branch:NAME) and round: mean,
                            median, min, max, std, 95% CI
        summary.csv         the same as a flat table
        *.png               plots with bands over trials
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def is_study(path: str | Path) -> bool:
        return (Path(path) / STUDY_FILE).is_file()

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> StudyDir:
        """Make a fresh study directory, marked as lth's; refuse an existing non-empty one unless
        ``overwrite``, and then replace only an lth study's own files (see :mod:`lth.store.ownership`)."""
        from lth.store.ownership import claim_directory

        return cls(claim_directory(path, "study", overwrite))

    @classmethod
    def open(cls, path: str | Path) -> StudyDir:
        if not cls.is_study(path):
            raise LthError(f"{str(path)!r} is not an lth study directory (no {STUDY_FILE})")
        return cls(path)

    def write_study(self, study: dict[str, Any]) -> None:
        text = yaml.dump(study, Dumper=_YAML_DUMPER, sort_keys=False)
        atomic_write_text(self.path / STUDY_FILE, text)
        _remember(hashlib.sha1(text.encode()).digest(), study)

    def study(self) -> dict[str, Any]:
        """``study.yaml``: the kind, the experiments and their runs (LthError if damaged).

        Content read before in this process comes from a cache (a study's status is written,
        and its index row re-read, after every trial; parsing the YAML of thousands of runs
        each time took seconds).
        """
        path = self.path / STUDY_FILE
        digest = _digest(path)
        if digest in _PARSED:
            return pickle.loads(_PARSED[digest])
        study = read_document(path, dict, _study_problem)
        if digest is not None and _digest(path) == digest:  # unchanged while it was parsed
            _remember(digest, study)
        return study

    def write_status(self, **fields: Any) -> None:
        """Write ``status.json`` and update the runs root's results index."""
        atomic_write_text(self.path / "status.json", jsonio.dumps(fields, indent=2) + "\n")
        status_written(self.path)

    def status(self) -> dict[str, Any]:
        """``status.json`` ({} before the study wrote one; LthError if damaged)."""
        path = self.path / "status.json"
        return read_document(path, dict, status_problem) if path.is_file() else {}

    def write_summary(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        atomic_write_text(self.path / "summary.json", jsonio.dumps(rows, indent=2) + "\n")
        atomic_write_text(self.path / "summary.csv", pd.DataFrame(rows).to_csv(index=False))

    def summary(self) -> list[dict[str, Any]]:
        """``summary.json`` ([] before the study finished; LthError if damaged): one entry per
        experiment, line, round and metric, ``line`` second (entries of files written before
        lines were summarised have none: they are the ticket's, and read as ``line: ticket``)."""
        path = self.path / "summary.json"
        if not path.is_file():
            return []
        rows = read_document(path, list, _summary_problem)
        return [{"experiment": row["experiment"], "line": row.get("line", TICKET_LINE), **row} for row in rows]

    def run(self, relative: str) -> RunDir:
        return RunDir(self.path / relative)


def compare_sources(study: StudyDir) -> list[str]:
    """The IMP runs and studies recorded (``spec.compare``: ``lth prune-at-init --compare``) to be
    drawn beside the study, those that still exist."""
    spec = study.study().get("spec") or {}
    paths = spec.get("compare") or []
    return [p for p in paths if isinstance(p, str) and Path(p).is_dir()]
