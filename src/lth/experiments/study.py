"""Studies: many ticket searches run one after another into one directory, resumable.

``lth robust`` is a study of one experiment over N trials (seeds); ``lth session`` is a grid of
experiments, each over N trials. Every trial is an ordinary find-ticket run directory, so a
killed study resumes exactly: finished trials are kept, an interrupted one continues from its
checkpoint, the rest start.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from lth.config import TicketConfig, make_config
from lth.errors import LthError
from lth.experiments.session_spec import Experiment
from lth.experiments.statistics import summarise_trials
from lth.experiments.ticket_search import check_config, find_ticket, resume_ticket
from lth.store import RunDir
from lth.store.study_dir import StudyDir


@dataclass
class StudyResult:
    """Where the study lives and its statistics (``summary``: one row per experiment, round and metric)."""

    study_dir: StudyDir
    summary: list[dict[str, Any]]


def robust_experiment(config: TicketConfig, trials: int) -> Experiment:
    """One experiment: ``config`` repeated with seeds ``config.seed + i`` for i < trials."""
    if trials < 1:
        raise LthError(f"trials must be at least 1, got {trials}")
    check_config(config)
    configs = tuple(
        make_config({**config.model_dump(), "seed": config.seed + i, "name": f"{config.name or 'robust'}/trial_{i:02d}"})
        for i in range(trials)
    )
    return Experiment(name="ticket", slug="", settings={}, trials=configs)


def _describe(kind: str, name: Optional[str], experiments: list[Experiment], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "spec": spec,
        "experiments": [
            {
                "name": e.name,
                "settings": e.settings,
                "runs": [
                    {"trial": i, "path": str(Path(e.slug) / f"trial_{i:02d}"), "config": c.model_dump()}
                    for i, c in enumerate(e.trials)
                ],
            }
            for e in experiments
        ],
    }


def run_study(
    kind: str,
    experiments: list[Experiment],
    out: str | Path,
    spec: dict[str, Any],
    name: Optional[str] = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> StudyResult:
    """Run (or, with ``resume``, continue) every trial of every experiment into ``out``."""
    wanted = _describe(kind, name, experiments, spec)
    if resume and StudyDir.is_study(out):
        study = StudyDir.open(out)
        if study.study()["experiments"] != wanted["experiments"]:
            raise LthError(f"cannot resume {str(out)!r}: it holds a different study (its experiments or configs differ)")
        return continue_study(out, progress)
    study = StudyDir.create(out, overwrite=overwrite)
    study.write_study(wanted)
    return continue_study(out, progress)


def continue_study(path: str | Path, progress: bool = True) -> StudyResult:
    """Run what is unfinished in a study directory, then write its statistics and plots."""
    study = StudyDir.open(path)
    description = study.study()
    runs = [(e["name"], r) for e in description["experiments"] for r in e["runs"]]
    started = study.status().get("started") or _now()
    done = sum(_complete(study.run(r["path"])) for _, r in runs)
    study.write_status(status="running", started=started, runs_total=len(runs), runs_complete=done)
    bar = tqdm(total=len(runs), initial=done, desc=f"{description['kind']} {study.path.name}", unit="run",
               disable=not progress, dynamic_ncols=True)
    tic = time.perf_counter()
    for experiment, entry in runs:
        run = study.run(entry["path"])
        if _complete(run):
            continue
        bar.set_postfix_str(f"{experiment} trial {entry['trial']}")
        if run.load_checkpoint() is not None:
            result = resume_ticket(run.path, progress=progress, leave=False)
        else:  # never started, or killed before its first checkpoint
            result = find_ticket(make_config(entry["config"]), out=run.path, overwrite=True,
                                 progress=progress, leave=False)
        done += 1
        last = result.rounds[-1]
        bar.update(1)
        if progress:
            bar.write(f"{experiment} trial {entry['trial']}: {100 * last['weights_remaining']:.2f}% of weights left, "
                      f"test accuracy {100 * last['test_accuracy_at_early_stop']:.2f}% at early stop")
        study.write_status(status="running", started=started, runs_total=len(runs), runs_complete=done)
    bar.close()
    summary = study_summary(study)
    study.write_summary(summary)
    from lth.plots import plot_study

    plot_study(study)
    study.write_status(status="complete", started=started, finished=_now(), runs_total=len(runs),
                       runs_complete=done, seconds_this_session=round(time.perf_counter() - tic, 3))
    return StudyResult(study, summary)


def study_summary(study: StudyDir) -> list[dict[str, Any]]:
    """Statistics over the finished trials of each experiment (rows tagged with ``experiment``)."""
    rows = []
    for experiment in study.study()["experiments"]:
        trials = [study.run(r["path"]).rounds() for r in experiment["runs"]]
        trials = [t for t in trials if t]
        if trials:
            rows.extend({"experiment": experiment["name"], **row} for row in summarise_trials(trials))
    return rows


def _complete(run: RunDir) -> bool:
    return run.status().get("status") == "complete"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
