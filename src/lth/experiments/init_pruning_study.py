"""A pruning-at-initialisation study: every (method, fraction kept, ablation) over N trials.

Each run is an ordinary find-ticket run of round 0 only, with ``prune_at_init`` set: the network
is pruned at initialisation (:mod:`lth.init_pruning`), the ablation applied, and the pruned
network trained with the model's recipe. The study (``lth prune-at-init``) is a study directory
like ``lth session``'s, so it is indexed, resumable and runs on every backend; its statistics
are grouped per method (one line per method, its ablations as further lines, one level per
fraction kept) so that the figure draws accuracy against weights remaining, method by method,
and overlays IMP runs given with ``compare``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lth.config import TicketConfig, make_config
from lth.errors import LthError
from lth.experiments.init_pruning_summary import (  # noqa: F401  (re-exported)
    KIND,
    collapsed_runs,
    line_name,
    summarise_study,
)
from lth.experiments.limits import check_run_count, check_trials, format_count
from lth.experiments.session_spec import Experiment
from lth.init_pruning.ablations import ABLATIONS
from lth.init_pruning.prune import METHOD_NAMES, needs_data
from lth.store.study_dir import compare_sources  # noqa: F401  (re-exported)


def _split(text: str | Sequence[Any]) -> list[str]:
    if isinstance(text, str):
        return [part.strip() for part in text.split(",") if part.strip()]
    return [str(part).strip() for part in text]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``synflow,snip`` (or ``all``) as a list of known methods; LthError naming a bad one."""
    names = _split(text)
    if names == ["all"]:
        return list(METHOD_NAMES)
    if not names:
        raise LthError(f"--method needs at least one method; choose from {', '.join(METHOD_NAMES)} (or all)")
    for name in names:
        if name not in METHOD_NAMES:
            raise LthError(f"unknown pruning-at-init method {name!r}; choose from {', '.join(METHOD_NAMES)} (or all)")
    return list(dict.fromkeys(names))


def parse_keeps(text: str | Sequence[Any]) -> list[float]:
    """``0.1,0.03`` as fractions kept, each in (0, 1], largest first; LthError naming a bad one."""
    parts = _split(text)
    if not parts:
        raise LthError("--keep needs at least one fraction of the weights to keep, in (0, 1], e.g. 0.1,0.01")
    keeps = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise LthError(f"--keep {part!r} is not a number; give fractions kept in (0, 1], e.g. 0.1,0.01") from None
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise LthError(f"--keep {part} is outside (0, 1]; give the fraction of the weights kept, e.g. 0.1 for 10%")
        keeps.append(value)
    return sorted(dict.fromkeys(keeps), reverse=True)


def parse_ablations(text: str | Sequence[str]) -> list[str]:
    """``none,shuffle`` as a list of ablations (``none``: the method's own mask)."""
    names = _split(text) or ["none"]
    for name in names:
        if name not in ABLATIONS:
            raise LthError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
    return list(dict.fromkeys(names))


def experiment_slug(method: str, keep: float, ablation: str) -> str:
    return f"{method}-keep{keep:g}" + ("" if ablation == "none" else f"-{ablation}")


def build_experiments(
    base: dict[str, Any],
    methods: Sequence[str],
    keeps: Sequence[float],
    ablations: Sequence[str],
    trials: int,
    max_runs: int | None = None,
) -> list[Experiment]:
    """One experiment per (method, keep, ablation), each of ``trials`` runs with seeds seed + i.

    ``base``: the config keys shared by every run (model, dataset, training recipe, scope...);
    rounds is 0 (train the pruned network once). LthError before anything is built for a bad
    value, or more runs than ``max_runs``.
    """
    from lth.experiments.ticket_search import check_config

    check_trials(trials, "--trials")
    cells = [(m, k, a) for m in methods for a in ablations for k in keeps]
    check_run_count(
        len(cells) * trials,
        max_runs,
        f"{len(methods)} methods x {len(keeps)} keeps x {len(ablations)} ablations x --trials "
        f"{format_count(trials)} gives ",
        "--max-runs {n}",
    )
    if base.get("rounds") not in (None, 0):
        raise LthError(
            f"rounds ({base['rounds']}) is not an option of a pruning-at-init study: each run trains the "
            "network pruned at initialisation once; for IMP rounds after it use find-ticket --prune-at-init"
        )
    values = {"scope": "global", **base, "rounds": 0}
    if values.get("score_batches") is not None and not any(needs_data(m) for m in methods):
        raise LthError(
            f"--score-batches applies to snip and grasp, which score with data; {', '.join(methods)} "
            f"need{'s' * (len(methods) == 1)} none"
        )
    for key in ("prune_at_init", "init_keep", "init_ablation", "one_shot", "keep", "init_mask", "controls"):
        if values.get(key) not in (None, False, [], "none"):
            raise LthError(
                f"{key.replace('_', '-')} is not an option of a pruning-at-init study; "
                "give --method, --keep and --ablation instead"
            )
        values.pop(key, None)
    seed = int(values.get("seed") or 0)
    study_name = values.pop("name", None) or KIND
    experiments: list[Experiment] = []
    for method, keep, ablation in cells:
        slug = experiment_slug(method, keep, ablation)
        settings = {"method": method, "keep": keep, "ablation": ablation}
        configs = []
        for i in range(trials):
            cell = {
                **values,
                "prune_at_init": method,
                "init_keep": keep,
                "init_ablation": ablation,
                "seed": seed + i,
                "name": f"{study_name}/{slug}/trial_{i:02d}",
            }
            if not needs_data(method):
                cell.pop("score_batches", None)
            configs.append(make_config(cell))
        if not experiments:
            check_prunable(check_config(configs[0]))
        else:
            check_config(configs[0])
        name = f"{method} keep={keep:g}" + ("" if ablation == "none" else f" {ablation}")
        experiments.append(Experiment(name=name, slug=slug, settings=settings, trials=tuple(configs)))
    return experiments


def check_prunable(config: TicketConfig) -> None:
    """LthError when ``config``'s model has nothing to prune (e.g. every layer in ``ignore_layers``)."""
    from lth.data import DATASETS
    from lth.models import build_model
    from lth.pruning import prunable_parameters

    source = DATASETS.get(config.dataset)
    model = build_model(config.model, source.input_shape, source.num_classes, seed=0)
    if not prunable_parameters(model, config.prune_biases, config.ignore_layers):
        raise LthError(
            f"model {config.model!r} has no prunable layers left (--ignore-layers "
            f"{','.join(config.ignore_layers) or 'none'}): pruning at initialisation needs Linear or "
            "Conv weights to prune"
        )


def check_compare(paths: Sequence[str]) -> list[str]:
    """The IMP runs or studies to draw beside the study, checked to exist (absolute paths)."""
    from lth.store import RunDir
    from lth.store.study_dir import StudyDir

    out = []
    for path in paths:
        if not (StudyDir.is_study(path) or (Path(path) / "config.yaml").is_file()):
            raise LthError(f"--compare {path!r} is not an lth run or study directory (no config.yaml or study.yaml)")
        if not StudyDir.is_study(path):
            RunDir.open(path)
        out.append(str(Path(path).resolve()))
    return out


def run_prune_at_init(
    base: dict[str, Any],
    methods: Sequence[str],
    keeps: Sequence[float],
    ablations: Sequence[str] = ("none",),
    trials: int = 1,
    out: str | Path = "",
    compare: Sequence[str] = (),
    name: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    max_runs: int | None = None,
) -> Any:
    """Run (or continue) a pruning-at-initialisation study into ``out``; returns its
    :class:`~lth.experiments.study.StudyResult`."""
    from lth.experiments.study import run_study

    experiments = build_experiments(base, methods, keeps, ablations, trials, max_runs)
    spec = {
        "base": {k: v for k, v in base.items() if v is not None},
        "methods": list(methods),
        "keeps": list(keeps),
        "ablations": list(ablations),
        "trials": trials,
        "compare": check_compare(compare),
    }
    vectorize = str(base.get("vectorize") or "auto")
    return run_study(
        KIND,
        experiments,
        out,
        spec,
        name=name,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        vectorize=vectorize,
        backend=backend,
        backend_options=backend_options,
    )
