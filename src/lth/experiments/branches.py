"""Branches: ablations run off a finished (or resumed) ticket search, without repeating it.

For each chosen level (pruning round) of a trunk run, a branch takes the level's mask and
starting weights, changes one thing (its *kind*, one function in :data:`BRANCH_KINDS`) and
trains the result with the trunk's recipe, or with overridden hyper-parameters, or on another
dataset of the same input shape. It writes ``TRUNK/branches/NAME/`` in the layout of a run
(``rounds.json`` with one row per level, ``round`` = the level; ``metrics.csv``; ``masks/``;
``weights/start_round_NN.pt`` and ``final_round_NN.pt``), is indexed in the runs store and
resumes after a kill bit for bit (``lth resume``).

A branch's randomness (fresh weights, random masks, permutations) comes from its seed, its kind
and the level alone; its data order is the trunk's. So a ``retrain`` branch without overrides
reproduces the trunk's rounds bit for bit (dropout layers draw from a generator seeded per level,
so models with dropout differ there).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lth.config import TicketConfig, make_config, resolved
from lth.data import DATASETS, shared_dataset
from lth.errors import LthError
from lth.experiments.branch_kinds import BRANCH_KINDS, BranchLevel, level_seed
from lth.experiments.trunk import Trunk
from lth.masks import Mask
from lth.store import RunDir
from lth.store.lock import run_lock
from lth.store.ownership import created_and_locked

KIND = "branch"  # the ``kind`` in a branch's config.yaml
CHECKPOINT_FORMAT = "branch-1"
#: The training settings a branch may change; everything else is the trunk's.
OVERRIDABLE: tuple[str, ...] = (
    "dataset",
    "data_dir",
    "iterations",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "milestones",
    "gamma",
    "warmup",
    "eval_every",
    "checkpoint_every",
    "device",
    "precision",
    "compile",
    "channels_last",
)
_SCOPED = ("random-prune", "one-shot")  # the kinds that take --scope
_UNNAMED = ("model", "data_dir", "device", "checkpoint_every")  # settings that do not name a branch


# ---------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class BranchSpec:
    """What a branch does: its kind, levels (None: all), seed (None: the trunk's), scope (None: the
    trunk's) and training overrides."""

    kind: str
    levels: tuple[int, ...] | None = None
    seed: int | None = None
    scope: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def check(self) -> BranchSpec:
        """LthError for an unknown kind, a bad scope or an override a branch may not change."""
        BRANCH_KINDS.get(self.kind)
        if self.scope is not None:
            if self.scope not in ("layerwise", "global"):
                raise LthError(f"unknown scope {self.scope!r}; choose layerwise or global")
            if self.kind not in _SCOPED:
                raise LthError(f"--scope applies to the {' and '.join(_SCOPED)} branches, not to {self.kind}")
        for key in self.overrides:
            if key == "model":
                continue  # checked against the trunk
            if key not in OVERRIDABLE:
                flags = ", ".join("--" + k.replace("_", "-") for k in OVERRIDABLE)
                raise LthError(
                    f"a branch cannot change --{key.replace('_', '-')} (it is the trunk's); it may change: {flags}"
                )
        if self.seed is not None:
            from lth.config import check_seed

            check_seed(self.seed, "--seed")
        return self

    def name(self) -> str:
        """The branch's directory name: its kind and options, e.g. ``retrain-lr-0.01-optimizer-sgd``."""
        parts = [self.kind]
        if self.scope is not None:
            parts.append(self.scope)
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        for key in sorted(k for k in self.overrides if k not in _UNNAMED):
            value = self.overrides[key]
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key.replace('_', '-')}-{text}")
        name = re.sub(r"[^\w.-]+", "_", "-".join(parts)).strip("._") or self.kind
        if len(name) > 100:  # keep names short; the full spec is in the branch's config.yaml
            name = f"{name[:90]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        return name

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "levels": None if self.levels is None else list(self.levels),
            "seed": self.seed,
            "scope": self.scope,
            "overrides": dict(self.overrides),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BranchSpec:
        levels = values.get("levels")
        return cls(
            values["kind"],
            None if levels is None else tuple(levels),
            values.get("seed"),
            values.get("scope"),
            dict(values.get("overrides") or {}),
        )


def parse_levels(text: str) -> tuple[int, ...]:
    """``"0-3,7"`` -> (0, 1, 2, 3, 7); LthError for anything else."""
    levels: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise LthError(f"cannot read levels {text!r}; write levels like 0-3,7 (rounds of the trunk)")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise LthError(f"level range {part!r} runs backwards; write {high}-{low}")
        if high - low > 100_000:
            raise LthError(f"level range {part!r} is too long")
        levels.extend(range(low, high + 1))
    return tuple(sorted(set(levels)))


def _branch_config(trunk: Trunk, spec: BranchSpec, name: str) -> TicketConfig:
    """The trunk's resolved config with the overrides (LthError for one that changes the model)."""
    from lth.experiments.ticket_search import check_config

    config = trunk.config
    overrides = dict(spec.overrides)
    model = overrides.pop("model", None)
    if model is not None and model != config.model:
        raise LthError(f"--model {model} would change the model; a branch trains the trunk's model ({config.model})")
    if "dataset" in overrides and overrides["dataset"] != config.dataset:
        new, old = DATASETS.get(overrides["dataset"]), DATASETS.get(config.dataset)
        if (tuple(new.input_shape), new.num_classes) != (tuple(old.input_shape), old.num_classes):
            raise LthError(
                f"--dataset {overrides['dataset']} has inputs of shape {tuple(new.input_shape)} and "
                f"{new.num_classes} classes; the trunk's model was built for {config.dataset}: "
                f"{tuple(old.input_shape)} and {old.num_classes} classes"
            )
        if "data_dir" not in overrides:
            overrides["data_dir"] = None
    values = config.model_dump()
    if "iterations" in overrides:
        values["epochs"] = None
    if "epochs" in overrides:
        values["iterations"] = None
    values.update(overrides)
    values.update(controls=[], log=[], name=name)
    try:
        return check_config(make_config(values))
    except LthError as error:
        raise LthError(f"branch {name}: {error}") from None


# ---------------------------------------------------------------------------------- running


@dataclass
class BranchResult:
    """One branch's per-level rows (as in its ``rounds.json``) and where it lives."""

    name: str
    spec: BranchSpec
    rounds: list[dict]
    run_dir: RunDir


class _Branch:
    """One branch as a resumable loop over its levels (state: the rows so far and an interrupted training)."""

    def __init__(
        self, trunk: Trunk, spec: BranchSpec, progress: bool, leave: bool = True, name: str | None = None
    ) -> None:
        from lth.experiments.ticket_search import resolve_device

        self.trunk, self.spec = trunk, spec.check()
        self.name = name or spec.name()
        available = trunk.levels()
        if not available:
            raise LthError(f"run {str(trunk.run.path)!r} has not finished any round yet; nothing to branch off")
        wanted = spec.levels if spec.levels is not None else tuple(available)
        missing = [level for level in wanted if level not in available]
        if missing:
            raise LthError(
                f"level {missing[0]} is not among the levels of {str(trunk.run.path)!r} ({_ranges(available)})"
            )
        self.levels = list(wanted)
        trunk.check_stored(self.levels, spec.kind)
        self.config = _branch_config(trunk, spec, self.name)
        self.seed = trunk.config.seed if spec.seed is None else spec.seed
        self.scope = spec.scope or trunk.config.scope or "layerwise"
        self.device = resolve_device(self.config.device)
        self.progress, self.leave = progress, leave
        self.rows: list[dict] = []
        self.metrics: list[dict] = []
        self.pending: Any = None  # an interrupted training (TrainProgress) of the next level
        self.run: RunDir | None = None
        if self.levels and self.levels != [0] and trunk.rewind_at >= self._budget():
            raise LthError(
                f"the trunk rewinds to iteration {trunk.rewind_at}, which is not before the end of this "
                f"branch's training ({self._budget()} iterations); give a longer --iterations"
            )

    def _budget(self) -> int:
        return self.config.budget_iterations(self.data.train_x.shape[0] // self.config.batch_size)

    @cached_property
    def data(self) -> Any:
        config = self.config
        return shared_dataset(config.dataset, data_dir=config.data_dir, device=self.device)

    def describe(self) -> dict[str, Any]:
        """The branch's config.yaml: its training config, ``kind: branch`` and the branch spec."""
        return {
            "kind": KIND,
            **self.config.model_dump(),
            "branch": {**self.spec.as_dict(), "trunk": "../..", "seed_used": self.seed, "scope_used": self.scope},
        }

    def prepare(self, level: int) -> tuple[Mask, dict[str, Tensor]]:
        trunk = self.trunk
        mask = trunk.level_mask(level)
        generator = torch.Generator().manual_seed(level_seed(self.seed, self.spec.kind, level))
        state = BranchLevel(
            level,
            mask,
            trunk.level_start(level, mask),
            trunk.level_rewind(level),
            generator,
            self.seed,
            self.scope,
            trunk,
        )
        return BRANCH_KINDS.get(self.spec.kind)(state)

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self, training: Any = None) -> None:
        assert self.run is not None
        self.run.write_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "rows": self.rows,
                "metrics": self.metrics,
                "torch_rng": torch.get_rng_state(),
                "training": None if training is None else training.portable(),
            }
        )

    def restore(self, state: dict[str, Any]) -> None:
        from lth.training import TrainProgress

        problem = None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            problem = "it is not a branch checkpoint"
        elif not isinstance(state.get("rows"), list) or not isinstance(state.get("metrics"), list):
            problem = "it lacks the rows of the finished levels"
        if problem:
            from lth.documents import damaged

            assert self.run is not None  # a checkpoint is read from the branch's run directory
            raise damaged(self.run.checkpoint_path, problem, "the branch cannot be resumed")
        self.rows, self.metrics = list(state["rows"]), list(state["metrics"])
        torch.set_rng_state(state["torch_rng"])
        training = state.get("training")
        if training is not None:
            self.pending = TrainProgress.restored(training, self.device)

    # -- the loop -----------------------------------------------------------------------
    def run_all(self) -> BranchResult:
        from lth.experiments.ticket_search import _now, optimizer_settings
        from lth.models import build_model
        from lth.plots import plot_run
        from lth.training import Trainer

        run, config, data = self.run, self.config, self.data
        assert run is not None
        status = run.status()
        started = status.get("started") or _now()
        resumed = int(status.get("resumed", -1)) + 1 if status else 0
        run.write_config(self.describe())
        run.write_status(status="running", started=started, device=str(self.device), resumed=resumed)
        budget = self._budget()
        ipe = data.train_x.shape[0] // config.batch_size
        trainer = Trainer(
            data,
            resolved(config.batch_size, "batch_size"),
            optimizer_settings(config, ipe, budget),
            config.seed,
            config.eval_every,
            self.progress,
            self.leave,
            acceleration=config.acceleration(),
        )
        model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed).to(self.device)
        done = {row["round"] for row in self.rows}
        try:
            for level in self.levels:
                if level in done:
                    continue
                mask, start = self.prepare(level)
                pending, self.pending = self.pending, None
                if pending is None:
                    model.load_state_dict(start)
                    run.save_weights(f"start_round_{level:02d}", start)
                    torch.manual_seed(level_seed(self.seed, "dropout", level))
                mask = mask.to(self.device)
                result = trainer.train(
                    model,
                    mask,
                    start=0 if level == 0 else self.trunk.rewind_at,
                    stop=budget,
                    description=f"{self.name} level {level}",
                    postfix={"kept": f"{mask.density():.4f}"},
                    zero_pruned=False,
                    checkpoint_every=config.checkpoint_every,
                    on_checkpoint=self.checkpoint,
                    resume=pending,
                )
                self.rows.append(result.row(level, mask))
                self.metrics.extend({"round": level, **row} for row in result.metrics)
                run.save_mask(level, mask.cpu())
                run.save_weights(f"final_round_{level:02d}", model.state_dict())
                run.write_metrics(self.metrics)
                run.write_rounds(self.rows)
                self.checkpoint()
        except LthError as error:
            run.write_status(
                status="failed",
                error=str(error),
                started=started,
                stopped=_now(),
                device=str(self.device),
                resumed=resumed,
            )
            raise
        run.write_status(status="complete", started=started, finished=_now(), device=str(self.device), resumed=resumed)
        run.remove_checkpoint()
        plot_run(run)
        return BranchResult(self.name, self.spec, self.rows, run)


def _ranges(levels: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, level in enumerate(levels):
        if start is None:
            start = level
        if i + 1 == len(levels) or levels[i + 1] != level + 1:
            parts.append(str(start) if start == level else f"{start}-{level}")
            start = None
    return ", ".join(parts)


def branch_run(
    trunk_path: str | Path,
    spec: BranchSpec,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    leave: bool = True,
    name: str | None = None,
) -> BranchResult:
    """Run the branch ``spec`` off the ticket search in ``trunk_path`` into ``trunk_path/branches/NAME``
    (``name``: default the spec's own, :meth:`BranchSpec.name`).

    Everything is checked before anything is written. An existing branch of that name is refused
    unless ``overwrite`` (replace it) or ``resume`` (continue it if unfinished; return it if done).
    """
    trunk = Trunk(trunk_path)
    branch = _Branch(trunk, spec, progress, leave, name)
    out = trunk.run.branch(branch.name).path
    if (out / "config.yaml").is_file() and not overwrite:
        if not resume:
            raise LthError(
                f"branch {str(out)!r} exists; continue it with --resume (or `lth resume {out}`) "
                "or replace it with --overwrite"
            )
        return resume_branch(out, progress, leave)
    with created_and_locked(out, lambda: RunDir.create(out, overwrite=overwrite)) as run:
        branch.run = run
        result = branch.run_all()
    from lth.plots import plot_run

    plot_run(trunk.run)  # the trunk's figures show its branches
    return result


def is_branch(path: str | Path) -> bool:
    """Is ``path`` a branch run directory?"""
    file = Path(path) / "config.yaml"
    if not file.is_file():
        return False
    try:
        return RunDir(path).config().get("kind") == KIND
    except LthError:
        return False


def resume_branch(path: str | Path, progress: bool = True, leave: bool = True) -> BranchResult:
    """Continue an unfinished branch from its last checkpoint (a finished one is returned as it is)."""
    run = RunDir.open(path)
    described = run.config()
    if described.get("kind") != KIND or not isinstance(described.get("branch"), dict):
        raise LthError(f"{str(path)!r} is not a branch run directory")
    spec = BranchSpec.from_dict(described["branch"])
    with run_lock(run.path):
        if run.status().get("status") == "complete":
            return BranchResult(run.path.name, spec, run.rounds(), run)
        branch = _Branch(Trunk(run.path.parent.parent), spec, progress, leave, run.path.name)
        branch.run = run
        state = run.load_checkpoint()
        if state is not None:
            branch.restore(state)
        run.remove_temporary_files()
        return branch.run_all()


def branch(
    path: str | Path,
    kind: str,
    levels: str | list[int] | None = None,
    seed: int | None = None,
    scope: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> BranchResult | list[BranchResult]:
    """Run a branch of ``kind`` off the ticket search (or every trial of the study) in ``path``.

    ``levels``: ``"0-3,7"`` or a list (default: every level the trunk has); ``seed``: the
    branch's randomness (default: the trunk's seed; a study's trial i uses ``seed + i``);
    ``scope``: ``layerwise`` or ``global`` for random-prune and one-shot (default: the trunk's);
    ``overrides``: training settings (:data:`OVERRIDABLE`), e.g. ``lr=0.01, optimizer="sgd"``.
    Returns the branch's result, or for a study one per trial (its summary then has the branch).
    """
    if isinstance(levels, str):
        levels = list(parse_levels(levels))
    spec = BranchSpec(
        kind,
        None if levels is None else tuple(sorted(set(levels))),
        seed,
        scope,
        {k: v for k, v in overrides.items() if v is not None},
    ).check()
    from lth.store.study_dir import StudyDir

    if StudyDir.is_study(path):
        return branch_study(path, spec, overwrite, resume, progress)
    return branch_run(path, spec, overwrite, resume, progress)


def branch_study(
    path: str | Path, spec: BranchSpec, overwrite: bool = False, resume: bool = False, progress: bool = True
) -> list[BranchResult]:
    """The branch on every trial of a study (trial i's seed: ``spec.seed + i``, else its own), then the
    study's summary and plots again with the branch as a line of its own (``branch:NAME``)."""
    from lth.experiments.study import study_summary
    from lth.plots import plot_study
    from lth.store.study_dir import StudyDir

    study = StudyDir.open(path)
    name = spec.name()
    with run_lock(study.path):
        trials = [(e["name"], r) for e in study.study()["experiments"] for r in e["runs"]]
        specs = []
        for _, entry in trials:  # check every trial before training anything
            seed = None if spec.seed is None else spec.seed + entry["trial"]
            trial_spec = BranchSpec(spec.kind, spec.levels, seed, spec.scope, spec.overrides)
            trunk = Trunk(study.run(entry["path"]).path)
            _Branch(trunk, trial_spec, progress, name=name)
            out = trunk.run.branch(name).path
            if (out / "config.yaml").is_file() and not (overwrite or resume):
                raise LthError(f"branch {str(out)!r} exists; continue it with --resume or replace it with --overwrite")
            specs.append(trial_spec)
        results = []
        for (experiment, entry), trial_spec in zip(trials, specs):
            result = branch_run(
                study.run(entry["path"]).path, trial_spec, overwrite, resume, progress, leave=False, name=name
            )
            results.append(result)
            if progress:
                last = result.rounds[-1]
                print(
                    f"{experiment} trial {entry['trial']}: {name} at {100 * last['weights_remaining']:.2f}% "
                    f"of weights: test accuracy {100 * last['test_accuracy_at_early_stop']:.2f}% at early stop"
                )
        study.write_summary(study_summary(study))
        plot_study(study)
    return results
