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

This module is the step-by-step API; the work is done in ``lottery_model_checks`` (model, data
and argument checks), ``lottery_model_training`` (training runs), ``lottery_model_pruning``
(prune rates, masks, start weights), ``lottery_model_stability`` and ``lottery_model_store``
(row layouts, save and load).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth.actions import Mask1Options, validate_actions
from lth.config import MAX_ROUNDS
from lth.cpus import check_threads
from lth.criteria import CRITERIA
from lth.data import DataBundle
from lth.data.user_data import as_bundle, resolve_device
from lth.errors import LthError
from lth.experiments.lottery_model_checks import (
    DEFAULT_ITERATIONS,
    check_output,
    check_procedure,
    check_resettable,
    check_stop,
    fresh_initialisation,
    resolve_prunable,
    training_budget,
)
from lth.experiments.lottery_model_pruning import DEFAULT_RATE, prune_rates, pruned_mask, start_state
from lth.experiments.lottery_model_store import (
    METRIC_KEYS,
    ROW_KEYS,
    clone_state,
    load_experiment,
    mask_copy,
    row_copy,
    save_experiment,
)
from lth.experiments.lottery_model_training import (
    require_data,
    train_controls,
    train_missing_controls,
    train_round,
)
from lth.experiments.lottery_settings import (
    Initializer,
    LotterySettings,
    check_setting_names,
    is_int,
    is_number,
    make_settings,
)
from lth.masks import Mask
from lth.pruning import warn_emptied
from lth.training import Trainer

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [  # with the names other modules import from here
    "DEFAULT_ITERATIONS",
    "DEFAULT_RATE",
    "METRIC_KEYS",
    "ROW_KEYS",
    "LotteryModel",
    "check_resettable",
    "check_setting_names",
    "fresh_initialisation",
    "make_settings",
]


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
            optimizer=optimizer,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            milestones=milestones,
            gamma=gamma,
            warmup=warmup,
            batch_size=batch_size,
            iterations=iterations,
            epochs=epochs,
            eval_every=eval_every,
            prunable=prunable,
            prune_biases=prune_biases,
            ignore_layers=ignore_layers,
            rewind_iteration=rewind_iteration,
            initializer=initializer,
            controls=controls,
            seed=seed,
            device=device,
            precision=precision,
            compile=compile,
            channels_last=channels_last,
            progress=progress,
            data_dir=data_dir,
            val_size=val_size,
        )
        if not isinstance(model, nn.Module):
            raise LthError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        bundle = as_bundle(
            data, resolve_device(settings.device), val_size=settings.val_size, data_dir=settings.data_dir
        )
        self._setup(model, bundle, settings, data if isinstance(data, str) else None)

    def _setup(self, model: nn.Module, data: DataBundle | None, settings: LotterySettings, dataset: str | None) -> None:
        self._settings = settings
        self._dataset = dataset  # the lth dataset name, when data was given as one (saved for load)
        self._device = resolve_device(settings.device)
        self._module = copy.deepcopy(model).to(self._device)
        self._module.train()
        self._groups = resolve_prunable(self._module, settings)
        if "reinit" in settings.controls and settings.initializer is None:
            check_resettable(self._module, list(self._groups))
        self._data = data
        self._trainer: Trainer | None = None
        self._lockstep = False  # trained side by side with other trials (LotteryRobust)
        self._budget: int | None = None
        if data is not None:
            check_output(self._module, data)
            self._trainer = Trainer(
                data,
                settings.batch_size,
                settings.optimizer_settings(),
                settings.seed,
                settings.eval_every,
                settings.progress,
                acceleration=settings.acceleration(),
            )
            self._budget = training_budget(settings, self._trainer.iterations_per_epoch)
        params = dict(self._module.named_parameters())
        self._init_state = clone_state(self._module.state_dict())
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
        return mask_copy(self._mask)

    @property
    def masks(self) -> dict[int, Mask]:
        """The mask each trained round was trained under, by round (CPU copies)."""
        return {r: mask_copy(mask) for r, mask in sorted(self._masks.items())}

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
        return clone_state(self._init_state)

    @property
    def rows(self) -> list[dict]:
        """One summary row per trained round (as in a run's ``rounds.json``)."""
        return [row_copy(row) for row in self._rows]

    @property
    def control_masks(self) -> dict[str, dict[int, Mask]]:
        """The mask each control trained under, by control name and round (CPU copies; not saved)."""
        return {
            name: {r: mask_copy(mask) for r, mask in sorted(masks.items())}
            for name, masks in self._control_masks.items()
        }

    def lines(self) -> dict[str, list[dict]]:
        """The per-round rows of every line, by name, each sorted by round.

        ``ticket`` (:attr:`rows`) comes first, then each control of the ``controls`` setting (and
        any other with rows)."""
        names = [*self._settings.controls, *(n for n in self._control_rows if n not in self._settings.controls)]
        return {
            "ticket": self.rows,
            **{
                name: [row_copy(row) for row in sorted(self._control_rows.get(name, []), key=lambda r: r["round"])]
                for name in names
            },
        }

    def __repr__(self) -> str:
        return (
            f"LotteryModel(round={self._round}, weights_remaining={self._mask.density():.4f}, "
            f"trained_rounds={len(self._rows)})"
        )

    # -- one round ---------------------------------------------------------------------
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
        trainer = require_data(self, "train()")
        stop = self._budget if iterations is None else iterations
        start = 0 if self._round == 0 else self._settings.rewind_iteration
        capture = self._round == 0 and self._settings.rewind_iteration > 0
        check_stop(start, stop, self._settings.rewind_iteration if capture else None)
        assert stop is not None  # check_stop refused anything but an integer
        if self._needs_start:
            self.reinit()
        return train_round(self, trainer, start, stop, capture)

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
        return train_controls(self, names)

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
        per_param = prune_rates(self._mask, self._groups, rate, keep, scope, rates)
        if not self._trained or self._w_final is None:
            raise LthError("prune() needs a trained network for the current mask; call train() first")
        before, self._mask = self._mask, pruned_mask(self, criterion, per_param, scope)
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
        self._start_state = start_state(self, mask1, mask0, options)
        self._needs_start = False

    # -- whole procedures ----------------------------------------------------------------
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
    ) -> pd.DataFrame:
        """Iterative magnitude pruning: train (dense, if not yet), then ``rounds`` x (prune, reinit, train).

        Continues from the current state when called again. After every pruned round the
        ``controls`` setting's controls train (:meth:`train_controls`). Returns :meth:`summary`.
        """
        options = Mask1Options(keep_sign=keep_sign, rescale=rescale, jitter_sd=jitter_sd, constant=constant)
        check_procedure(criterion, scope, mask1, mask0, options)
        require_data(self, "a ticket search")
        if not is_int(rounds) or not 0 <= rounds <= MAX_ROUNDS:
            raise LthError(f"rounds must be an integer from 0 to {MAX_ROUNDS}, got {rounds!r}")
        prune_rates(self._mask, self._groups, rate, None, scope, rates)  # validate before any training
        self._train_current(mask1, mask0, options)
        train_missing_controls(self)
        for _ in range(rounds):
            self.prune(criterion, rate=rate, scope=scope, rates=rates)
            self.reinit(mask1, mask0, keep_sign, rescale, jitter_sd, constant)
            self.train()
            train_missing_controls(self)
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
    ) -> pd.DataFrame:
        """One-shot pruning: train once, prune once to ``keep`` of all weights, train again.

        Trains the dense network (if not yet), prunes it once to ``keep`` of all weights, reinits,
        trains the ticket (and the ``controls`` setting's controls, :meth:`train_controls`)."""
        options = Mask1Options(keep_sign=keep_sign, rescale=rescale, jitter_sd=jitter_sd, constant=constant)
        check_procedure(criterion, scope, mask1, mask0, options)
        require_data(self, "a ticket search")
        if not is_number(keep) or not 0 < keep <= 1:
            raise LthError(f"keep must be a fraction in (0, 1], got {keep!r}")
        self._train_current(mask1, mask0, options)
        train_missing_controls(self)
        self.prune(criterion, keep=keep, scope=scope)
        self.reinit(mask1, mask0, keep_sign, rescale, jitter_sd, constant)
        self.train()
        train_missing_controls(self)
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
    ) -> pd.DataFrame:
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
        from lth.experiments.lottery_model_stability import analyse_stability

        return analyse_stability(
            self, rewind, copies, points, path_train_size, stable_threshold, batch_norm_reset, seed
        )

    # -- results -------------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """One row per trained round: weights remaining, kept counts, per-layer density, accuracies."""
        import pandas as pd

        return pd.DataFrame(sorted(self.rows, key=lambda r: r["round"]), columns=list(ROW_KEYS))

    def metrics(self) -> pd.DataFrame:
        """Learning curves: round, iteration, split (train/val/test), loss, accuracy."""
        import pandas as pd

        return pd.DataFrame([dict(m) for m in self._metrics], columns=list(METRIC_KEYS))

    def plot_accuracy(self, ax: Axes | None = None) -> Figure:
        """Test accuracy at early stop and at the end against weights remaining (log x).

        The ticket is drawn solid, each control (:meth:`lines`) dashed."""
        from lth.plots import draw_accuracy

        lines = {name: rows for name, rows in self.lines().items() if rows or name == "ticket"}
        return draw_accuracy(
            {name if name == "ticket" else f"{name} control": rows for name, rows in lines.items()},
            ax=ax,
            dashed=[f"{name} control" for name in lines if name != "ticket"],
        )

    def plot_learning_curves(self, ax: Axes | None = None) -> Figure:
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
        return save_experiment(self, path)

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
    ) -> LotteryModel:
        """Restore a saved experiment into ``model``, an instance of the same module class.

        Summary, masks and the model are available at once; further rounds need ``data`` (the
        same data as before), unless it was saved as an lth dataset name. Tensors are read with
        ``torch.load(..., weights_only=True)``.
        """
        return load_experiment(cls, path, model, data, device=device, progress=progress, initializer=initializer)
