"""Instability analysis and linear mode connectivity (Frankle et al. 2020), as a resumable run.

For each level (a mask: the dense network, or a level of a finished ticket search) and each
rewind point k: the *parent* trains from the level's start to k once (under the mask, pruned
weights 0), then ``copies`` *children* train from the parent's weights at k to the end of the
budget, each with its own data order (seeded). The linear path between every pair of children
is evaluated at ``points`` evenly spaced points on the test set and on a fixed training subset
(:mod:`lth.training.interpolation`); the pair's *instability* (error barrier) is the maximum
error along the path minus the mean of its endpoints' errors, and likewise its loss barrier.
The network is *stable* at k when the mean test instability over pairs (and trials) is at most
``stable_threshold`` (2 percentage points: Frankle et al.'s threshold).

A run directory of kind ``stability`` holds ``stability.json`` (one entry per level and k: the
barriers' mean and spread, the mean path, every pair and child), ``stability.csv`` (one row
per trial, level, k, pair, alpha and split), the parents' and children's weights under
``weights/`` and the figures. It checkpoints between and inside trainings and resumes bit for
bit (``lth resume``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lth.config import TicketConfig, make_config, parse_duration, resolved
from lth.errors import LthError
from lth.experiments.branch_kinds import level_seed
from lth.masks import Mask
from lth.store import RunDir
from lth.store.lock import run_lock
from lth.store.ownership import created_and_locked
from lth.store.stability_rows import (  # noqa: F401  (re-exported)
    CSV_FIELDS,
    ROWS_CSV,
    ROWS_JSON,
    read_entries,
    write_rows,
)

KIND = "stability"  # the ``kind`` in a stability run's config.yaml
CHECKPOINT_FORMAT = "stability-1"
SPLITS = ("test", "train")


@dataclass(frozen=True)
class StabilitySettings:
    """What an instability analysis measures (the training recipe is the run's config).

    ``rewind``: rewind points as written (``0``, ``500it``, ``2ep``, a fraction of the budget);
    None: the level's start (iteration 0, or a ticket search's own rewind point).
    ``stable_threshold`` is a fraction (0.02 = 2 percentage points of error).
    """

    rewind: tuple[str, ...] | None = None
    copies: int = 2
    points: int = 31
    path_train_size: int = 10_000
    stable_threshold: float = 0.02
    batch_norm_reset: bool = True
    trials: int = 1
    levels: tuple[int, ...] | None = None

    def check(self) -> StabilitySettings:
        """LthError naming the first bad value."""

        def whole(value: Any, name: str, low: int, why: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LthError(f"{name} must be a whole number >= {low} ({why}), got {value!r}")

        whole(self.copies, "--copies", 2, "instability compares pairs of copies")
        whole(self.points, "--points", 2, "a path has two ends")
        whole(self.path_train_size, "--path-train-size", 1, "training examples to evaluate the path on")
        whole(self.trials, "--trials", 1, "independent repetitions")
        if self.copies > 64:
            raise LthError(f"--copies {self.copies} is too many; at most 64 (they make {self.copies} trainings per k)")
        if self.points > 10_001:
            raise LthError(f"--points {self.points} is too many; at most 10001")
        threshold = self.stable_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold <= 1
            or not math.isfinite(threshold)
        ):
            raise LthError(
                f"--stable-threshold must be between 0 and 100 percentage points, got "
                f"{threshold * 100 if isinstance(threshold, (int, float)) else threshold!r}"
            )
        if self.rewind is not None and not self.rewind:
            raise LthError("--rewind is empty; give rewind points like 0,500,2000")
        return self

    def as_dict(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["rewind"] = None if self.rewind is None else list(self.rewind)
        values["levels"] = None if self.levels is None else list(self.levels)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StabilitySettings:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("rewind", "levels"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)


def parse_rewind_points(text: str | Sequence[Any]) -> tuple[str, ...]:
    """``"0,500,2ep"`` or ``[0, "500it"]`` -> ("0", "500", "2ep") (checked later against the budget)."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p).strip() for p in text]
    if not parts or any(not p for p in parts):
        raise LthError(f"cannot read rewind points {text!r}; write them like 0,500,2000 (iterations), 2ep or 0.05")
    return tuple(parts)


def _pair_name(i: int, j: int) -> str:
    return f"{i}-{j}"


def _spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample std; 0 for one value)."""
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def pair_result(i: int, j: int, path: Any) -> dict[str, Any]:
    """One pair's path (a :class:`~lth.training.interpolation.PathResult`) with its barriers per split."""
    return {
        "pair": _pair_name(i, j),
        "alpha": path.alpha,
        "error": path.error,
        "loss": path.loss,
        **{f"instability_{s}": path.barrier(s) for s in SPLITS},
        **{f"loss_barrier_{s}": path.barrier(s, "loss") for s in SPLITS},
    }


_PAIR_KEYS = ("instability_test", "instability_train", "loss_barrier_test", "loss_barrier_train")


def summarise_pairs(
    level: int,
    weights_remaining: float,
    k: int,
    copies: int,
    pairs: list[dict[str, Any]],
    children: list[dict[str, Any]],
    threshold: float,
) -> dict[str, Any]:
    """The entry of one level and rewind point: each barrier's mean and sample std over ``pairs``
    (from :func:`pair_result`, with a ``trial`` key when there are trials), the mean path, the
    verdict (stable: mean test instability <= ``threshold``, a fraction), every pair and child."""
    entry: dict[str, Any] = {
        "level": level,
        "weights_remaining": weights_remaining,
        "rewind_iteration": k,
        "copies": copies,
        "trials": len({p.get("trial", 0) for p in pairs}),
        "pairs": len(pairs),
    }
    for key in _PAIR_KEYS:
        entry[key], entry[f"{key}_std"] = _spread([p[key] for p in pairs])
    alpha = pairs[0]["alpha"]
    entry["path"] = {
        "alpha": list(alpha),
        **{
            f"{split}_{what}": [math.fsum(p[what][split][i] for p in pairs) / len(pairs) for i in range(len(alpha))]
            for split in SPLITS
            for what in ("error", "loss")
        },
    }
    entry["stable"] = bool(entry["instability_test"] <= threshold)
    entry["stable_threshold"] = threshold
    entry["child_test_error"] = _spread([1 - c["final_test_accuracy"] for c in children])[0]
    entry["per_pair"] = [{key: p[key] for key in ("trial", "pair", *_PAIR_KEYS) if key in p} for p in pairs]
    entry["children"] = children
    return entry


# ---------------------------------------------------------------------------------- the analysis


@dataclass
class _Level:
    index: int
    mask: Mask | None  # None: dense (nothing is pruned)
    density: float
    start_iteration: int


@dataclass
class StabilityResult:
    """What :func:`run_stability` wrote: the entries of ``stability.json`` and the run directory."""

    entries: list[dict[str, Any]]
    run_dir: RunDir
    settings: StabilitySettings = field(default_factory=StabilitySettings)


class _Analysis:
    """One instability analysis as a resumable loop over its units of work (trainings and paths)."""

    def __init__(
        self,
        config: TicketConfig | None,
        settings: StabilitySettings,
        source: str | Path | None = None,
        progress: bool = True,
        leave: bool = True,
        workers: int | None = None,
    ) -> None:
        """``config``: the recipe (None with a ``source``: the ticket search's own); ``workers``: train
        the children of one k in that many local processes (None: in this process)."""
        from lth.experiments.ticket_search import check_config, optimizer_settings, resolve_device
        from lth.experiments.trunk import Trunk

        self.settings = settings.check()
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise LthError(f"--workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers
        self.trunk: Trunk | None = None
        if source is not None:
            self.trunk = Trunk(source)
            config = config or self.trunk.config
        assert config is not None
        self.config = config = check_config(config)
        self.device = resolve_device(config.device)
        self.progress, self.leave = progress, leave
        data = self.data
        self.ipe = data.train_x.shape[0] // config.batch_size
        if self.ipe < 1:
            raise LthError(
                f"batch size {config.batch_size} is larger than the training set ({data.train_x.shape[0]} examples)"
            )
        self.budget = config.budget_iterations(self.ipe)
        self.optimizer = optimizer_settings(config, self.ipe, self.budget)
        self.levels = self._levels()
        self.rewinds = self._rewinds()
        # The loop state: all of it goes into the checkpoint.
        self.done: list[str] = []
        self.children: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, list[dict[str, Any]]] = {}
        self.pending: tuple[str, Any] | None = None  # (unit, TrainProgress) of an interrupted training
        self.run: RunDir | None = None

    # -- setup ------------------------------------------------------------------------
    @cached_property
    def data(self) -> Any:
        from lth.data import shared_dataset

        return shared_dataset(self.config.dataset, data_dir=self.config.data_dir, device=self.device)

    def _levels(self) -> list[_Level]:
        wanted = self.settings.levels
        if self.trunk is None:
            if wanted not in (None, (0,)):
                raise LthError(
                    "--levels needs --from RUN (a ticket search); without it the dense network (level 0) is analysed"
                )
            return [_Level(0, None, 1.0, 0)]
        trunk = self.trunk
        available = trunk.levels()
        where = str(trunk.run.path)
        if not available:
            raise LthError(f"run {where!r} has no finished level with a mask (masks/round_NN.pt); nothing to analyse")
        wanted = wanted if wanted is not None else tuple(available)
        missing = [level for level in wanted if level not in available]
        if missing:
            from lth.experiments.branches import _ranges

            raise LthError(f"level {missing[0]} is not among the levels of {where!r} ({_ranges(available)})")
        levels = []
        for index in wanted:
            mask = trunk.level_mask(index)
            start = 0 if index == 0 else trunk.rewind_at
            levels.append(_Level(index, mask, mask.density(), start))
        return levels

    def _rewinds(self) -> list[int]:
        texts = self.settings.rewind or tuple(str(level.start_iteration) for level in self.levels)
        points = set()
        for text in texts:
            k = parse_duration(text, self.ipe, self.budget)
            if k >= self.budget:
                raise LthError(
                    f"rewind point {text!r} = iteration {k} is not before the end of training "
                    f"(budget {self.budget} iterations); give points below {self.budget}"
                )
            points.add(k)
        for level in self.levels:
            early = [k for k in points if k < level.start_iteration]
            if early:
                raise LthError(
                    f"rewind point {early[0]} is before level {level.index}'s start: the ticket search "
                    f"rewinds its levels to iteration {level.start_iteration}; give points from "
                    f"{level.start_iteration} on"
                )
        return sorted(points)

    def describe(self) -> dict[str, Any]:
        """The run's config.yaml: its training config, ``kind: stability`` and the analysis settings."""
        return {
            "kind": KIND,
            **self.config.model_dump(),
            "stability": {
                **self.settings.as_dict(),
                "rewind_iterations": self.rewinds,
                "budget": self.budget,
                "levels_used": [level.index for level in self.levels],
                "from": None if self.trunk is None else str(self.trunk.run.path.resolve()),
            },
        }

    # -- seeds --------------------------------------------------------------------------
    def trial_seed(self, trial: int) -> int:
        return self.config.seed + trial

    def child_seed(self, trial: int, copy: int) -> int:
        """The data-order seed of child ``copy`` (the same at every level and k of the trial)."""
        return level_seed(self.trial_seed(trial), "stability-child", copy)

    def child_dropout_seed(self, trial: int, level: int, k: int, copy: int) -> int:
        """The seed of the global generator (dropout) for child ``copy`` of ``level`` at ``k``."""
        return level_seed(self.trial_seed(trial), f"stability-dropout-L{level}-k{k}", copy)

    def start_state(self, trial: int, level: _Level) -> dict[str, Tensor]:
        if self.trunk is None:
            from lth.models import build_model

            data = self.data
            return build_model(
                self.config.model, data.input_shape, data.num_classes, seed=self.trial_seed(trial)
            ).state_dict()
        mask = level.mask
        assert mask is not None  # the levels of a trunk all have masks (see _levels)
        start = self.trunk.level_start(level.index, mask)
        return {k: v.mul(mask[k].to(v.dtype)) if k in mask else v for k, v in start.items()}

    # -- files --------------------------------------------------------------------------
    @staticmethod
    def _tag(trial: int, level: int, k: int, what: str) -> str:
        return f"t{trial:02d}_level{level:02d}_k{k}_{what}"

    # -- checkpoints --------------------------------------------------------------------
    def checkpoint(self, training: tuple[str, Any] | None = None) -> None:
        assert self.run is not None
        progress = None
        if training is not None:
            unit, state = training
            progress = {**state.portable(), "unit": unit}
        self.run.write_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "done": list(self.done),
                "children": self.children,
                "paths": self.paths,
                "torch_rng": torch.get_rng_state(),
                "training": progress,
            }
        )

    def restore(self, state: Any) -> None:
        from lth.documents import damaged
        from lth.training import TrainProgress

        assert self.run is not None
        if (
            not isinstance(state, dict)
            or state.get("format") != CHECKPOINT_FORMAT
            or not all(
                isinstance(state.get(key), kind) for key, kind in (("done", list), ("children", dict), ("paths", dict))
            )
        ):
            raise damaged(
                self.run.checkpoint_path, "it is not the checkpoint of a stability run", "the run cannot be resumed"
            )
        self.done, self.children, self.paths = list(state["done"]), dict(state["children"]), dict(state["paths"])
        torch.set_rng_state(state["torch_rng"])
        training = state.get("training")
        if training is not None:
            unit = training.pop("unit")
            self.pending = (unit, TrainProgress.restored(training, self.device))

    def _take_pending(self, unit: str) -> Any:
        if self.pending is not None and self.pending[0] == unit:
            progress, self.pending = self.pending[1], None
            return progress
        return None

    # -- the loop -------------------------------------------------------------------------
    def run_all(self) -> StabilityResult:
        from lth.experiments.ticket_search import _now

        run = self.run
        assert run is not None
        status = run.status()
        started = status.get("started") or _now()
        resumed = int(status.get("resumed", -1)) + 1 if status else 0
        run.write_config(self.describe())
        run.write_status(status="running", started=started, device=str(self.device), resumed=resumed)
        try:
            for trial in range(self.settings.trials):
                for level in self.levels:
                    self._parent(trial, level)
                    for k in self.rewinds:
                        self._children(trial, level, k)
                        self._path(trial, level, k)
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
        entries = self.write_results()
        run.write_status(status="complete", started=started, finished=_now(), device=str(self.device), resumed=resumed)
        run.remove_checkpoint()
        from lth.plots.stability import plot_stability_run

        plot_stability_run(run)
        return StabilityResult(entries, run, self.settings)

    def _trainer(self, seed: int, factory: Any = None) -> Any:
        from lth.training import Trainer

        config = self.config
        return (factory or Trainer)(
            self.data,
            resolved(config.batch_size, "batch_size"),
            self.optimizer,
            seed,
            config.eval_every,
            self.progress,
            self.leave,
            acceleration=config.acceleration(),
        )

    def _model(self) -> Any:
        from lth.models import build_model

        data = self.data
        return build_model(self.config.model, data.input_shape, data.num_classes, seed=self.config.seed).to(self.device)

    def _mask(self, level: _Level) -> Mask | None:
        return None if level.mask is None else level.mask.to(self.device)

    def _parent(self, trial: int, level: _Level) -> None:
        """Train from the level's start to the last rewind point once, saving the weights at every k."""
        unit = f"t{trial}/L{level.index}/parent"
        if unit in self.done:
            return
        run = self.run
        assert run is not None
        start = self.start_state(trial, level)
        last = max(self.rewinds)
        for k in self.rewinds:
            if k == level.start_iteration:
                run.save_weights(self._tag(trial, level.index, k, "parent"), start)
        if last > level.start_iteration:
            model = self._model()
            pending = self._take_pending(unit)
            if pending is None:
                model.load_state_dict(start)
                torch.manual_seed(level_seed(self.trial_seed(trial), "stability-dropout-parent", level.index))

            def capture(t: int, m: Any) -> None:
                if t in self.rewinds and t > level.start_iteration:
                    run.save_weights(self._tag(trial, level.index, t, "parent"), m.state_dict())

            self._trainer(self.trial_seed(trial)).train(
                model,
                self._mask(level),
                start=level.start_iteration,
                stop=last,
                capture=self.rewinds,
                on_capture=capture,
                description=f"parent level {level.index} to k={last}",
                checkpoint_every=self.config.checkpoint_every,
                on_checkpoint=lambda state: self.checkpoint((unit, state)),
                resume=pending,
            )
        self.done.append(unit)
        self.checkpoint()

    def _child_units(self, trial: int, level: _Level, k: int) -> list[tuple[int, str]]:
        return [(c, f"t{trial}/L{level.index}/k{k}/child{c}") for c in range(self.settings.copies)]

    def _side_by_side(self) -> bool:
        from lth.experiments.ticket_search import _vectorizable

        vectorize = self.config.vectorize
        wanted = vectorize != "off" and (vectorize != "auto" or self.device.type == "cuda")
        return (
            wanted and self.pending is None and self.config.acceleration().vectorizable and _vectorizable(self._model())
        )

    def _children(self, trial: int, level: _Level, k: int) -> None:
        run = self.run
        assert run is not None
        todo = [(c, unit) for c, unit in self._child_units(trial, level, k) if unit not in self.done]
        if not todo:
            return
        parent = run.load_weights(self._tag(trial, level.index, k, "parent"))
        mask = self._mask(level)

        def describe(c: int) -> str:
            return f"child {c + 1}/{self.settings.copies} level {level.index} k={k}"

        def finish(c: int, unit: str, model: Any, result: Any) -> None:
            if model is not None:  # (a worker process saved its child itself)
                run.save_weights(self._tag(trial, level.index, k, f"child{c}"), model.state_dict())
            self.children[unit] = {
                "trial": trial,
                "level": level.index,
                "rewind_iteration": k,
                "copy": c,
                "seed": self.child_seed(trial, c),
                "final_test_accuracy": result.final_test_accuracy,
                "final_test_loss": result.final_test_loss,
                "early_stop_iteration": result.early_stop_iteration,
                "test_accuracy_at_early_stop": result.test_accuracy_at_early_stop,
                "seconds": round(result.seconds, 3),
            }
            self.done.append(unit)

        if len(todo) > 1 and self.workers is not None and self.workers > 1 and self.pending is None:
            from lth.experiments.stability_workers import ChildJob, train_children

            jobs = [
                ChildJob(
                    config=self.config.model_dump(),
                    parent=str(run.weights_path(self._tag(trial, level.index, k, "parent"))),
                    mask=None if self.trunk is None else str(self.trunk.run.mask_path(level.index)),
                    out=str(run.weights_path(self._tag(trial, level.index, k, f"child{c}"))),
                    start=k,
                    stop=self.budget,
                    data_seed=self.child_seed(trial, c),
                    dropout_seed=self.child_dropout_seed(trial, level.index, k, c),
                )
                for c, _ in todo
            ]
            if self.progress:
                print(
                    f"level {level.index} k={k}: training {len(jobs)} children in {min(self.workers, len(jobs))} "
                    "processes"
                )
            for (c, unit), result in zip(todo, train_children(jobs, self.workers)):
                finish(c, unit, None, result)
            self.checkpoint()
            return
        if len(todo) > 1 and self._side_by_side():
            from lth.training.lockstep import Lockstep

            lockstep = Lockstep(len(todo), progress=self.progress)
            models = {}
            for c, _ in todo:
                models[c] = self._model()
                models[c].load_state_dict(parent)

            def job(c: int) -> Any:
                trainer = self._trainer(self.child_seed(trial, c), lockstep.trainer_factory())
                return lambda: trainer.train(models[c], mask, start=k, stop=self.budget, description=describe(c))

            results = lockstep.run([job(c) for c, _ in todo])
            for (c, unit), result in zip(todo, results):
                finish(c, unit, models[c], result)
            self.checkpoint()
            return
        for c, unit in todo:
            model = self._model()
            pending = self._take_pending(unit)
            if pending is None:
                model.load_state_dict(parent)
                torch.manual_seed(self.child_dropout_seed(trial, level.index, k, c))
            result = self._trainer(self.child_seed(trial, c)).train(
                model,
                mask,
                start=k,
                stop=self.budget,
                description=describe(c),
                checkpoint_every=self.config.checkpoint_every,
                on_checkpoint=lambda state, unit=unit: self.checkpoint((unit, state)),
                resume=pending,
            )
            finish(c, unit, model, result)
            self.checkpoint()

    @cached_property
    def path_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The test set and a fixed subset of the (unaugmented) training set."""
        data = self.data
        n = data.train_x.shape[0]
        size = min(self.settings.path_train_size, n)
        generator = torch.Generator().manual_seed(level_seed(self.config.seed, "stability-path-train", 0))
        index = torch.randperm(n, generator=generator)[:size].sort().values.to(data.train_x.device)
        return {"test": (data.test_x, data.test_y), "train": (data.train_x[index], data.train_y[index])}

    def _path(self, trial: int, level: _Level, k: int) -> None:
        from lth.training.interpolation import alphas, evaluate_path, has_batch_norm

        unit = f"t{trial}/L{level.index}/k{k}/path"
        if unit in self.done:
            return
        run = self.run
        assert run is not None
        model = self._model()
        children = [
            run.load_weights(self._tag(trial, level.index, k, f"child{c}")) for c in range(self.settings.copies)
        ]
        mask = None if level.mask is None else {name: m for name, m in level.mask.items()}
        splits = self.path_splits
        bn_data = splits["train"][0] if self.settings.batch_norm_reset and has_batch_norm(model) else None
        points = alphas(self.settings.points)
        pairs = []
        for i in range(len(children)):
            for j in range(i + 1, len(children)):
                pairs.append(
                    pair_result(i, j, evaluate_path(model, children[i], children[j], mask, points, splits, bn_data))
                )
        self.paths[unit] = pairs
        self.done.append(unit)
        self.checkpoint()
        self.write_results()
        if self.progress:
            mean = math.fsum(p["instability_test"] for p in pairs) / len(pairs)
            print(
                f"trial {trial} level {level.index} ({100 * level.density:.2f}% of weights) k={k}: "
                f"test instability {100 * mean:.2f} percentage points"
            )

    # -- results ----------------------------------------------------------------------------
    def entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(stability.json entries, stability.csv rows) of the paths evaluated so far."""
        entries, rows = [], []
        threshold = self.settings.stable_threshold
        for level in self.levels:
            for k in self.rewinds:
                pairs, children = [], []
                for trial in range(self.settings.trials):
                    for pair in self.paths.get(f"t{trial}/L{level.index}/k{k}/path", []):
                        pairs.append({"trial": trial, **pair})
                        for split in SPLITS:
                            for alpha, error, loss in zip(pair["alpha"], pair["error"][split], pair["loss"][split]):
                                rows.append(
                                    {
                                        "trial": trial,
                                        "level": level.index,
                                        "weights_remaining": level.density,
                                        "rewind_iteration": k,
                                        "pair": pair["pair"],
                                        "alpha": alpha,
                                        "split": split,
                                        "error": error,
                                        "loss": loss,
                                    }
                                )
                    children += [
                        self.children[unit] for _, unit in self._child_units(trial, level, k) if unit in self.children
                    ]
                if not pairs:
                    continue
                entry = summarise_pairs(level.index, level.density, k, self.settings.copies, pairs, children, threshold)
                entries.append(entry)
        return entries, rows

    def write_results(self) -> list[dict[str, Any]]:
        assert self.run is not None
        entries, rows = self.entries()
        write_rows(self.run, entries, rows)
        return entries


def is_stability_run(path: str | Path) -> bool:
    file = Path(path) / "config.yaml"
    if not file.is_file():
        return False
    try:
        return RunDir(path).config().get("kind") == KIND
    except LthError:
        return False


def run_stability(
    config: TicketConfig | None,
    settings: StabilitySettings = StabilitySettings(),
    from_run: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    leave: bool = True,
    overrides: dict[str, Any] | None = None,
    workers: int | None = None,
) -> StabilityResult:
    """Run an instability analysis into ``out`` (see the module docstring).

    Without ``from_run``: the dense network of ``config``. With it: that ticket search's levels
    (``settings.levels``, default all), with its own recipe (``overrides`` may change only
    :data:`FROM_OVERRIDABLE`; ``config`` is ignored). ``out`` defaults to ``FROM/stability``,
    else ``RUNS_ROOT/MODEL-DATASET-stability-TIMESTAMP``. Everything is checked before anything is
    written; an existing ``out`` is refused unless ``overwrite`` or ``resume``. ``workers``: train
    the children of each k in that many local processes (:mod:`lth.experiments.stability_workers`).
    """
    from lth.store.run_dir import runs_root

    if from_run is not None:
        config = None
    elif config is None:
        raise LthError("give MODEL DATASET, or a finished ticket search to analyse (--from RUN)")
    if from_run is not None:
        from lth.store.study_dir import StudyDir

        if StudyDir.is_study(from_run):
            raise LthError(
                f"--from {str(from_run)!r} is a study; give one of its trials, e.g. "
                f"{str(Path(from_run) / 'EXPERIMENT' / 'trial_00')!r} (`lth show {from_run}` lists them)"
            )
    if from_run is not None and not (Path(from_run) / "config.yaml").is_file():
        raise LthError(
            f"--from {str(from_run)!r} is not an lth run directory (no config.yaml); give a ticket "
            "search made by `lth find-ticket` or a trial of a study"
        )
    if from_run is not None and overrides:
        from lth.experiments.ticket_search import check_config
        from lth.experiments.trunk import Trunk

        _check_from_overrides(overrides)
        config = check_config(make_config({**Trunk(from_run).config.model_dump(), **overrides}))
    analysis = _Analysis(config, settings, from_run, progress, leave, workers)
    if out is None:
        if from_run is not None:
            out = Path(from_run) / "stability"
        else:
            c = analysis.config
            out = runs_root() / f"{c.model}-{c.dataset}-stability-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(out)
    if (out / "config.yaml").is_file() and not overwrite:
        if not resume:
            raise LthError(
                f"{str(out)!r} exists; continue it with --resume (or `lth resume {out}`) or replace it with --overwrite"
            )
        return resume_stability(out, progress, leave, workers)
    with created_and_locked(out, lambda: RunDir.create(out, overwrite=overwrite)) as run:
        analysis.run = run
        return analysis.run_all()


def resume_stability(
    path: str | Path, progress: bool = True, leave: bool = True, workers: int | None = None
) -> StabilityResult:
    """Continue an unfinished stability run from its last checkpoint (a finished one is returned as it is)."""
    run = RunDir.open(path)
    described = run.config()
    settings_values = described.get("stability")
    if described.get("kind") != KIND or not isinstance(settings_values, dict):
        raise LthError(f"{str(path)!r} is not a stability run directory")
    settings = StabilitySettings.from_dict(settings_values)
    with run_lock(run.path):
        if run.status().get("status") == "complete":
            return StabilityResult(read_entries(run), run, settings)
        config = make_config({k: v for k, v in described.items() if k in TicketConfig.model_fields})
        source = settings_values.get("from")
        if source is not None and not (Path(source) / "config.yaml").is_file():
            raise LthError(f"the ticket search this analysis reads, {source!r}, is gone; it cannot be resumed")
        analysis = _Analysis(config, settings, source, progress, leave, workers)
        analysis.run = run
        state = run.load_checkpoint()
        if state is not None:
            analysis.restore(state)
        run.remove_temporary_files()
        return analysis.run_all()


def stability(
    model: str | None = None,
    dataset: str | None = None,
    rewind: str | Sequence[Any] | None = None,
    copies: int = 2,
    points: int = 31,
    path_train_size: int = 10_000,
    stable_threshold: float = 2.0,
    batch_norm_reset: bool = True,
    trials: int = 1,
    levels: str | Sequence[int] | None = None,
    from_run: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    workers: int | None = None,
    **config: Any,
) -> Any:
    """Instability analysis as a pandas DataFrame: one row per level and rewind point.

    ``lth.stability("lenet-300-100", "fashion-mnist", rewind=[0, 500, 2000], iterations=5000)``
    analyses the dense network; ``lth.stability(from_run="runs/lenet", levels="0,5")`` a ticket
    search's levels. ``stable_threshold`` is in percentage points (as the CLI's); the instabilities
    in the frame are fractions (0.02 = 2 points). ``config``: training settings as in
    :class:`~lth.config.TicketConfig` (``iterations=...``, ``lr=...``, ``seed=...``). ``workers``:
    the children of each k train in that many local processes (a multi-core CPU). The frame's
    ``attrs["run_dir"]`` is the run directory; its ``path`` column holds the mean path.
    """
    from lth.experiments.branches import parse_levels

    if isinstance(levels, str):
        levels = parse_levels(levels)
    settings = StabilitySettings(
        rewind=None if rewind is None else parse_rewind_points(rewind if isinstance(rewind, str) else list(rewind)),
        copies=copies,
        points=points,
        path_train_size=path_train_size,
        stable_threshold=_threshold_fraction(stable_threshold),
        batch_norm_reset=batch_norm_reset,
        trials=trials,
        levels=None if levels is None else tuple(sorted(set(int(v) for v in levels))),
    )
    values = {k: v for k, v in config.items() if v is not None}
    ticket_config = None
    if from_run is None:
        if model is None or dataset is None:
            raise LthError("give a model and a dataset, or a ticket search to analyse (from_run=RUN)")
        ticket_config = make_config({"model": model, "dataset": dataset, **values})
    elif model is not None or dataset is not None:
        raise LthError("from_run analyses that run's model and dataset; do not give a model or dataset too")
    result = run_stability(
        ticket_config, settings, from_run, out, overwrite, resume, progress, overrides=values, workers=workers
    )
    return entries_frame(result.entries, result.run_dir.path)


FROM_OVERRIDABLE = ("device", "data_dir", "eval_every", "checkpoint_every", "vectorize")


def _check_from_overrides(values: dict[str, Any]) -> None:
    bad = [key for key in values if key not in FROM_OVERRIDABLE]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in FROM_OVERRIDABLE)
        raise LthError(
            f"--{bad[0].replace('_', '-')} cannot change the recipe of the ticket search given by --from "
            f"(the analysis uses the run's own); it may change: {flags}"
        )


def _threshold_fraction(points: Any) -> float:
    """A threshold in percentage points as a fraction (LthError for a bad value)."""
    if (
        isinstance(points, bool)
        or not isinstance(points, (int, float))
        or not math.isfinite(points)
        or not 0 <= points <= 100
    ):
        raise LthError(f"--stable-threshold must be between 0 and 100 percentage points, got {points!r}")
    return float(points) / 100


def entries_frame(entries: list[dict[str, Any]], run_dir: Path | None = None) -> Any:
    """The entries of ``stability.json`` as a DataFrame (per-pair and per-child lists left out)."""
    import pandas as pd

    columns = [
        "level",
        "weights_remaining",
        "rewind_iteration",
        "copies",
        "trials",
        "pairs",
        "instability_test",
        "instability_test_std",
        "instability_train",
        "instability_train_std",
        "loss_barrier_test",
        "loss_barrier_test_std",
        "loss_barrier_train",
        "loss_barrier_train_std",
        "child_test_error",
        "stable",
        "path",
    ]
    frame = pd.DataFrame([{key: entry.get(key) for key in columns} for entry in entries], columns=columns)
    if run_dir is not None:
        frame.attrs["run_dir"] = str(run_dir)
    return frame
