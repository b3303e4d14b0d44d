"""Studies: many ticket searches run one after another into one directory, resumable.

``lth robust`` is a study of one experiment over N trials (seeds); ``lth session`` is a grid of
experiments, each over N trials. Every trial is an ordinary find-ticket run directory, so a
killed study resumes exactly: finished trials are kept, an interrupted one continues from its
checkpoint, the rest start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lth.config import TicketConfig, make_config
from lth.errors import LthError
from lth.experiments.init_pruning_summary import KIND as PRUNE_AT_INIT
from lth.experiments.init_pruning_summary import summarise_study
from lth.experiments.limits import check_run_count, check_trials, format_count
from lth.experiments.session_spec import Experiment
from lth.experiments.statistics import summarise_lines
from lth.experiments.ticket_search import check_config
from lth.progress import progress_bar
from lth.store import RunDir
from lth.store.study_dir import StudyDir
from lth.training.vectorized import check_vectorizable, parse_vectorize


@dataclass
class StudyResult:
    """Where the study lives and its statistics (``summary``: one row per experiment, round and metric)."""

    study_dir: StudyDir
    summary: list[dict[str, Any]]
    #: Round-0 (dense) trainings of this call: trained, and reused from the shared dense trunk.
    dense_trained: int = 0
    dense_reused: int = 0
    share_trunk: bool = True


def robust_experiment(config: TicketConfig, trials: int, max_runs: int | None = None) -> Experiment:
    """One experiment: ``config`` repeated with seeds ``config.seed + i`` for i < trials.

    LthError, before any config is built, for ``trials`` < 1 or above ``max_runs``
    (None: :data:`~lth.experiments.limits.MAX_RUNS`).
    """
    check_trials(trials, "--trials")
    check_run_count(trials, max_runs, f"--trials {format_count(trials)} gives ", "--max-runs {n}")
    check_config(config)
    configs = tuple(
        make_config(
            {**config.model_dump(), "seed": config.seed + i, "name": f"{config.name or 'robust'}/trial_{i:02d}"}
        )
        for i in range(trials)
    )
    return Experiment(name="ticket", slug="", settings={}, trials=configs)


def _describe(kind: str, name: str | None, experiments: list[Experiment], spec: dict[str, Any]) -> dict[str, Any]:
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
    name: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    vectorize: int | str = "auto",
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    share_trunk: bool = True,
) -> StudyResult:
    """Run (or, with ``resume``, continue) every trial of every experiment into ``out``.

    ``backend`` / ``backend_options``: where the trials run (:func:`lth.backends.get_backend`).
    ``share_trunk``: trials whose round 0 is the same training (same model, data, seed and
    recipe; only pruning differs) train it once (see :func:`continue_study`).
    """
    wanted = _describe(kind, name, experiments, spec)
    if resume and StudyDir.is_study(out):
        study = StudyDir.open(out)
        if study.study()["experiments"] != wanted["experiments"]:
            raise LthError(
                f"cannot resume {str(out)!r}: it holds a different study (its experiments or configs differ)"
            )
        return continue_study(out, progress, vectorize, backend, backend_options, share_trunk)
    from lth.backends import check_options

    # Check the backend before creating anything (a named one is also started: Ray must be installed).
    if check_options(backend, dict(backend_options or {})) not in ("auto", "local"):
        _backend(backend, backend_options, 1)
    study = StudyDir.create(out, overwrite=overwrite)
    study.write_study({**wanted, "vectorize": vectorize, "share_trunk": bool(share_trunk)})
    return continue_study(out, progress, vectorize, backend, backend_options, share_trunk)


def continue_study(
    path: str | Path,
    progress: bool = True,
    vectorize: int | str | None = None,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    share_trunk: bool | None = None,
) -> StudyResult:
    """Run what is unfinished in a study directory, then write its statistics and plots.

    ``vectorize``: how many searches run side by side with their trainings vectorised
    (:mod:`lth.training.lockstep`); ``auto`` picks up to 16 on a GPU when the model allows it
    (none on a CPU, where it does not pay), ``off`` or 1 runs them one after another. Inside a
    vectorised training no checkpoints are taken: a killed study resumes those searches from
    their last round boundary. None: the setting the
    study was started with. Only the ``local`` backend vectorises.

    ``backend`` (None: ``$LTH_BACKEND``, else ``auto``): ``auto`` (the process pool when there
    are 2 CPUs and 2 pending trials and no GPU, else this process:
    :func:`lth.backends.choose_backend`), ``local`` (this process), ``process`` (a process pool)
    or ``ray`` (a Ray cluster), with ``backend_options`` (see :func:`lth.backends.get_backend`).
    The results are the same on every backend; this process keeps the progress bar and the
    study's status.
    Trials that fail are reported together at the end (LthError); ``lth resume`` retries them.

    ``share_trunk`` (None: the setting the study was started with, default on): trials whose
    round 0 is the same dense training (:func:`lth.experiments.dense_trunk.dense_trunk_key`:
    same model, data, seed, initialisation and recipe; only pruning differs) train it once;
    the others start from the copy in ``STUDY/dense/``, bit-identical to training it again.
    ``status.json`` counts round-0 trainings trained and reused (``dense_trained``,
    ``dense_reused``, summed over the study's sessions). Not shared: trials trained side by side
    (vectorised groups), and Ray trials without a shared filesystem. Two process workers may
    both train one key at once; both write the same bits, atomically, so either copy is valid.

    The study directory is locked throughout (:func:`lth.store.lock.run_lock`): a second driver
    of the same study gets a one-line LthError. Trial directories that a kill left half-swapped
    (Ray without a shared filesystem) are first put back (:func:`lth.backends.base.recover_unpacked`).
    """
    from lth.backends.base import recover_unpacked
    from lth.store.lock import run_lock

    study = StudyDir.open(path)
    with run_lock(study.path):
        description = study.study()
        parents = {study.run(r["path"]).path.parent for e in description["experiments"] for r in e["runs"]}
        for parent in sorted(parents):
            recover_unpacked(parent)
        return _continue_study(study, progress, vectorize, backend, backend_options, share_trunk)


DENSE_DIR = "dense"  # a study's shared dense trunk (lth.experiments.dense_trunk.DenseStore)


def _continue_study(
    study: StudyDir,
    progress: bool,
    vectorize: int | str | None,
    backend: str | None,
    backend_options: dict[str, Any] | None,
    share_trunk: bool | None = None,
) -> StudyResult:
    from lth.backends import TrialResult, TrialSpec

    description = study.study()
    runs = [(e["name"], r) for e in description["experiments"] for r in e["runs"]]
    started = study.status().get("started") or _now()
    done = sum(_complete(study.run(r["path"])) for _, r in runs)
    pending = [(experiment, entry) for experiment, entry in runs if not _complete(study.run(entry["path"]))]
    if vectorize is None:
        vectorize = description.get("vectorize", "auto")
    configs = [make_config(entry["config"]) for _, entry in pending]
    backend, backend_options = _choose(backend, backend_options, vectorize, configs)
    group = vector_size(vectorize, configs) if backend == "local" else 1
    runner = _backend(backend, backend_options, group)
    if share_trunk is None:
        share_trunk = bool(description.get("share_trunk", True))
    # Trials trained side by side (group > 1) do not share: the lockstep coordinator would not
    # deadlock on a search that skips its round-0 training (it waits only for live programs),
    # but a vectorised training equals a lone one only up to float rounding, so a round 0
    # trained in one group and reused in another would not be bit-identical to training it.
    dense_dir = str((study.path / DENSE_DIR).resolve()) if share_trunk and group <= 1 else None
    shared = _shared_trunks(runs) if dense_dir is not None else set()
    before = study.status()
    dense = {"trained": 0, "reused": 0}

    def counts() -> dict[str, Any]:
        return {
            "share_trunk": dense_dir is not None,
            "dense_trained": _count(before.get("dense_trained")) + dense["trained"],
            "dense_reused": _count(before.get("dense_reused")) + dense["reused"],
        }

    study.write_status(status="running", started=started, runs_total=len(runs), runs_complete=done, **counts())
    bar = progress_bar(
        total=len(runs),
        initial=done,
        desc=f"{description['kind']} {study.path.name}",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    tic = time.perf_counter()
    lock = threading.Lock()
    running: set[int] = set()
    failures: list[tuple[TrialSpec, str]] = []
    trials = [
        TrialSpec(
            str(study.run(entry["path"]).path.resolve()),
            entry["config"],
            i,
            f"{experiment} trial {entry['trial']}",
            dense_dir if entry["path"] in shared else None,
        )
        for i, (experiment, entry) in enumerate(pending)
    ]

    def postfix() -> None:
        if runner.name == "local" and group <= 1 and running:
            bar.set_postfix_str(trials[next(iter(running))].label)
        else:
            bar.set_postfix_str(f"{len(running)} running, {len(failures)} failed")

    class Tracker:
        def started(self, spec: TrialSpec) -> None:
            with lock:
                running.add(spec.index)
                postfix()

        def done(self, spec: TrialSpec, result: TrialResult) -> None:
            nonlocal done
            last = result.rounds[-1]
            with lock:
                running.discard(spec.index)
                done += 1
                dense["reused"] += result.reused_dense
                dense["trained"] += result.trained_dense
                bar.update(1)
                postfix()
                if progress:
                    if result.resumed_from is not None:
                        bar.write(f"{spec.label}: resumed from its checkpoint at round {result.resumed_from}")
                    bar.write(
                        f"{spec.label}: {100 * last['weights_remaining']:.2f}% of "
                        f"weights left, test accuracy {100 * last['test_accuracy_at_early_stop']:.2f}% at early stop"
                    )
                study.write_status(
                    status="running",
                    started=started,
                    runs_total=len(runs),
                    runs_complete=done,
                    vectorize=group,
                    backend=runner.name,
                    **counts(),
                )

        def failed(self, spec: TrialSpec, message: str) -> None:
            with lock:
                running.discard(spec.index)
                failures.append((spec, message))
                postfix()
                if progress:
                    bar.write(f"{spec.label}: failed: {message}")
                study.write_status(
                    status="running",
                    started=started,
                    runs_total=len(runs),
                    runs_complete=done,
                    runs_failed=len(failures),
                    vectorize=group,
                    backend=runner.name,
                    **counts(),
                )

    runner.run(trials, Tracker(), progress)
    bar.close()
    if failures:
        study.write_status(
            status="incomplete",
            started=started,
            runs_total=len(runs),
            runs_complete=done,
            runs_failed=len(failures),
            vectorize=group,
            backend=runner.name,
            **counts(),
        )
        spec, message = failures[0]
        raise LthError(
            f"{len(failures)} of {len(trials)} trials failed (first: {spec.label}: {message}); "
            f"fix the cause and run: lth resume {study.path}"
        )
    summary = study_summary(study)
    study.write_summary(summary)
    from lth.plots import plot_study

    plot_study(study)
    study.write_status(
        status="complete",
        started=started,
        finished=_now(),
        runs_total=len(runs),
        runs_complete=done,
        vectorize=group,
        backend=runner.name,
        seconds_this_session=round(time.perf_counter() - tic, 3),
        **counts(),
    )
    return StudyResult(study, summary, dense["trained"], dense["reused"], dense_dir is not None)


def _choose(
    backend: str | None, options: dict[str, Any] | None, vectorize: int | str, configs: list[TicketConfig]
) -> tuple[str, dict[str, Any]]:
    """The concrete backend for ``backend`` (``auto``: :func:`lth.backends.choose_backend`; an
    explicit ``vectorize`` of more than 1 asks for local, the backend that vectorises)."""
    from lth.backends import choose_backend

    size = parse_vectorize(vectorize)
    wanted = dict(options or {})
    if size is not None and size > 1:
        wanted["group"] = size
    gpu = torch.cuda.is_available() and any(c.device != "cpu" for c in configs)
    name, chosen = choose_backend(backend, wanted, trials=len(configs), gpu=gpu)
    chosen.pop("group", None)  # the local backend gets its group from vector_size
    return name, chosen


def _backend(name: str | None, options: dict[str, Any] | None, group: int) -> Any:
    from lth.backends import get_backend

    options = dict(options or {})
    if (name or "local").strip().lower() == "local":
        options["group"] = group
    return get_backend(name, **options)


def vector_size(vectorize: int | str, configs: list[TicketConfig]) -> int:
    """How many searches to run side by side: ``off`` = 1, a number, or ``auto``."""
    if not configs:
        return 1
    size = parse_vectorize(vectorize)
    precisions = sorted({c.precision for c in configs} - {"fp32"})
    if size is not None:
        if precisions and size > 1:
            raise LthError(f"--precision {precisions[0]} trains networks one at a time; use --vectorize off or auto")
        return min(size, len(configs))
    if precisions:
        return 1
    # auto: side by side on a GPU (up to 16) when the models allow it. Not on a CPU: there one
    # network's step already runs near the machine's limits, and the vectorised step measured
    # slower than K steps one after another (benchmarks/bench_vectorized.py, README).
    if not (torch.cuda.is_available() and configs[0].device != "cpu"):
        return 1
    from lth.data import DATASETS
    from lth.models import build_model

    for name in {c.model for c in configs}:
        source = DATASETS.get(configs[0].dataset)
        try:
            check_vectorizable(build_model(name, source.input_shape, source.num_classes, seed=0))
        except LthError:
            return 1
    return min(16, len(configs))


def study_summary(study: StudyDir) -> list[dict[str, Any]]:
    """Statistics over the finished trials of each experiment, per line of results: the ticket, its
    controls (``reinit``, ``random-prune``) and branches (``branch:NAME``), each line summarised
    when every trial with ticket rounds has it (:func:`~lth.experiments.statistics.summarise_lines`).
    Rows: ``experiment``, ``line``, ``round``, ``weights_remaining``, ``metric``, ``trials``, ``mean``, ..."""
    if study.study().get("kind") == PRUNE_AT_INIT:  # one line per method and ablation, a level per keep
        return summarise_study(study)
    rows: list[dict[str, Any]] = []
    for experiment in study.study()["experiments"]:
        trials = [study.run(r["path"]).lines() for r in experiment["runs"]]
        rows.extend({"experiment": experiment["name"], **row} for row in summarise_lines(trials))
    return rows


def _shared_trunks(runs: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """The paths of the study's runs whose round 0 another run (finished ones too) may share
    (:func:`lth.experiments.dense_trunk.trunk_signature`). The others are not given the store:
    they would only fill it (``lth robust``'s trials all differ in seed)."""
    from lth.experiments.dense_trunk import trunk_signature
    from lth.experiments.ticket_search import check_config

    groups: dict[str, list[str]] = {}
    for _, entry in runs:
        try:
            signature = trunk_signature(check_config(make_config(entry["config"])))
        except LthError:  # the trial itself will say what is wrong
            continue
        groups.setdefault(signature, []).append(entry["path"])
    return {path for paths in groups.values() if len(paths) > 1 for path in paths}


def _count(value: Any) -> int:
    """A count from an earlier status.json (0 when absent or not a whole number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _complete(run: RunDir) -> bool:
    return run.status().get("status") == "complete"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
