"""Checks of a :class:`~lth.experiments.lottery_model.LotteryModel`'s model, data and arguments.

Each check raises LthError with one clear line naming the first bad value. Also here: the fresh
draws of weights (``reinit``), which parameters are pruned and the training budget, all worked
out from the settings before anything trains.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lth.actions import Mask1Options, validate_actions
from lth.config import MAX_ITERATIONS, SEED_RANGE, check_budget
from lth.criteria import CRITERIA
from lth.data import DataBundle
from lth.errors import LthError, TrainingDiverged, warn
from lth.experiments.lottery_settings import Initializer, LotterySettings, is_int, is_number
from lth.global_rng import GLOBAL_RNG_LOCK
from lth.models.init import INITIALIZERS
from lth.pruning import prunable_parameters

#: Training budget when neither ``iterations`` nor ``epochs`` is given.
DEFAULT_ITERATIONS = 1000
SCOPES = ("layerwise", "global")


def short_error(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def listing(names: Sequence[str], limit: int = 30) -> str:
    """``names`` joined by commas, the first ``limit`` of them and a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def is_whole(value: Any) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def diverged_in_round(error: TrainingDiverged, what: str, round_index: int) -> TrainingDiverged:
    """``error`` reworded to say that ``what`` diverged in round ``round_index``."""
    return TrainingDiverged(
        error.iteration,
        error.loss,
        error.start,
        error.network,
        message=f"{what} diverged in round {round_index} at iteration {error.iteration} "
        f"(loss {error.loss}); {error.hint('lr')}",
    )


def check_scope(scope: str) -> None:
    """LthError unless ``scope`` is layerwise or global."""
    if scope not in SCOPES:
        raise LthError(f"unknown scope {scope!r}; choose layerwise or global")


# ------------------------------------------------------------------ model and data


def owner(name: str) -> str:
    """The name of the module holding parameter ``name`` ("" for the root module)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def check_resettable(module: nn.Module, names: Sequence[str]) -> None:
    """LthError unless every parameter in ``names`` belongs to a module with ``reset_parameters()``."""
    modules = dict(module.named_modules())
    for name in names:
        holder = modules[owner(name)]
        if not callable(getattr(holder, "reset_parameters", None)):
            where = f"module {owner(name)!r}" if owner(name) else "the root module"
            raise LthError(
                f"parameter {name!r} belongs to {where} ({type(holder).__name__}), which has no reset_parameters() "
                "to draw fresh weights; pass initializer=callable(module) (or a model factory)"
            )


def fresh_initialisation(module: nn.Module, seed: int, initializer: Initializer = None) -> nn.Module:
    """A deep copy of ``module`` with freshly drawn weights; ``module`` itself is untouched.

    The draws use ``initializer`` (an lth initializer name such as ``"glorot_normal"``, or a
    callable taking the module) or, by default, ``reset_parameters()`` of every submodule that
    has one. They happen on a CPU copy under a forked RNG seeded with ``seed``, so the result
    depends only on ``seed`` and the global RNG state is left alone.
    """
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    fresh = copy.deepcopy(module).cpu()
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):  # one thread at a time on the global RNG
        torch.manual_seed(seed)
        with torch.no_grad():
            if initializer is None:
                for sub in fresh.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
            elif isinstance(initializer, str):
                INITIALIZERS.get(initializer)(fresh)
            else:
                initializer(fresh)
    return fresh.to(device)


def check_output(module: nn.Module, data: DataBundle) -> None:
    """LthError unless the module maps a batch of the data to (batch, C) logits with C >= classes."""
    x = data.train_x[:2]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as error:  # any failure means model and data do not fit together
        raise LthError(
            f"the model fails on a batch of the data's inputs shaped {tuple(x.shape)}: {short_error(error)}"
        ) from error
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LthError(
            f"the model must output logits shaped (batch, classes); on a batch of {x.shape[0]} it gave {got}"
        )
    if out.shape[1] < data.num_classes:
        raise LthError(
            f"labels go up to {data.num_classes - 1} but the model outputs {out.shape[1]} classes; "
            f"it needs at least {data.num_classes} outputs"
        )


def resolve_prunable(module: nn.Module, settings: LotterySettings) -> dict[str, str]:
    """{parameter name: pruning group} of the parameters to prune."""
    if settings.prunable is None:
        found = prunable_parameters(module, settings.prune_biases, settings.ignore_layers)
        if not found:
            raise LthError(
                "the model has no Linear or Conv layer weights to prune; name the parameters with prunable=[...]"
            )
        return {name: p.group for name, p in found.items()}
    params = dict(module.named_parameters())
    groups = {name: p.group for name, p in prunable_parameters(module, True).items()}
    for name in settings.prunable:
        if name not in params:
            raise LthError(f"unknown prunable parameter {name!r}; the model's parameters are: {listing(list(params))}")
        if not params[name].is_floating_point():
            raise LthError(
                f"prunable parameter {name!r} has dtype {params[name].dtype}; only float tensors can be pruned"
            )
    return {name: groups.get(name, "other") for name in dict.fromkeys(settings.prunable)}


def training_budget(settings: LotterySettings, iterations_per_epoch: int) -> int:
    """The iterations one round trains: ``iterations``, else ``epochs`` worth, else the default;
    warns about a warmup longer than that, LthError for a rewind point at or after its end."""
    budget = settings.iterations or (
        max(1, round(settings.epochs * iterations_per_epoch)) if settings.epochs else DEFAULT_ITERATIONS
    )
    if settings.iterations is None and settings.epochs:  # iterations were checked with the settings
        check_budget(budget, f"epochs={settings.epochs:g}")
    if settings.warmup > budget:
        warn(
            f"warmup {settings.warmup} iterations is longer than the training budget ({budget} "
            "iterations); the learning rate never reaches lr"
        )
    if settings.rewind_iteration >= budget:
        raise LthError(
            f"rewind_iteration {settings.rewind_iteration} is not before the end of training "
            f"(budget {budget} iterations)"
        )
    return budget


# ------------------------------------------------------------------ instability analysis


def stability_rewind_points(
    rewind: Any,
    copies: Any,
    points: Any,
    path_train_size: Any,
    stable_threshold: Any,
    batch_norm_reset: Any,
    seed: Any,
    start: int,
    budget: int,
    round_index: int,
) -> list[int]:
    """The sorted, distinct rewind points of :meth:`LotteryModel.stability`; LthError naming the first bad value."""

    def whole(value: Any, name: str, low: int, high: int | None, why: str) -> None:
        if not is_whole(value) or value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f">= {low}"
            raise LthError(f"{name} must be a whole number {allowed} ({why}), got {value!r}")

    whole(copies, "copies", 2, 64, "instability compares pairs of copies")
    whole(points, "points", 2, 10_001, "a path has two ends")
    whole(path_train_size, "path_train_size", 1, None, "training examples to evaluate the path on")
    if not is_number(stable_threshold) or not 0 <= stable_threshold <= 100:
        raise LthError(f"stable_threshold must be between 0 and 100 percentage points, got {stable_threshold!r}")
    if not isinstance(batch_norm_reset, bool):
        raise LthError(f"batch_norm_reset must be True or False, got {batch_norm_reset!r}")
    if seed is not None and (not is_whole(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise LthError(f"seed must be None (the model's seed) or an integer from -2^63 to 2^64-1, got {seed!r}")
    if rewind is None:
        values = [start]
    elif is_whole(rewind):
        values = [rewind]
    elif isinstance(rewind, (str, bytes)) or not isinstance(rewind, Iterable):
        raise LthError(f"rewind must be an iteration or a list of iterations, got {rewind!r}")
    else:
        values = list(rewind)
    if not values:
        raise LthError(f"rewind is empty; give rewind iterations from {start} to {budget - 1}, like [{start}]")
    allowed = f"give iterations from {start} to {budget - 1}"
    for k in values:
        if not is_whole(k):
            raise LthError(f"rewind point {k!r} is not a whole number of iterations; {allowed}")
        if k < 0:
            raise LthError(f"rewind point {k} is negative; {allowed}")
        if k >= budget:
            raise LthError(
                f"rewind point {k} is not before the end of training (budget {budget} iterations); {allowed}"
            )
        if k < start:
            raise LthError(
                f"rewind point {k} is before round {round_index}'s start: pruned rounds restart from "
                f"rewind_iteration {start}; {allowed}"
            )
    return sorted({int(k) for k in values})


# ------------------------------------------------------------------ steps and procedures


def check_stop(start: int, stop: Any, rewind: int | None) -> None:
    """LthError unless a round from ``start`` may train to ``stop``, past the ``rewind`` point
    it captures (None: it captures none)."""
    if not is_int(stop) or not start < stop <= MAX_ITERATIONS:
        raise LthError(
            f"iterations must be an integer above the round's start iteration {start} and at most "
            f"{MAX_ITERATIONS}, got {stop!r}"
        )
    if rewind is not None and rewind >= stop:
        raise LthError(f"rewind_iteration {rewind} must be before the end of the first training ({stop} iterations)")


def check_procedure(criterion: str, scope: str, mask1: str, mask0: str, options: Mask1Options) -> None:
    """LthError unless the criterion, scope and mask actions of a whole procedure are known."""
    CRITERIA.get(criterion)
    check_scope(scope)
    validate_actions(mask1, mask0, options)
