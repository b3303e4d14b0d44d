"""The statistics of a pruning-at-initialisation study (:mod:`lth.experiments.init_pruning_study`):
one line per method (and ablation), one level per fraction kept. Read by the study driver
(:func:`lth.experiments.study.study_summary`), which does not need the study's runner."""

from __future__ import annotations

from typing import Any

from lth.experiments.statistics import summarise_trials
from lth.store.study_dir import ABLATION_PREFIX, TICKET_LINE

KIND = "prune-at-init"


def line_name(ablation: str) -> str:
    """The line of results of ``ablation`` (``ticket`` for the method's own mask)."""
    return TICKET_LINE if ablation == "none" else f"{ABLATION_PREFIX}{ablation}"


def summarise_study(study: Any) -> list[dict[str, Any]]:
    """Statistics over trials per method, ablation (``line``) and fraction kept: rows as
    :func:`~lth.experiments.statistics.summarise_trials` gives them, with ``experiment`` = the
    method, ``round`` = the index of the fraction kept (0 = the largest) and ``keep`` = that
    fraction. A fraction is summarised when every trial has finished it."""
    description = study.study()
    keeps = sorted({float(e["settings"]["keep"]) for e in description["experiments"]}, reverse=True)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for experiment in description["experiments"]:
        settings = experiment["settings"]
        groups.setdefault((settings["method"], settings["ablation"]), []).append(experiment)
    rows: list[dict[str, Any]] = []
    for (method, ablation), experiments in groups.items():
        trials: dict[int, list[dict[str, Any]]] = {}
        for experiment in experiments:
            level = keeps.index(float(experiment["settings"]["keep"]))
            for entry in experiment["runs"]:
                run = study.run(entry["path"])
                if run.status().get("status") != "complete" or not run.rounds():
                    continue
                trials.setdefault(entry["trial"], []).append({**run.rounds()[0], "round": level})
        if not trials:
            continue
        for row in summarise_trials([trials[t] for t in sorted(trials)]):
            rows.append({"experiment": method, "line": line_name(ablation), **row, "keep": keeps[row["round"]]})
    return rows


def collapsed_runs(study: Any) -> dict[tuple[str, str, float], int]:
    """(method, ablation, keep) -> how many of its finished runs had a layer left without weights."""
    out: dict[tuple[str, str, float], int] = {}
    for experiment in study.study()["experiments"]:
        s = experiment["settings"]
        key = (s["method"], s["ablation"], float(s["keep"]))
        out[key] = sum(bool(study.run(e["path"]).prune_at_init().get("collapsed")) for e in experiment["runs"])
    return out
