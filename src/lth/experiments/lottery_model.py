"""LotteryModel: one Lottery Ticket experiment on the user's own ``torch.nn.Module`` and data.

The PyTorch-native counterpart of the Keras ``LotteryModel``: train, prune, re-initialise,
train again, with lth's trainer, criteria, pruning and mask actions doing the work::

    ticket = LotteryModel(my_net, ((x_train, y_train), (x_test, y_test)), iterations=2000)
    ticket.iterative_pruning(rounds=5, rate=0.2)      # a pandas DataFrame, one row per round
    ticket.plot_accuracy()

A round is: start weights -> :meth:`LotteryModel.train` under the mask -> ``w_final`` ->
:meth:`LotteryModel.prune` (criterion scores, lowest fraction of the kept weights removed) ->
:meth:`LotteryModel.reinit` (mask-1 action on kept, mask-0 action on pruned weights) -> next round.
:meth:`LotteryModel.stability` measures the instability (linear mode connectivity, Frankle et al.
2020) of the current ticket without changing the experiment.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import numbers
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth import jsonio
from lth.cpus import check_threads
from lth.actions import LayerState, Mask1Options, round_start_values, validate_actions
from lth.atomic import atomic_torch_save, atomic_write_text
from lth.config import CONTROL_NAMES, MAX_ITERATIONS, MAX_ROUNDS, SEED_RANGE, check_budget
from lth.criteria import CRITERIA, compute_scores
from lth.data import DataBundle
from lth.data.batcher import epoch_seed
from lth.data.user_data import as_bundle, resolve_device
from lth.errors import LthError, TrainingDiverged, warn
from lth.masks import Mask
from lth.models.init import INITIALIZERS
from lth.pruning import GROUPS, prunable_parameters, prune, warn_emptied
from lth.models.registry import GLOBAL_RNG_LOCK
from lth.training import RoundResult, Trainer
from lth.experiments.controls import control_generator, prepare_control
from lth.experiments.lottery_settings import (  # noqa: F401  (check_setting_names: re-exported)
    Initializer, LotterySettings, check_setting_names, is_int, is_number, make_settings,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Training budget when neither ``iterations`` nor ``epochs`` is given.
DEFAULT_ITERATIONS = 1000
#: Prune rate of :meth:`LotteryModel.prune` when neither ``rate``, ``keep`` nor ``rates`` is given.
DEFAULT_RATE = 0.2
ROW_KEYS = (
    "round", "weights_remaining", "kept_weights", "total_weights", "layers", "early_stop_iteration",
    "val_accuracy_at_early_stop", "test_accuracy_at_early_stop", "final_val_accuracy",
    "final_test_accuracy", "final_test_loss", "seconds",
)
METRIC_KEYS = ("round", "iteration", "split", "loss", "accuracy")
SAVE_FORMAT = 1

# ------------------------------------------------------------------ fresh initialisations


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def check_resettable(module: nn.Module, names: Sequence[str]) -> None:
    """LthError unless every parameter in ``names`` belongs to a module with ``reset_parameters()``."""
    modules = dict(module.named_modules())
    for name in names:
        owner = modules[_owner(name)]
        if not callable(getattr(owner, "reset_parameters", None)):
            where = f"module {_owner(name)!r}" if _owner(name) else "the root module"
            raise LthError(
                f"parameter {name!r} belongs to {where} ({type(owner).__name__}), which has no reset_parameters() "
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
                    if callable(getattr(sub, "reset_parameters", None)):
                        sub.reset_parameters()
            elif isinstance(initializer, str):
                INITIALIZERS.get(initializer)(fresh)
            else:
                initializer(fresh)
    return fresh.to(device)


# ------------------------------------------------------------------ helpers


def _clone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _to(state: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(device) for k, v in state.items()}


def _mask_copy(mask: Mask) -> Mask:
    return Mask({name: m.detach().cpu().clone() for name, m in mask.items()})


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _listing(names: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_output(module: nn.Module, data: DataBundle) -> None:
    """LthError unless the module maps a batch of the data to (batch, C) logits with C >= classes."""
    x = data.train_x[:2]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as error:  # any failure means model and data do not fit together
        raise LthError(
            f"the model fails on a batch of the data's inputs shaped {tuple(x.shape)}: {_short(error)}"
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


def _row(round_index: int, mask: Mask, result: RoundResult, seconds: float) -> dict:
    return result.row(round_index, mask, seconds)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _stability_checks(rewind: Any, copies: Any, points: Any, path_train_size: Any, stable_threshold: Any,
                      batch_norm_reset: Any, seed: Any, start: int, budget: int, round_index: int) -> list[int]:
    """The sorted, distinct rewind points of :meth:`LotteryModel.stability`; LthError naming the first bad value."""
    def whole(value: Any, name: str, low: int, high: int | None, why: str) -> None:
        if not _whole(value) or value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f">= {low}"
            raise LthError(f"{name} must be a whole number {allowed} ({why}), got {value!r}")

    whole(copies, "copies", 2, 64, "instability compares pairs of copies")
    whole(points, "points", 2, 10_001, "a path has two ends")
    whole(path_train_size, "path_train_size", 1, None, "training examples to evaluate the path on")
    if not is_number(stable_threshold) or not 0 <= stable_threshold <= 100:
        raise LthError(f"stable_threshold must be between 0 and 100 percentage points, got {stable_threshold!r}")
    if not isinstance(batch_norm_reset, bool):
        raise LthError(f"batch_norm_reset must be True or False, got {batch_norm_reset!r}")
    if seed is not None and (not _whole(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise LthError(f"seed must be None (the model's seed) or an integer from -2^63 to 2^64-1, got {seed!r}")
    if rewind is None:
        values = [start]
    elif _whole(rewind):
        values = [rewind]
    elif isinstance(rewind, (str, bytes)) or not isinstance(rewind, Iterable):
        raise LthError(f"rewind must be an iteration or a list of iterations, got {rewind!r}")
    else:
        values = list(rewind)
    if not values:
        raise LthError(f"rewind is empty; give rewind iterations from {start} to {budget - 1}, like [{start}]")
    allowed = f"give iterations from {start} to {budget - 1}"
    for k in values:
        if not _whole(k):
            raise LthError(f"rewind point {k!r} is not a whole number of iterations; {allowed}")
        if k < 0:
            raise LthError(f"rewind point {k} is negative; {allowed}")
        if k >= budget:
            raise LthError(f"rewind point {k} is not before the end of training (budget {budget} iterations); "
                           f"{allowed}")
        if k < start:
            raise LthError(f"rewind point {k} is before round {round_index}'s start: pruned rounds restart from "
                           f"rewind_iteration {start}; {allowed}")
    return sorted({int(k) for k in values})


# ------------------------------------------------------------------ the experiment


class LotteryModel:
    """One Lottery Ticket experiment on any ``nn.Module`` (classification, cross-entropy loss).

    ``model`` is deep-copied: the user's object is never modified; its current parameters are
    ``w_0``. ``data`` is anything :func:`lth.data.user_data.as_bundle` accepts (a dataset name,
    a DataBundle, tensors or DataLoaders, with or without a validation split). The model must
    map a batch of inputs to ``(batch, C)`` logits with ``C`` > the largest label.

    Training: ``optimizer`` adam or sgd (``momentum``/``nesterov`` for sgd only), ``lr``,
    ``weight_decay`` (kept weights only), ``milestones``/``gamma`` (step LR schedule, in
    iterations), ``warmup`` (iterations), ``batch_size``; budget ``iterations`` or ``epochs``
    (default 1000 iterations); evaluation on validation and test every ``eval_every`` iterations.
    Pruning: ``prunable`` parameter names (default: the weights of every Linear/Conv layer, plus
    their biases with ``prune_biases``, minus ``ignore_layers``). ``rewind_iteration`` k > 0
    rewinds to the weights after k iterations of the first training (late resetting) instead of
    ``w_0``. ``initializer`` draws fresh weights for the ``reinit`` mask-1 action (default:
    ``reset_parameters()`` of each submodule). ``controls``: names from ``lth.config.CONTROL_NAMES``
    (a list or a comma-separated string) trained once after every pruned round of
    :meth:`iterative_pruning` / :meth:`one_shot` (see :meth:`train_controls`): ``reinit`` (the
    round's mask, freshly initialised weights) and ``random-prune`` (a random mask with the round's
    per-layer kept counts, from the rewind weights); their rows are in :meth:`lines`, and they never
    change the ticket's own results. ``seed`` fixes data order and every random choice
    (training runs on a forked, seeded global RNG, so dropout is reproducible too and the
    caller's RNG is untouched): same seed, same results. ``device``: auto, cpu, cuda. Speed
    options (off by default; see :class:`lth.training.Acceleration`): ``precision`` fp32 or bf16
    autocast, ``compile`` (torch.compile), ``channels_last`` (conv nets). The validation
    hold-out (when the data has none) uses a fixed seed, the same for every ``seed``. ``threads``:
    torch's intra-op threads for this process (default: unchanged; the CLI's ``--threads``).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        optimizer: str = "adam",
        lr: float = 1.2e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        warmup: int = 0,
        batch_size: int = 60,
        iterations: int | None = None,
        epochs: float | None = None,
        eval_every: int = 100,
        prunable: Sequence[str] | None = None,
        prune_biases: bool = False,
        ignore_layers: Sequence[str] = (),
        rewind_iteration: int = 0,
        initializer: Initializer = None,
        controls: Sequence[str] | str = (),
        seed: int = 0,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
        progress: bool = True,
        data_dir: str | Path | None = None,
        val_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        if threads is not None:  # torch's intra-op threads for this process (lth.cpus.use_threads)
            from lth.cpus import use_threads

            use_threads(check_threads(threads, "threads"))
        settings = make_settings(
            optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            milestones=milestones, gamma=gamma, warmup=warmup, batch_size=batch_size, iterations=iterations,
            epochs=epochs, eval_every=eval_every, prunable=prunable, prune_biases=prune_biases,
            ignore_layers=ignore_layers, rewind_iteration=rewind_iteration, initializer=initializer,
            controls=controls, seed=seed,
            device=device, precision=precision, compile=compile, channels_last=channels_last, progress=progress,
            data_dir=data_dir, val_size=val_size,
        )
        if not isinstance(model, nn.Module):
            raise LthError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        bundle = as_bundle(data, resolve_device(settings.device), val_size=settings.val_size,
                           data_dir=settings.data_dir)
        self._setup(model, bundle, settings, data if isinstance(data, str) else None)

    def _setup(self, model: nn.Module, data: DataBundle | None, settings: LotterySettings,
               dataset: str | None) -> None:
        self._settings = settings
        self._dataset = dataset  # the lth dataset name, when data was given as one (saved for load)
        self._device = resolve_device(settings.device)
        self._module = copy.deepcopy(model).to(self._device)
        self._module.train()
        self._groups = self._resolve_prunable()
        if "reinit" in settings.controls and settings.initializer is None:
            check_resettable(self._module, list(self._groups))
        self._data = data
        self._trainer: Trainer | None = None
        self._lockstep = False  # trained side by side with other trials (LotteryRobust)
        self._budget: int | None = None
        if data is not None:
            _check_output(self._module, data)
            self._trainer = Trainer(data, settings.batch_size, settings.optimizer_settings(), settings.seed,
                                    settings.eval_every, settings.progress, acceleration=settings.acceleration())
            ipe = self._trainer.iterations_per_epoch
            self._budget = settings.iterations or (
                max(1, round(settings.epochs * ipe)) if settings.epochs else DEFAULT_ITERATIONS
            )
            if settings.iterations is None and settings.epochs:  # iterations were checked with the settings
                check_budget(self._budget, f"epochs={settings.epochs:g}")
            if settings.warmup > self._budget:
                warn(f"warmup {settings.warmup} iterations is longer than the training budget ({self._budget} "
                     "iterations); the learning rate never reaches lr")
            if settings.rewind_iteration >= self._budget:
                raise LthError(
                    f"rewind_iteration {settings.rewind_iteration} is not before the end of training "
                    f"(budget {self._budget} iterations)"
                )
        params = dict(self._module.named_parameters())
        self._init_state = _clone(self._module.state_dict())
        self._rewind_state: dict[str, torch.Tensor] | None = (
            self._init_state if settings.rewind_iteration == 0 else None
        )
        self._start_state = self._init_state
        self._mask = Mask.ones({name: params[name] for name in self._groups})
        self._w_final: dict[str, torch.Tensor] | None = None
        self._round = 0
        self._trained = False  # the current round (mask) has been trained
        self._needs_start = False  # pruned since the last training, start weights not yet chosen
        self._rows: list[dict] = []
        self._metrics: list[dict] = []
        self._masks: dict[int, Mask] = {}
        self._control_rows: dict[str, list[dict]] = {}  # by control name: one row per pruned round
        self._control_masks: dict[str, dict[int, Mask]] = {}  # by control name and round (not saved)
        self._generator = torch.Generator().manual_seed(settings.seed)

    def _resolve_prunable(self) -> dict[str, str]:
        """{parameter name: pruning group} of the parameters to prune."""
        s = self._settings
        if s.prunable is None:
            found = prunable_parameters(self._module, s.prune_biases, s.ignore_layers)
            if not found:
                raise LthError(
                    "the model has no Linear or Conv layer weights to prune; name the parameters with prunable=[...]"
                )
            return {name: p.group for name, p in found.items()}
        params = dict(self._module.named_parameters())
        groups = {name: p.group for name, p in prunable_parameters(self._module, True).items()}
        for name in s.prunable:
            if name not in params:
                raise LthError(
                    f"unknown prunable parameter {name!r}; the model's parameters are: {_listing(list(params))}"
                )
            if not params[name].is_floating_point():
                raise LthError(
                    f"prunable parameter {name!r} has dtype {params[name].dtype}; only float tensors can be pruned"
                )
        return {name: groups.get(name, "other") for name in dict.fromkeys(s.prunable)}

    # -- state -------------------------------------------------------------------------
    @property
    def settings(self) -> LotterySettings:
        """The experiment's settings."""
        return self._settings

    @property
    def data(self) -> DataBundle | None:
        """The data as a DataBundle (None after :meth:`load` without data)."""
        return self._data

    @property
    def round(self) -> int:
        """Index of the current round: the number of prunes so far."""
        return self._round

    @property
    def mask(self) -> Mask:
        """The current mask (a CPU copy; 1 = kept)."""
        return _mask_copy(self._mask)

    @property
    def masks(self) -> dict[int, Mask]:
        """The mask each trained round was trained under, by round (CPU copies)."""
        return {r: _mask_copy(mask) for r, mask in sorted(self._masks.items())}

    @property
    def prunable(self) -> list[str]:
        """Names of the pruned parameters."""
        return list(self._groups)

    @property
    def model(self) -> nn.Module:
        """A copy of the module as last trained: pruned weights hold what the mask-0 action left (0 by default)."""
        return copy.deepcopy(self._module)

    @property
    def initial_state(self) -> dict[str, torch.Tensor]:
        """A copy of ``w_0``: the module's state dict at construction."""
        return _clone(self._init_state)

    @property
    def rows(self) -> list[dict]:
        """One summary row per trained round (as in a run's ``rounds.json``)."""
        return [dict(row, layers=dict(row["layers"])) for row in self._rows]

    @property
    def control_masks(self) -> dict[str, dict[int, Mask]]:
        """The mask each control trained under, by control name and round (CPU copies; not saved)."""
        return {name: {r: _mask_copy(mask) for r, mask in sorted(masks.items())}
                for name, masks in self._control_masks.items()}

    def lines(self) -> dict[str, list[dict]]:
        """The per-round rows of every line: ``ticket`` (:attr:`rows`), then each control of the
        ``controls`` setting (and any other with rows) by name, rows sorted by round."""
        names = [*self._settings.controls, *(n for n in self._control_rows if n not in self._settings.controls)]
        return {"ticket": self.rows, **{
            name: [dict(row, layers=dict(row["layers"]))
                   for row in sorted(self._control_rows.get(name, []), key=lambda r: r["round"])]
            for name in names
        }}

    def __repr__(self) -> str:
        return (f"LotteryModel(round={self._round}, weights_remaining={self._mask.density():.4f}, "
                f"trained_rounds={len(self._rows)})")

    # -- one round ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _seeded_rng(self, salt: int) -> Iterator[None]:
        """Run on a forked global RNG seeded from (seed, salt): dropout and other random layers are
        reproducible, and the caller's RNG state is left alone. Not inside a vectorised (lockstep)
        training: its models have no random layers, and its threads share the global RNG."""
        if self._lockstep:
            yield
            return
        devices = [self._device.index or 0] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(epoch_seed(self._settings.seed, salt))
            yield

    def _require_data(self, what: str) -> Trainer:
        if self._trainer is None:
            raise LthError(f"{what} needs data, and this experiment was loaded without any; pass data to load()")
        return self._trainer

    def train(self, iterations: int | None = None) -> dict:
        """Train the current round from its start weights under the current mask; return its row.

        A fresh optimizer; the first round runs from iteration 0, later rounds from the rewind
        iteration to ``iterations`` (default: the budget). If :meth:`prune` was called without
        :meth:`reinit`, the default re-initialisation (rewind kept weights, zero pruned ones) is
        applied first. Training a round again replaces its row (and drops its controls' rows:
        :meth:`train_controls` trains them again). A NaN or infinite loss (read at
        the evaluations) stops the training with LthError (``TrainingDiverged``) naming the round
        and the iteration; the rows of earlier rounds stay.
        """
        trainer = self._require_data("train()")
        stop = self._budget if iterations is None else iterations
        start = 0 if self._round == 0 else self._settings.rewind_iteration
        if not is_int(stop) or not start < stop <= MAX_ITERATIONS:
            raise LthError(f"iterations must be an integer above the round's start iteration {start} and at most "
                           f"{MAX_ITERATIONS}, got {stop!r}")
        capture = self._round == 0 and self._settings.rewind_iteration > 0
        if capture and self._settings.rewind_iteration >= stop:
            raise LthError(
                f"rewind_iteration {self._settings.rewind_iteration} must be before the end of the first "
                f"training ({stop} iterations)"
            )
        if self._needs_start:
            self.reinit()
        self._module.load_state_dict(self._start_state)
        snapshots: dict[int, dict[str, torch.Tensor]] = {}
        tic = time.perf_counter()
        try:
            with self._seeded_rng(2 * self._round):
                result = trainer.train(
                    self._module, self._mask, start=start, stop=stop,
                    capture=[self._settings.rewind_iteration] if capture else [],
                    on_capture=lambda t, m: snapshots.__setitem__(t, _clone(m.state_dict())),
                    description=f"round {self._round}", postfix={"kept": f"{self._mask.density():.4f}"},
                    zero_pruned=False,
                )
        except TrainingDiverged as error:  # the round's row and start weights are untouched: train() may be retried
            raise TrainingDiverged(
                error.iteration, error.loss, error.start, error.network,
                message=f"training diverged in round {self._round} at iteration {error.iteration} "
                        f"(loss {error.loss}); {error.hint('lr')}",
            ) from None
        seconds = time.perf_counter() - tic
        if capture:
            self._rewind_state = snapshots[self._settings.rewind_iteration]
        params = dict(self._module.named_parameters())
        self._w_final = {name: params[name].detach().clone() for name in self._groups}
        row = _row(self._round, self._mask, result, seconds)
        self._rows = [r for r in self._rows if r["round"] != self._round] + [row]
        for name in self._control_rows:  # the controls of a round trained again are trained again
            self._control_rows[name] = [r for r in self._control_rows[name] if r["round"] != self._round]
            self._control_masks.get(name, {}).pop(self._round, None)
        self._metrics = [m for m in self._metrics if m["round"] != self._round]
        self._metrics.extend({"round": self._round, **m} for m in result.metrics)
        self._masks[self._round] = _mask_copy(self._mask)
        self._trained = True
        return dict(row, layers=dict(row["layers"]))

    def train_controls(self, controls: Sequence[str] | str | None = None) -> dict[str, dict]:
        """Train the controls of the current pruned, trained round; return their rows by name.

        ``controls`` defaults to the ``controls`` setting. As ``--controls`` of ``lth ticket``:
        each control trains once with the round's recipe (from the rewind iteration to the
        budget): ``reinit`` under the round's mask from a fresh draw of the weights
        (``initializer``/``reset_parameters()``; whatever the draw leaves alone keeps its rewind
        value), ``random-prune`` under a uniformly random mask with the round's exact
        per-layer kept counts from the rewind weights. A control's randomness comes from its own
        generator (:func:`lth.experiments.controls.control_generator`) and its training runs on a
        forked global RNG; the model's weights are restored afterwards, so the ticket's results
        are the same with or without controls. Training a control again replaces its row.
        """
        names = self._settings.controls if controls is None else make_settings(controls=controls).controls
        if not names:
            return {}
        trainer = self._require_data("train_controls()")
        if self._round == 0 or not self._trained or self._rewind_state is None:
            raise LthError("train_controls() needs a pruned round that has been trained; call prune() and train() "
                           "first (round 0 is dense: it has no controls)")
        if "reinit" in names and self._settings.initializer is None:
            check_resettable(self._module, list(self._groups))
        return {name: self._train_control(name, trainer) for name in names}

    def _control_state(self, seed: int) -> dict[str, torch.Tensor]:
        """The reinit control's start: a fresh draw under ``seed`` (the rest at its rewind values)."""
        self._module.load_state_dict(self._rewind_state)
        drawn = fresh_initialisation(self._module, seed, self._settings.initializer)
        return _to(drawn.state_dict(), self._device)

    def _train_control(self, name: str, trainer: Trainer) -> dict:
        ticket_state = _clone(self._module.state_dict())
        start, stop = self._settings.rewind_iteration, self._budget
        try:
            mask = prepare_control(name, self._module, self._mask, self._rewind_state, self._control_state,
                                   control_generator(self._settings.seed, name, self._round))
            mask.apply_(self._module)
            tic = time.perf_counter()
            # A salt of its own (< 0: the ticket's are >= 0) for the control's dropout and other random layers.
            salt = -1 - (self._round * len(CONTROL_NAMES) + CONTROL_NAMES.index(name))
            with self._seeded_rng(salt):
                result = trainer.train(
                    self._module, mask, start=start, stop=stop, description=f"{name} control {self._round}",
                    postfix={"kept": f"{mask.density():.4f}"}, zero_pruned=False,
                )
        except TrainingDiverged as error:
            raise TrainingDiverged(
                error.iteration, error.loss, error.start, error.network,
                message=f"training of the {name} control diverged in round {self._round} at iteration "
                        f"{error.iteration} (loss {error.loss}); {error.hint('lr')}",
            ) from None
        finally:
            self._module.load_state_dict(ticket_state)  # the model stays the ticket as last trained
        row = _row(self._round, mask, result, time.perf_counter() - tic)
        rows = self._control_rows.setdefault(name, [])
        self._control_rows[name] = [r for r in rows if r["round"] != self._round] + [row]
        self._control_masks.setdefault(name, {})[self._round] = _mask_copy(mask)
        return dict(row, layers=dict(row["layers"]))

    def _train_missing_controls(self) -> None:
        """Train the controls of the setting that the current (pruned, trained) round lacks."""
        if self._round == 0 or not self._trained:
            return
        missing = [name for name in self._settings.controls
                   if not any(r["round"] == self._round for r in self._control_rows.get(name, []))]
        if missing:
            self.train_controls(missing)

    def _rates(self, rate: float | None, keep: float | None, scope: str,
               rates: Mapping[str, float] | None) -> dict[str, float]:
        """Per-parameter prune rates (fractions of the kept weights removed)."""
        if scope not in ("layerwise", "global"):
            raise LthError(f"unknown scope {scope!r}; choose layerwise or global")
        if keep is not None and (rate is not None or rates is not None):
            raise LthError(
                "give keep (fraction of all weights kept) or rate/rates (fraction of the kept weights removed), "
                "not both"
            )
        if keep is not None:
            if not is_number(keep) or not 0 < keep <= 1:
                raise LthError(f"keep must be a fraction in (0, 1], got {keep!r}")
            units = [[n] for n in self._mask] if scope == "layerwise" else [list(self._mask)]
            out: dict[str, float] = {}
            for names in units:
                kept = sum(int(self._mask[n].sum()) for n in names)
                size = sum(self._mask[n].numel() for n in names)
                target = keep * size
                if target > kept + 1e-9:
                    where = f"parameter {names[0]!r}" if scope == "layerwise" else "the prunable weights"
                    raise LthError(
                        f"keep={keep} is more than the fraction {kept / size:.4g} of {where} still kept; "
                        "pruned weights never come back"
                    )
                out.update({n: (1.0 - target / kept) if kept else 0.0 for n in names})
            return out
        rate = DEFAULT_RATE if rate is None else rate
        out = {name: rate for name in self._mask}
        for key, value in (rates or {}).items():
            if key in self._mask:
                targets = [key]
            elif key in GROUPS or key == "other":
                targets = [n for n, g in self._groups.items() if g == key]
            else:
                targets = [n for n in self._mask if _owner(n) == key]
            if not targets:
                raise LthError(
                    f"rates key {key!r} is neither a pruned parameter, its layer, nor a group (fc, conv, output) "
                    f"with pruned parameters; pruned parameters: {_listing(list(self._mask))}"
                )
            for name in targets:
                out[name] = value
        for name, value in out.items():
            if not is_number(value) or not 0 <= value < 1:
                raise LthError(f"prune rate for {name!r} must be a fraction in [0, 1), got {value!r}")
        if scope == "global" and len(set(out.values())) > 1:
            raise LthError(f"global pruning needs one rate for all layers, got {sorted(set(out.values()))}")
        return out

    def _derivatives(self, criterion: str) -> dict[str, dict[str, torch.Tensor]]:
        """What a model-based criterion (snip, grad, grasp, synflow) needs at the rewind point,
        current mask applied, on the first training batch ({} for the weight-only criteria)."""
        from lth.criteria import NEEDS_DERIVATIVE
        from lth.init_pruning.derivatives import criterion_derivatives

        if criterion not in NEEDS_DERIVATIVE:
            return {}
        trainer = self._require_data("a gradient criterion")
        scratch = copy.deepcopy(self._module)
        scratch.load_state_dict(self._rewind_state)
        self._mask.apply_(scratch)
        batch = trainer.batcher.batch(0)
        return criterion_derivatives(criterion, scratch, self._groups, [batch], tuple(batch[0].shape[1:]),
                                     seed=epoch_seed(self._settings.seed, 2 * self._round + 1))

    def prune(
        self,
        criterion: str = "large_final",
        rate: float | None = None,
        keep: float | None = None,
        scope: str = "layerwise",
        rates: Mapping[str, float] | None = None,
    ) -> Mask:
        """Prune the trained round: remove the lowest-scoring weights still kept; return the new mask.

        ``rate``: fraction of the currently kept weights removed (default 0.2), per parameter
        (``layerwise``) or over all of them (``global``); ``rates`` overrides it per parameter
        name, layer (module) name or group (``fc``, ``conv``, ``output``). ``keep``: instead, the
        fraction of ALL prunable weights left kept (relative to dense). Scores come from
        ``lth.criteria`` (``criterion`` compares w_init = the rewind point with w_final); ties are
        broken with the seeded generator. Needs :meth:`train` first.
        """
        CRITERIA.get(criterion)
        per_param = self._rates(rate, keep, scope, rates)
        if not self._trained or self._w_final is None:
            raise LthError("prune() needs a trained network for the current mask; call train() first")
        w_init = {name: self._rewind_state[name] for name in self._groups}
        scores = compute_scores(criterion, w_init, self._w_final, self._mask, self._generator,
                                derivatives=self._derivatives(criterion))
        before, self._mask = self._mask, prune(scores, self._mask, per_param, scope, self._generator)
        self._round += 1
        warn_emptied(before, self._mask, self._round, "lower the prune rate")
        self._trained = False
        self._needs_start = True
        return self.mask

    def reinit(
        self,
        mask1: str = "rewind",
        mask0: str = "zero",
        keep_sign: bool = False,
        rescale: bool = False,
        jitter_sd: float = 0.01,
        constant: float | None = None,
    ) -> None:
        """Choose the next round's start weights: ``mask1`` action on kept, ``mask0`` on pruned weights.

        Mask-1 actions (values relative to the rewind point w_0 or w_k): rewind, reinit (a fresh
        draw from ``initializer``/``reset_parameters()`` under a seed from the experiment's
        generator; the global RNG is untouched), random_reinit, random_reshuffle, constant, jitter
        and the named combinations (signed_reinit, signed_reshuffle, signed_constant,
        rand_signed_constant); ``keep_sign``, ``rescale``, ``jitter_sd``, ``constant`` modify
        them. Mask-0 actions: zero, freeze_init, freeze_init_zero_mask, freeze_init_zero_all.
        Non-prunable parameters and buffers are rewound.
        """
        options = Mask1Options(keep_sign=keep_sign, rescale=rescale, jitter_sd=jitter_sd, constant=constant)
        validate_actions(mask1, mask0, options)
        if self._w_final is None or self._rewind_state is None:
            raise LthError("reinit() needs the weights of a trained round; call train() (and prune()) first")
        fresh: dict[str, torch.Tensor] | None = None
        if "reinit" in mask1:
            if self._settings.initializer is None:
                check_resettable(self._module, list(self._groups))
            seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
            drawn = fresh_initialisation(self._module, seed, self._settings.initializer)
            fresh = {name: p.detach().to(self._device) for name, p in drawn.named_parameters()}
        state = _clone(self._rewind_state)
        for name, m in self._mask.items():
            layer = LayerState(
                w_init=self._rewind_state[name], w_final=self._w_final[name], mask=m, generator=self._generator,
                fresh=(lambda n=name: fresh[n]) if fresh is not None else None,
            )
            state[name] = round_start_values(mask1, mask0, layer, options)
        self._start_state = state
        self._needs_start = False

    # -- whole procedures ----------------------------------------------------------------
    def _check_procedure(self, criterion: str, scope: str, mask1: str, mask0: str, options: Mask1Options) -> None:
        CRITERIA.get(criterion)
        if scope not in ("layerwise", "global"):
            raise LthError(f"unknown scope {scope!r}; choose layerwise or global")
        validate_actions(mask1, mask0, options)
        self._require_data("a ticket search")

    def _train_current(self, mask1: str, mask0: str, options: Mask1Options) -> None:
        if self._needs_start:
            self.reinit(mask1, mask0, options.keep_sign, options.rescale, options.jitter_sd, options.constant)
        if not self._trained:
            self.train()

    def iterative_pruning(
        self,
        rounds: int = 5,
        criterion: str = "large_final",
        rate: float = DEFAULT_RATE,
        scope: str = "layerwise",
        mask1: str = "rewind",
        mask0: str = "zero",
        *,
        rates: Mapping[str, float] | None = None,
        keep_sign: bool = False,
        rescale: bool = False,
        jitter_sd: float = 0.01,
        constant: float | None = None,
    ) -> "pd.DataFrame":
        """Iterative magnitude pruning: train (dense, if not yet), then ``rounds`` x (prune, reinit, train).

        Continues from the current state when called again. After every pruned round the
        ``controls`` setting's controls train (:meth:`train_controls`). Returns :meth:`summary`.
        """
        options = Mask1Options(keep_sign=keep_sign, rescale=rescale, jitter_sd=jitter_sd, constant=constant)
        self._check_procedure(criterion, scope, mask1, mask0, options)
        if not is_int(rounds) or not 0 <= rounds <= MAX_ROUNDS:
            raise LthError(f"rounds must be an integer from 0 to {MAX_ROUNDS}, got {rounds!r}")
        self._rates(rate, None, scope, rates)  # validate before any training
        self._train_current(mask1, mask0, options)
        self._train_missing_controls()
        for _ in range(rounds):
            self.prune(criterion, rate=rate, scope=scope, rates=rates)
            self.reinit(mask1, mask0, keep_sign, rescale, jitter_sd, constant)
            self.train()
            self._train_missing_controls()
        return self.summary()

    def one_shot(
        self,
        keep: float,
        criterion: str = "large_final",
        scope: str = "layerwise",
        mask1: str = "rewind",
        mask0: str = "zero",
        *,
        keep_sign: bool = False,
        rescale: bool = False,
        jitter_sd: float = 0.01,
        constant: float | None = None,
    ) -> "pd.DataFrame":
        """One-shot pruning: train (dense, if not yet), prune once to ``keep`` of all weights, reinit, train
        (and the ``controls`` setting's controls, :meth:`train_controls`)."""
        options = Mask1Options(keep_sign=keep_sign, rescale=rescale, jitter_sd=jitter_sd, constant=constant)
        self._check_procedure(criterion, scope, mask1, mask0, options)
        if not is_number(keep) or not 0 < keep <= 1:
            raise LthError(f"keep must be a fraction in (0, 1], got {keep!r}")
        self._train_current(mask1, mask0, options)
        self._train_missing_controls()
        self.prune(criterion, keep=keep, scope=scope)
        self.reinit(mask1, mask0, keep_sign, rescale, jitter_sd, constant)
        self.train()
        self._train_missing_controls()
        return self.summary()

    # -- instability analysis ------------------------------------------------------------
    def stability(
        self,
        rewind: int | Sequence[int] | None = None,
        copies: int = 2,
        points: int = 31,
        path_train_size: int = 10_000,
        stable_threshold: float = 2.0,
        batch_norm_reset: bool = True,
        seed: int | None = None,
    ) -> "pd.DataFrame":
        """Instability analysis (Frankle et al. 2020) of the current ticket: one row per rewind point k.

        Under the current mask (dense before any pruning), from the weights the current round
        starts from (``w_0``; after pruning the start chosen by :meth:`reinit`, by default the
        rewind weights) with pruned weights exactly 0, and with the model's recipe and budget: a
        parent trains once to the largest k (data order of ``seed``), then from its weights at each
        k ``copies`` children train to the end of the budget, child c with data order
        ``level_seed(seed, "stability-child", c)``; ``seed`` defaults to the model's. Every pair of
        children is evaluated at ``points`` evenly spaced alphas
        (:func:`lth.training.interpolation.evaluate_path`) on the test set and a fixed subset of
        ``path_train_size`` training examples (BatchNorm statistics recomputed at every point when
        ``batch_norm_reset`` and the model has BatchNorm). Instability = the maximum error along
        the path minus the mean of its ends' errors (a fraction); stable when the mean test
        instability is at most ``stable_threshold`` percentage points. ``rewind``: iterations
        from the round's start (0; ``rewind_iteration`` after pruning) to the budget - 1; default
        the round's start. Columns: those of :func:`lth.experiments.stability.entries_frame`
        (``level`` = :attr:`round`), then ``stable_threshold`` (a fraction), ``per_pair`` and
        ``children`` (each child's copy, seed and final test accuracy and loss). The experiment
        is untouched: weights, mask, rows, generator and global RNG are as before the call, so
        later rounds give the same results with or without it.
        """
        import pandas as pd

        from lth.experiments.branch_kinds import level_seed
        from lth.experiments.stability import entries_frame, pair_result, summarise_pairs
        from lth.training.interpolation import alphas, evaluate_path, has_batch_norm

        settings = self._settings
        data = self._data
        self._require_data("stability()")
        assert data is not None and self._budget is not None
        budget = self._budget
        start = 0 if self._round == 0 else settings.rewind_iteration
        ks = _stability_checks(rewind, copies, points, path_train_size, stable_threshold, batch_norm_reset, seed,
                               start, budget, self._round)
        base = settings.seed if seed is None else int(seed)
        threshold = float(stable_threshold) / 100
        mask = Mask({name: m.detach().clone() for name, m in self._mask.items()})
        source = self._rewind_state if self._needs_start else self._start_state  # train() would reinit to rewind
        assert source is not None
        start_state = {name: (value * mask[name].to(value.dtype) if name in mask else value).detach().clone()
                       for name, value in source.items()}
        devices = [self._device.index or 0] if self._device.type == "cuda" else []

        def trained(state: Mapping[str, torch.Tensor], data_seed: int, rng_seed: int, first: int, stop: int,
                    what: str, capture: Sequence[int] = (), on_capture: Any = None) -> tuple[nn.Module, RoundResult]:
            """A copy of the module trained from ``state`` on the model's recipe (forked, seeded global RNG)."""
            net = copy.deepcopy(self._module)
            net.load_state_dict(state)
            trainer = Trainer(data, settings.batch_size, settings.optimizer_settings(), data_seed,
                              settings.eval_every, settings.progress, acceleration=settings.acceleration())
            try:
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(rng_seed)
                    result = trainer.train(net, mask, start=first, stop=stop, capture=capture, on_capture=on_capture,
                                           description=f"stability {what}",
                                           postfix={"kept": f"{mask.density():.4f}"})
            except TrainingDiverged as error:
                raise TrainingDiverged(
                    error.iteration, error.loss, error.start, error.network,
                    message=f"training of the stability {what} diverged in round {self._round} at iteration "
                            f"{error.iteration} (loss {error.loss}); {error.hint('lr')}",
                ) from None
            return net, result

        # The parent: once from the round's start to the last k, keeping its weights at every k.
        parents: dict[int, dict[str, torch.Tensor]] = {start: start_state} if start in ks else {}
        if ks[-1] > start:
            trained(start_state, base, level_seed(base, "stability-dropout-parent", self._round), start, ks[-1],
                    f"parent to k={ks[-1]}", capture=[k for k in ks if k > start],
                    on_capture=lambda t, m: parents.__setitem__(t, _clone(m.state_dict())))
        n = data.train_x.shape[0]
        generator = torch.Generator().manual_seed(level_seed(base, "stability-path-train", 0))
        index = torch.randperm(n, generator=generator)[:min(path_train_size, n)].sort().values.to(data.train_x.device)
        splits = {"test": (data.test_x, data.test_y), "train": (data.train_x[index], data.train_y[index])}
        probe = copy.deepcopy(self._module)
        bn_data = splits["train"][0] if batch_norm_reset and has_batch_norm(probe) else None
        alpha = alphas(points)
        entries = []
        for k in ks:
            finals, children = [], []
            for c in range(copies):
                child_seed = level_seed(base, "stability-child", c)
                net, result = trained(parents[k], child_seed, level_seed(base, f"stability-dropout-k{k}", c), k,
                                      budget, f"child {c + 1}/{copies} k={k}")
                finals.append(_clone(net.state_dict()))
                children.append({"copy": c, "seed": child_seed, "final_test_accuracy": result.final_test_accuracy,
                                 "final_test_loss": result.final_test_loss})
            pairs = [pair_result(i, j, evaluate_path(probe, finals[i], finals[j], mask, alpha, splits, bn_data))
                     for i in range(copies) for j in range(i + 1, copies)]
            entry = summarise_pairs(self._round, mask.density(), k, copies, pairs, children, threshold)
            entries.append(entry)
        columns = [*entries_frame([]).columns, "stable_threshold", "per_pair", "children"]
        return pd.DataFrame([{key: entry[key] for key in columns} for entry in entries], columns=columns)

    # -- results -------------------------------------------------------------------------
    def summary(self) -> "pd.DataFrame":
        """One row per trained round: weights remaining, kept counts, per-layer density, accuracies."""
        import pandas as pd

        return pd.DataFrame(sorted(self.rows, key=lambda r: r["round"]), columns=list(ROW_KEYS))

    def metrics(self) -> "pd.DataFrame":
        """Learning curves: round, iteration, split (train/val/test), loss, accuracy."""
        import pandas as pd

        return pd.DataFrame([dict(m) for m in self._metrics], columns=list(METRIC_KEYS))

    def plot_accuracy(self, ax: "Axes | None" = None) -> "Figure":
        """Test accuracy at early stop and at the end against weights remaining (log x): the ticket
        solid, each control (:meth:`lines`) dashed."""
        from lth.plots import draw_accuracy

        lines = {name: rows for name, rows in self.lines().items() if rows or name == "ticket"}
        return draw_accuracy({name if name == "ticket" else f"{name} control": rows for name, rows in lines.items()},
                             ax=ax, dashed=[f"{name} control" for name in lines if name != "ticket"])

    def plot_learning_curves(self, ax: "Axes | None" = None) -> "Figure":
        """Test accuracy against training iteration, one line per round."""
        from lth.plots import draw_learning_curves

        return draw_learning_curves(self.rows, self._metrics, ax=ax)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the experiment to directory ``path`` (every file atomically); see :meth:`load`.

        Layout: ``settings.json``, ``rounds.json``, ``controls.json`` (the controls' rows by name;
        their masks are not saved), ``metrics.csv``, ``masks/round_NN.pt``
        (mask of each trained round) and ``masks/current.pt``, ``weights/{init,rewind,start,
        final,current}.pt``, ``generator.pt``. The data is not saved (only its lth dataset
        name, when given as one); a callable initializer is not saved.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise LthError(f"cannot save to {str(path)!r}: it exists and is not a directory")
        settings = asdict(self._settings)
        settings["initializer"] = self._settings.initializer if isinstance(self._settings.initializer, str) else None
        meta = {
            "format": SAVE_FORMAT,
            "settings": settings,
            "callable_initializer": callable(self._settings.initializer),
            "dataset": self._dataset,
            "round": self._round,
            "trained": self._trained,
            "needs_start": self._needs_start,
            "has_rewind": self._rewind_state is not None,
        }
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LthError(f"cannot write to {str(path)!r}: {error.strerror}") from None
        from lth.store.lock import run_lock

        with run_lock(path):  # one writer at a time: another process saving here is a one-line LthError
            self._write(path, meta)
        return path

    def _write(self, path: Path, meta: dict) -> None:
        try:
            atomic_write_text(path / "settings.json", jsonio.dumps(meta, indent=2) + "\n")
        except OSError as error:
            raise LthError(f"cannot write to {str(path)!r}: {error.strerror}") from None
        atomic_write_text(path / "rounds.json", jsonio.dumps(self._rows, indent=2) + "\n")
        atomic_write_text(path / "controls.json", jsonio.dumps(self._control_rows, indent=2) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_KEYS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._metrics)
        atomic_write_text(path / "metrics.csv", buffer.getvalue())
        for stale in (path / "masks").glob("round_*.pt"):  # rounds of an earlier save, now gone
            index = stale.stem.removeprefix("round_")
            if index.isdigit() and int(index) not in self._masks:
                stale.unlink()
        for r, mask in self._masks.items():
            mask.save(path / "masks" / f"round_{r:02d}.pt")
        self._mask.save(path / "masks" / "current.pt")
        states = {"init": self._init_state, "start": self._start_state, "current": self._module.state_dict()}
        if self._rewind_state is not None:
            states["rewind"] = self._rewind_state
        if self._w_final is not None:
            states["final"] = self._w_final
        for tag, state in states.items():
            atomic_torch_save(_to(state, "cpu"), path / "weights" / f"{tag}.pt")
        atomic_torch_save({"state": self._generator.get_state()}, path / "generator.pt")

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: nn.Module,
        data: Any = None,
        *,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        initializer: Initializer = None,
    ) -> "LotteryModel":
        """Restore a saved experiment into ``model``, an instance of the same module class.

        Summary, masks and the model are available at once; further rounds need ``data`` (the
        same data as before), unless it was saved as an lth dataset name. Tensors are read with
        ``torch.load(..., weights_only=True)``.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "settings.json").read_text())
        except FileNotFoundError:
            raise LthError(f"{str(path)!r} is not a saved LotteryModel (no settings.json)") from None
        except (OSError, ValueError) as error:
            raise LthError(f"cannot read {str(path / 'settings.json')!r}: {_short(error)}") from None
        if not isinstance(meta, dict) or meta.get("format") != SAVE_FORMAT:
            raise LthError(f"{str(path)!r} holds an unknown save format; expected format {SAVE_FORMAT}")
        if not isinstance(model, nn.Module):
            raise LthError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        values = dict(meta["settings"])
        if device is not None:
            values["device"] = device
        if progress is not None:
            values["progress"] = progress
        if initializer is not None:
            values["initializer"] = initializer
        settings = make_settings(**values)
        source = data if data is not None else meta.get("dataset")
        bundle = None
        if source is not None:
            bundle = as_bundle(source, resolve_device(settings.device), val_size=settings.val_size,
                               data_dir=settings.data_dir)
        obj = cls.__new__(cls)
        obj._setup(model, bundle, settings, source if isinstance(source, str) else None)
        dev = obj._device

        def weights(tag: str) -> dict[str, torch.Tensor]:
            try:
                return _to(torch.load(path / "weights" / f"{tag}.pt", map_location="cpu", weights_only=True), dev)
            except FileNotFoundError:
                raise LthError(f"saved experiment {str(path)!r} lacks weights/{tag}.pt") from None

        try:
            obj._module.load_state_dict(weights("current"))
        except RuntimeError as error:
            raise LthError(f"the model does not match the saved experiment: {_short(error)}") from None
        obj._init_state = weights("init")
        obj._start_state = weights("start")
        obj._rewind_state = weights("rewind") if meta["has_rewind"] else None
        obj._w_final = weights("final") if (path / "weights" / "final.pt").is_file() else None
        current = Mask.load(path / "masks" / "current.pt")
        current.check_matches(dict(obj._module.named_parameters()))
        if list(current) != list(obj._groups):
            raise LthError(f"the saved mask covers {_listing(list(current))}, but the model's prunable parameters "
                           f"are {_listing(list(obj._groups))}")
        obj._mask = current.to(dev)
        obj._rows = json.loads((path / "rounds.json").read_text())
        if (path / "controls.json").is_file():  # absent in saves from before controls
            controls = json.loads((path / "controls.json").read_text())
            if not isinstance(controls, dict) or not all(
                    isinstance(rows, list) and all(isinstance(r, dict) and "round" in r for r in rows)
                    for rows in controls.values()):
                raise LthError(f"{str(path / 'controls.json')!r} must map control names to lists of rows")
            obj._control_rows = {str(name): rows for name, rows in controls.items()}
        with (path / "metrics.csv").open(newline="") as handle:
            obj._metrics = [
                {"round": int(m["round"]), "iteration": int(m["iteration"]), "split": m["split"],
                 "loss": float(m["loss"]), "accuracy": float(m["accuracy"])}
                for m in csv.DictReader(handle)
            ]
        obj._masks = {row["round"]: Mask.load(path / "masks" / f"round_{row['round']:02d}.pt") for row in obj._rows}
        obj._round, obj._trained, obj._needs_start = meta["round"], meta["trained"], meta["needs_start"]
        obj._generator.set_state(torch.load(path / "generator.pt", weights_only=True)["state"])
        return obj
