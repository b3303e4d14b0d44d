"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2019),
generalised as in Zhou et al. 2019: any mask criterion, mask-1 and mask-0 actions, controls.

One round, as data: starting weights -> train under the mask -> w_f -> criterion scores ->
prune the lowest fraction of the kept weights -> mask-1 action on the kept weights, mask-0
action on the pruned ones -> next round.

A search is resumable: with a run directory it writes a checkpoint (the whole loop state,
see :class:`_Search`) at every stage boundary and every ``checkpoint_every`` iterations, and
:func:`resume_ticket` continues from it with results bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import overload

import torch
from torch import nn

from lth.actions import LayerState, Mask1Options, fresh_draw, round_start_values, validate_actions
from lth.config import TicketConfig, make_config, parse_duration, resolved
from lth.criteria import CRITERIA, NEEDS_DERIVATIVE, compute_scores
from lth.data import DATASETS, Batcher, shared_dataset
from lth.errors import LthError, TrainingDiverged, warn
from lth.experiments.controls import control_generator, prepare_control
from lth.experiments.dense_trunk import DenseStore
from lth.global_rng import seed_global_rng, set_global_rng_state
from lth.loggers import TICKET, Logger, check_loggers, close_loggers, make_loggers
from lth.masks import Mask
from lth.models import MODELS, build_model
from lth.plots import plot_run
from lth.pruning import layer_rates, prunable_parameters, prune, warn_emptied
from lth.store import RunDir
from lth.store.file_checks import CHECKPOINT_FORMAT
from lth.store.lock import run_lock
from lth.store.ownership import created_and_locked
from lth.training import OptimizerSettings, RoundResult, Trainer, TrainProgress
from lth.training.lockstep import Lockstep
from lth.training.optim import check_settings
from lth.training.vectorized import check_vectorizable


@dataclass
class TicketResult:
    """The rounds' summaries (as in ``rounds.json``), the controls' and where they were written."""

    config: TicketConfig
    rounds: list[dict]
    masks: list[Mask]
    run_dir: RunDir | None
    controls: dict[str, list[dict]] = field(default_factory=dict)
    #: How this call got round 0: "trained", "reused" (from a shared dense trunk,
    #: :mod:`lth.experiments.dense_trunk`), or None (round 0 was done before a resume).
    dense: str | None = None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LthError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise LthError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _summary(round_index: int, mask: Mask, result: RoundResult) -> dict:
    return result.row(round_index, mask)


def _derivatives(
    criterion: str, model: nn.Module, batcher: Batcher, names: list[str], input_shape: tuple[int, ...]
) -> dict[str, dict[str, torch.Tensor]]:
    """What a model-based criterion needs (:mod:`lth.init_pruning.derivatives`), on the first
    training batch; {} for the weight-only criteria."""
    if criterion not in NEEDS_DERIVATIVE:
        return {}
    from lth.init_pruning.derivatives import criterion_derivatives

    return criterion_derivatives(criterion, model, names, [batcher.batch(0)], input_shape)


def _initial_mask(path: str, dense: Mask, params: dict[str, nn.Parameter]) -> Mask:
    """The round-0 mask from a mask file; it may cover only some of the prunable tensors."""
    loaded = Mask.load(path)  # refuses values other than booleans or 0/1
    if not loaded:
        raise LthError(f"mask file {path!r} holds no masks; prunable here: {', '.join(dense)}")
    extra = [name for name in loaded if name not in dense]
    if extra:
        raise LthError(
            f"mask file {path!r} masks {extra[0]!r}, which this run does not prune; prunable here: {', '.join(dense)}"
        )
    try:
        loaded.check_matches(params)
    except LthError as error:
        raise LthError(f"mask file {path!r} does not fit this model: {error}") from None
    return Mask({name: loaded[name].to(m.device) if name in loaded else m for name, m in dense.items()})


@torch.no_grad()
def _start_round(
    params: dict[str, nn.Parameter],
    mask: Mask,
    w_init: dict[str, torch.Tensor],
    w_final: dict[str, torch.Tensor],
    fresh: dict[str, torch.Tensor] | None,
    generator: torch.Generator,
    config: TicketConfig,
    options: Mask1Options,
) -> None:
    """Give every prunable tensor its next-round start: mask-1 action on kept, mask-0 on pruned."""
    for name, m in mask.items():
        state = LayerState(
            w_init=w_init[name],
            w_final=w_final[name],
            mask=m,
            generator=generator,
            fresh=fresh_draw(fresh, name) if fresh is not None else None,
        )
        params[name].copy_(round_start_values(config.mask1, config.mask0, state, options))


def _mask1_options(config: TicketConfig) -> Mask1Options:
    return Mask1Options(
        keep_sign=config.keep_sign, rescale=config.rescale, jitter_sd=config.jitter_sd, constant=config.constant
    )


def optimizer_settings(config: TicketConfig, iterations_per_epoch: int, budget: int) -> OptimizerSettings:
    """The optimizer recipe of ``config`` (a resolved one: see :func:`check_config`), its durations in
    iterations; LthError for a bad value, a warning for a warmup longer than the budget."""
    ipe = iterations_per_epoch
    settings = OptimizerSettings(
        name=resolved(config.optimizer, "optimizer"),
        lr=resolved(config.lr, "lr"),
        momentum=resolved(config.momentum, "momentum"),
        nesterov=resolved(config.nesterov, "nesterov"),
        weight_decay=resolved(config.weight_decay, "weight_decay"),
        milestones=tuple(parse_duration(m, ipe, budget) for m in resolved(config.milestones, "milestones")),
        gamma=resolved(config.gamma, "gamma"),
        warmup=parse_duration(resolved(config.warmup, "warmup"), ipe, budget),
    )
    check_settings(settings)
    if settings.warmup > budget:
        warn(
            f"--warmup {config.warmup} ({settings.warmup} iterations) is longer than the training budget "
            f"({budget} iterations); the learning rate never reaches --lr"
        )
    return settings


def plain_rewind(config: TicketConfig) -> bool:
    """Does every round start from the rewind weights under its mask (pruned ones 0)? Then a round's
    starting weights follow from ``weights/rewind.pt`` (or ``init.pt``) and its mask; otherwise
    the search stores them as ``weights/start_round_NN.pt`` (for branches, :mod:`lth.experiments.branches`)."""
    return config.mask1 == "rewind" and config.mask0 == "zero" and not config.keep_sign and not config.rescale


def check_config(config: TicketConfig) -> TicketConfig:
    """The checks that need no data (names in the registries, valid actions); the config with
    the model's recipe filled in. Raises LthError for the first problem."""
    spec = MODELS.get(config.model)
    DATASETS.get(config.dataset)
    CRITERIA.get(config.criterion)
    validate_actions(config.mask1, config.mask0, _mask1_options(config))
    return config.with_recipe(spec.recipe)


class _Progress:
    """Accumulates one line of results (ticket or control), writes it to the run directory and
    hands each round to the loggers (see :mod:`lth.loggers`)."""

    def __init__(self, run: RunDir | None, name: str = TICKET) -> None:
        self.run = run
        self.name = name
        self.rounds: list[dict] = []
        self.metrics: list[dict] = []
        self.loggers: list[Logger] = []
        self.replayed: set[int] = set()  # ids of loggers that were fresh when attached
        self.logged = -1  # the last round the loggers got (from the run directory)

    def add(self, round_index: int, mask: Mask, result: RoundResult) -> None:
        summary = _summary(round_index, mask, result)
        rows = [{"round": round_index, **row} for row in result.metrics]
        self.rounds.append(summary)
        self.metrics.extend(rows)
        if self.run is not None:
            self.run.save_mask(round_index, mask)
            self.run.write_metrics(self.metrics)
            self.run.write_rounds(self.rounds)
        for logger in self.loggers:  # a round retrained after a kill is not logged twice
            if id(logger) in self.replayed or round_index > self.logged:
                logger.log_round(self.name, summary, rows)
        if self.loggers and self.run is not None and round_index > self.logged:
            self.logged = round_index
            self.run.write_logged_round(round_index)

    def attach(self, loggers: list[Logger]) -> None:
        """Log from now on to ``loggers``; replay the rounds recorded so far into fresh ones."""
        self.loggers = loggers
        self.logged = self.run.logged_round() if self.run is not None else -1
        self.replayed = {id(logger) for logger in loggers if logger.fresh}
        for logger in loggers:
            if logger.fresh:
                for summary in self.rounds:
                    logger.log_round(self.name, summary, [m for m in self.metrics if m["round"] == summary["round"]])

    def state(self) -> dict:
        return {"rounds": self.rounds, "metrics": self.metrics}

    def restore(self, state: dict) -> None:
        self.rounds, self.metrics = list(state["rounds"]), list(state["metrics"])


_IGNORED_ON_RESUME = ("name", "device", "data_dir", "checkpoint_every", "vectorize")
SCORE_BATCHES = 10  # training batches that snip and grasp score on at initialisation (--score-batches)
LIVE_PLOT_SECONDS = 60.0  # an unfinished search redraws its figures at most this often


class _Search:
    """One ticket search as an explicit state machine, so that it can stop and resume anywhere.

    The loop position is (``round``, ``stage``): stage ``start`` prunes and resets the weights
    for the round, ``ticket`` trains the ticket, then one stage per control. Everything that
    changes from step to step lives in the attributes saved by :meth:`checkpoint`; everything
    else is rebuilt from the config, deterministically.
    """

    def __init__(
        self,
        config: TicketConfig,
        run: RunDir | None,
        progress: bool,
        leave: bool = True,
        trainer_factory: Callable[..., Trainer] | None = None,
    ) -> None:
        self.config = config = check_config(config)
        check_loggers(config.log)  # a missing package fails here, before any data or training
        self.options = _mask1_options(config)
        self.device = device = resolve_device(config.device)
        self.data = data = shared_dataset(config.dataset, data_dir=config.data_dir, device=device)
        seed_global_rng(config.seed)  # threads of a vectorised study: never amid another's seeded draws
        self.model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed).to(device)
        groups = prunable_parameters(self.model, config.prune_biases, config.ignore_layers)
        self.prunable = list(groups)
        if config.scope == "layerwise":
            self.rates = layer_rates(
                groups,
                resolved(config.prune_rate_fc, "prune_rate_fc"),
                resolved(config.prune_rate_conv, "prune_rate_conv"),
                resolved(config.prune_rate_output, "prune_rate_output"),
            )
        else:
            rate = resolved(config.prune_rate, "prune_rate")
            self.rates = {name: rate for name in self.prunable}

        batch_size = resolved(config.batch_size, "batch_size")
        self.batcher = Batcher(data.train_x, data.train_y, batch_size, seed=config.seed)
        ipe = self.batcher.iterations_per_epoch
        self.budget = budget = config.budget_iterations(ipe)
        self.rewind_at = parse_duration(config.rewind, ipe, budget)
        if self.rewind_at >= budget:
            raise LthError(
                f"rewind point {config.rewind!r} = iteration {self.rewind_at} is not before the end of training "
                f"(budget {budget} iterations)"
            )
        self.final_at: int | None = None  # None: end of round; -1: early-stopping iteration
        if config.w_final == "early-stop":
            self.final_at = -1
        elif config.w_final != "end":
            self.final_at = parse_duration(config.w_final, ipe, budget)
            if not self.rewind_at <= self.final_at <= budget:
                raise LthError(
                    f"w_final point {config.w_final!r} = iteration {self.final_at} must lie within the retraining "
                    f"window {self.rewind_at}..{budget}; or use 'end' or 'early-stop'"
                )
        settings = optimizer_settings(config, ipe, budget)
        self.vectorizable = _vectorizable(self.model)
        self.trainer = (trainer_factory or Trainer)(
            data,
            batch_size,
            settings,
            config.seed,
            config.eval_every,
            progress,
            leave,
            acceleration=config.acceleration(),
        )
        self.params = dict(self.model.named_parameters())
        mask = Mask.ones({name: self.params[name] for name in self.prunable})
        if config.init_mask is not None:
            mask = _initial_mask(config.init_mask, mask, self.params)
        self.at_init: dict | None = None  # how --prune-at-init chose the round-0 mask
        if config.prune_at_init is not None:
            mask = self.prune_at_init(progress)
        self.run = run

        # The loop state: all of it goes into a checkpoint.
        self.round, self.stage = 0, "start"
        self.mask = mask
        self.control_mask: Mask | None = None
        self.init_state = _clone_state(self.model)
        self.rewind_state = self.init_state if self.rewind_at == 0 else None
        self.w_final: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(config.seed)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.pending: TrainProgress | None = None  # an interrupted training of the current stage
        self.masks: list[Mask] = []
        self.ticket = _Progress(run)
        self.controls = {name: _Progress(run.control(name) if run else None, name) for name in config.controls}
        self.started = _now()
        self.resumed = 0
        self.side_by_side = False  # inside train_round_side_by_side
        self.plotted = time.monotonic()  # when the run's figures were last drawn
        self.dense_store: DenseStore | None = None  # a shared dense trunk (find_ticket's dense_store)
        self.dense: str | None = None  # how round 0 was had in this call: trained | reused

    # -- pruning at initialisation ------------------------------------------------------
    def prune_at_init(self, progress: bool) -> Mask:
        """The round-0 mask of ``--prune-at-init`` (:mod:`lth.init_pruning`), after its ablation;
        ``reinit`` also redraws the kept weights of the model. Deterministic given the config, so
        a resumed search recomputes it (and then takes the mask from its checkpoint)."""
        from lth.experiments.branch_kinds import level_seed
        from lth.init_pruning import ablate_mask, needs_data, prune_at_init, reinit_weights

        config = self.config
        method = config.prune_at_init
        assert method is not None and config.init_keep is not None
        batches = None
        if needs_data(method):
            batches = [self.batcher.batch(i) for i in range(config.score_batches or SCORE_BATCHES)]
        found = prune_at_init(
            self.model,
            method,
            config.init_keep,
            batches=batches,
            input_shape=self.data.input_shape,
            scope=resolved(config.scope, "scope"),
            iterations=config.prune_iterations,
            names=self.prunable,
            seed=level_seed(config.seed, "prune-at-init", 0),
            progress=progress,
            warn_collapsed=False,
        )
        generator = torch.Generator().manual_seed(level_seed(config.seed, "prune-at-init-ablation", 0))
        mask = ablate_mask(config.init_ablation, found.mask, found.first_scores, generator)
        if config.init_ablation == "reinit":
            fresh = self.fresh_state(level_seed(config.seed, "prune-at-init-reinit", 0))
            values = reinit_weights({n: self.params[n].detach() for n in mask}, fresh, mask)
            with torch.no_grad():
                for name, value in values.items():
                    self.params[name].copy_(value)
        self.at_init = {
            **found.summary(),
            "ablation": config.init_ablation,
            "batches": len(batches or []),
            "layers": mask.layer_density(),
            "collapsed": [n for n, m in mask.items() if not bool(m.any())],
        }
        return mask

    # -- fresh weights -----------------------------------------------------------------
    def fresh_state(self, seed: int) -> dict[str, torch.Tensor]:
        data = self.data
        return (
            build_model(self.config.model, data.input_shape, data.num_classes, seed=seed).to(self.device).state_dict()
        )

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self, training: TrainProgress | None = None) -> None:
        """Write the resume point (nothing without a run directory)."""
        if self.run is None:
            return
        cpu = _to_cpu
        self.run.write_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "round": self.round,
                "stage": self.stage,
                "mask": cpu(self.mask),
                "control_mask": cpu(self.control_mask),
                "w_final": cpu(self.w_final),
                "rewind_state": cpu(self.rewind_state),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "snapshots": {t: cpu(state) for t, state in self.snapshots.items()},
                "masks": [dict(m) for m in self.masks],
                "ticket": self.ticket.state(),
                "controls": {name: line.state() for name, line in self.controls.items()},
                "training": None if training is None else training.portable(),
                "started": self.started,
                "resumed": self.resumed,
            }
        )

    def restore(self, state: dict) -> None:
        """Put the loop back where :meth:`checkpoint` left it."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise LthError(f"checkpoint format {state.get('format')!r} is not supported (expected {CHECKPOINT_FORMAT})")
        dev = self.device
        self.round, self.stage = state["round"], state["stage"]
        self.mask = Mask(_to(state["mask"], dev))
        self.control_mask = Mask(_to(state["control_mask"], dev)) if state["control_mask"] is not None else None
        self.w_final = _to(state["w_final"], dev)
        self.rewind_state = _to(state["rewind_state"], dev)
        self.generator.set_state(state["generator"])
        set_global_rng_state(state["torch_rng"])
        self.snapshots = {t: _to(s, dev) for t, s in state["snapshots"].items()}
        self.masks = [Mask(m) for m in state["masks"]]
        self.ticket.restore(state["ticket"])
        for name, line in self.controls.items():
            line.restore(state["controls"][name])
        training = state["training"]
        self.pending = None if training is None else TrainProgress.restored(training, dev)
        self.started = state["started"]
        self.resumed = state["resumed"] + 1

    # -- the loop ----------------------------------------------------------------------
    def run_all(self) -> TicketResult:
        """Run the search from where it stands to the end.

        A user-facing error on the way (LthError: training diverged, disk full...) is recorded in
        ``status.json``, where that file can still be written: status ``diverged`` (a NaN or
        infinite loss) or ``failed`` (anything else), with the message as ``error``. The rounds
        finished before stay in the run directory and the last checkpoint stays valid, so
        ``lth resume`` continues from it (once the disk has room, or after a code fix).
        """
        config, run = self.config, self.run
        loggers: list[Logger] = []
        try:
            if run is not None:
                run.write_config(config.model_dump())
                run.write_status(status="running", started=self.started, device=str(self.device), resumed=self.resumed)
                run.save_weights("init", self.init_state)
            loggers = make_loggers(config.log, run, config.model_dump())  # opened (or reopened) here: run is known
            for line in (self.ticket, *self.controls.values()):
                line.attach(loggers)
            if self.round == 0 and self.stage == "start":
                self.mask.apply_(self.model)  # an --init-mask or --prune-at-init prunes from round 0 on
                if self.at_init is not None:
                    if run is not None:
                        run.write_prune_at_init(self.at_init)
                    if self.at_init["collapsed"]:
                        warn(
                            f"{config.prune_at_init} keeping {100 * self.at_init['keep']:.3g}% of the weights "
                            f"leaves no weight in {', '.join(self.at_init['collapsed'])}: nothing flows through it "
                            "(layer collapse; without a path around it the network is disconnected)"
                        )
                self.checkpoint()
            stages = ["ticket", *config.controls]
            while self.round <= config.rounds:
                if self.stage == "start":
                    if self.round > 0:
                        self.prepare_round()
                    self.stage, self.snapshots = "ticket", {}
                if self.stage == "ticket" and self.controls_side_by_side():
                    self.train_round_side_by_side()
                    self.stage = stages[-1]
                    self.advance(stages)
                if self.stage == "ticket":
                    self.train_ticket()
                    self.advance(stages)
                while self.stage in config.controls:
                    self.train_control(self.stage)
                    self.advance(stages)
            if run is not None:
                run.write_status(
                    status="complete",
                    started=self.started,
                    finished=_now(),
                    device=str(self.device),
                    resumed=self.resumed,
                )
                run.remove_checkpoint()
        except BaseException as error:
            close_loggers(loggers, "killed" if isinstance(error, KeyboardInterrupt) else "failed")
            if isinstance(error, LthError):
                raise self.stopped(error) from None
            raise
        close_loggers(loggers)
        return TicketResult(
            config,
            self.ticket.rounds,
            self.masks,
            run,
            {name: line.rounds for name, line in self.controls.items()},
            self.dense,
        )

    def stopped(self, error: LthError) -> LthError:
        """Record in ``status.json`` why the search stopped; return the error to raise.

        A :class:`~lth.errors.TrainingDiverged` becomes one line naming the round, the iteration
        and where the earlier rounds are kept (status ``diverged``); any other LthError keeps its
        message (status ``failed``). If the status cannot be written (e.g. the disk is still
        full), the file stays as it was: ``lth resume`` works either way.
        """
        status = "failed"
        if isinstance(error, TrainingDiverged):
            status = "diverged"
            who = "training"
            if self.side_by_side and error.index is not None:
                who = (
                    "training of the ticket"
                    if error.index == 0
                    else f"training of the {self.config.controls[error.index - 1]} control"
                )
            elif error.network:  # e.g. a study's trials trained side by side
                who = f"training of {error.network} trained side by side"
            elif self.stage in self.config.controls:
                who = f"training of the {self.stage} control"
            kept = f"the rounds before it are kept in {self.run.path}; " if self.run is not None and self.round else ""
            message = (
                f"{who} diverged in round {self.round} at iteration {error.iteration} (loss {error.loss}); "
                f"{kept}{error.hint('--lr')}"
            )
            error = TrainingDiverged(error.iteration, error.loss, error.start, error.network, message=message)
        run = self.run
        if run is not None and (run.path / "config.yaml").is_file():  # else the directory is not a run (yet)
            try:
                run.write_status(
                    status=status,
                    error=str(error),
                    started=self.started,
                    stopped=_now(),
                    device=str(self.device),
                    resumed=self.resumed,
                )
            except (OSError, LthError):
                pass  # the disk is still full: status.json keeps its last contents
        return error

    def advance(self, stages: list[str]) -> None:
        """Move to the next stage (a control, or the next round) and checkpoint there."""
        following = stages[stages.index(self.stage) + 1 :] if self.round > 0 else []
        if following:
            self.stage = following[0]
        else:
            self.round, self.stage = self.round + 1, "start"
            # Figures when the search ends; before that at most once a minute (a live view of a
            # long search), not after every round: drawing them costs about a second.
            last = self.round > self.config.rounds
            if self.run is not None and (last or time.monotonic() - self.plotted >= LIVE_PLOT_SECONDS):
                plot_run(self.run)
                self.plotted = time.monotonic()
        self.control_mask = None
        self.checkpoint()

    def prepare_round(self) -> None:
        """Prune by the criterion, then give kept and pruned weights their next-round start."""
        config, prunable = self.config, self.prunable
        rewind_state = self.rewind_state
        assert rewind_state is not None  # kept from round 0 on (captured at the rewind point)
        w_init = {name: rewind_state[name] for name in prunable}
        self.model.load_state_dict(rewind_state)
        derivatives = {}
        if config.criterion in NEEDS_DERIVATIVE:
            self.mask.apply_(self.model)
            derivatives = _derivatives(config.criterion, self.model, self.batcher, prunable, self.data.input_shape)
            self.model.load_state_dict(rewind_state)
        scores = compute_scores(
            config.criterion, w_init, self.w_final, self.mask, self.generator, derivatives=derivatives
        )
        before, self.mask = (
            self.mask,
            prune(scores, self.mask, self.rates, resolved(config.scope, "scope"), self.generator),
        )
        warn_emptied(before, self.mask, self.round, "lower --prune-rate or --rounds")
        fresh = None
        if "reinit" in config.mask1:
            fresh = self.fresh_state(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        _start_round(self.params, self.mask, w_init, self.w_final, fresh, self.generator, config, self.options)
        if self.run is not None and not plain_rewind(config):  # branches need this round's start
            self.run.save_weights(f"start_round_{self.round:02d}", self.model.state_dict())

    def train(self, label: str, mask: Mask, points: list[int], keep_best: bool) -> RoundResult:
        pending, self.pending = self.pending, None

        def capture(t: int, m: nn.Module) -> None:
            self.snapshots[t] = _clone_state(m)

        return self.trainer.train(
            self.model,
            mask,
            start=0 if self.round == 0 else self.rewind_at,
            stop=self.budget,
            capture=points,
            on_capture=capture,
            description=f"{label} {self.round}/{self.config.rounds}",
            postfix={"kept": f"{mask.density():.4f}"},
            zero_pruned=False,
            keep_best=keep_best,
            checkpoint_every=self.config.checkpoint_every if self.run is not None else 0,
            on_checkpoint=self.checkpoint,
            resume=pending,
        )

    def train_ticket(self) -> None:
        key = self.dense_key() if self.round == 0 else None
        result = self.reuse_dense(key) if key is not None else None
        if result is None:
            result = self.train("round", self.mask, self.ticket_points(), self.final_at == -1)
            if self.round == 0:
                self.dense = "trained"
                if key is not None:
                    self.save_dense(key, result)
        self.finish_ticket(result)

    # -- a shared dense trunk (lth.experiments.dense_trunk) ------------------------------
    def dense_key(self) -> str | None:
        """The key of round 0 in the dense store; None when round 0 is not shared.

        Only a plain :class:`Trainer` shares: a trainer_factory's trainer (e.g. a lockstep one,
        trials trained side by side, vectorised) trains with other rounding, so its round 0
        would not equal a lone training bit for bit.
        """
        if self.dense_store is None or type(self.trainer) is not Trainer:
            return None
        from lth.experiments.dense_trunk import dense_trunk_key

        return dense_trunk_key(self.config, self.device, self.mask, self.data)

    def reuse_dense(self, key: str) -> RoundResult | None:
        """Put the search where training round 0 would leave it, from the store; None on a miss."""
        assert self.dense_store is not None
        cuda = self.device.type == "cuda"
        entry = self.dense_store.load(key, self.model.state_dict(), self.ticket_points(), self.final_at == -1, cuda)
        if entry is None:
            return None
        dev = self.device
        self.pending = None  # an interrupted training of round 0 would end where the stored one did
        self.model.load_state_dict(_to(entry.model, dev))
        self.model.train()  # as Trainer.train leaves it
        self.trainer.acceleration.prepare(self.model)
        self.snapshots = {t: _to(state, dev) for t, state in entry.snapshots.items()}
        result = entry.result
        result.best_state = _to(result.best_state, dev)
        set_global_rng_state(entry.torch_rng)
        if cuda:
            assert entry.cuda_rng is not None  # the store's load checks it is there when cuda
            torch.cuda.set_rng_state(entry.cuda_rng, dev)
        self.dense = "reused"
        return result

    def save_dense(self, key: str, result: RoundResult) -> None:
        assert self.dense_store is not None
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.dense_store.save(key, result, self.model.state_dict(), self.snapshots, torch.get_rng_state(), cuda_rng)

    def ticket_points(self) -> list[int]:
        """Iterations whose weights the ticket's training must capture (rewind point, w_f point)."""
        points = ([self.rewind_at] if self.round == 0 and self.rewind_at > 0 else []) + (
            [self.final_at] if self.final_at else []
        )
        return [p for p in points if p > 0]

    def finish_ticket(self, result: RoundResult) -> None:
        r, rewind_at, final_at, run = self.round, self.rewind_at, self.final_at, self.run
        if r == 0 and rewind_at > 0:
            self.rewind_state = self.snapshots[rewind_at]
        if final_at is None:
            self.w_final = {name: self.params[name].detach().clone() for name in self.prunable}
        else:
            source = result.best_state if final_at == -1 else self.snapshots[final_at]
            assert source is not None  # final_at == -1 trains with keep_best, which sets best_state
            self.w_final = {name: source[name].clone() for name in self.prunable}
        self.snapshots = {}
        self.ticket.add(r, self.mask, result)
        self.masks.append(self.mask.cpu())
        if run is not None:
            if r == 0 and rewind_at > 0:
                assert self.rewind_state is not None  # just taken from the snapshots
                run.save_weights("rewind", self.rewind_state)
            if r == 0 and final_at is not None:  # w_f is not the end state: keep it for one-shot branches
                run.save_weights("w_final_round_00", self.w_final)
            run.save_weights(f"final_round_{r:02d}", self.model.state_dict())

    def train_control(self, name: str) -> None:
        if self.pending is None:
            self.control_mask = self.prepare_control(name, self.model)
        control_mask = self.control_mask
        assert control_mask is not None  # prepared above, or restored with the pending training
        result = self.train(name, control_mask, [], False)
        self.controls[name].add(self.round, control_mask, result)

    def prepare_control(self, name: str, model: nn.Module) -> Mask:
        """Load the control's starting weights into ``model``; return its mask."""
        assert self.rewind_state is not None  # controls train from round 1 on
        mask = prepare_control(
            name,
            model,
            self.mask,
            self.rewind_state,
            self.fresh_state,
            control_generator(self.config.seed, name, self.round),
        )
        mask.apply_(model)
        return mask

    def controls_side_by_side(self) -> bool:
        """Train this round's ticket and controls in one vectorised training? (``auto``: on a GPU only;
        on a CPU one network's step already runs near the machine's limits.)"""
        wanted = self.config.vectorize != "off" and (self.config.vectorize != "auto" or self.device.type == "cuda")
        return (
            wanted
            and self.round > 0
            and bool(self.config.controls)
            and self.pending is None
            and type(self.trainer) is Trainer
            and self.vectorizable
            and self.trainer.acceleration.vectorizable
        )

    def train_round_side_by_side(self) -> None:
        """The ticket and every control of this round trained at once (:mod:`lth.training.lockstep`)."""
        names = list(self.config.controls)
        models = {name: copy.deepcopy(self.model) for name in names}
        masks = {name: self.prepare_control(name, models[name]) for name in names}
        lockstep = Lockstep(1 + len(names), progress=self.trainer.progress)
        t = self.trainer
        trainer = lockstep.trainer_factory()(
            t.data, t.batcher.batch_size, t.optimizer, self.config.seed, t.eval_every, acceleration=t.acceleration
        )
        start = self.rewind_at

        def job(
            model: nn.Module, mask: Mask, label: str, points: list[int], keep_best: bool
        ) -> Callable[[], RoundResult]:
            def capture(step: int, m: nn.Module) -> None:
                self.snapshots[step] = _clone_state(m)

            return lambda: trainer.train(
                model,
                mask,
                start=start,
                stop=self.budget,
                capture=points,
                on_capture=capture,
                description=f"{label} {self.round}/{self.config.rounds}",
                zero_pruned=False,
                keep_best=keep_best,
            )

        self.side_by_side = True  # for the message of a divergence: which network
        results = lockstep.run(
            [job(self.model, self.mask, "round+controls", self.ticket_points(), self.final_at == -1)]
            + [job(models[name], masks[name], name, [], False) for name in names]
        )
        self.side_by_side = False
        self.finish_ticket(results[0])
        for name, result in zip(names, results[1:]):
            self.controls[name].add(self.round, masks[name], result)


def _vectorizable(model: nn.Module) -> bool:
    try:
        check_vectorizable(model)
        return True
    except LthError:
        return False


def _to_cpu(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: v.detach().cpu() for k, v in state.items()}


@overload
def _to(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]: ...
@overload
def _to(state: None, device: torch.device) -> None: ...
@overload
def _to(state: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor] | None: ...
def _to(state: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: v.to(device) for k, v in state.items()}


def find_ticket(
    config: TicketConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    leave: bool = True,
    trainer_factory: Callable[..., Trainer] | None = None,
    dense_store: DenseStore | None = None,
) -> TicketResult:
    """Run a ticket search (with its controls); write it to ``out`` (a run directory) when given.

    ``leave=False`` clears each progress bar when its training ends (for runs inside a study).
    ``trainer_factory`` replaces :class:`Trainer` (same arguments), e.g. by a
    :class:`~lth.training.lockstep.LockstepTrainer` that trains several searches side by side.
    With ``resume`` and an unfinished run of the same config in ``out``, continue it from its
    last checkpoint; a finished one is returned as it is; an absent one starts afresh.
    ``dense_store``: a :class:`~lth.experiments.dense_trunk.DenseStore`; round 0 is taken from it
    when it holds this config's dense training, else trained and stored there.
    """
    if resume and out is not None and (Path(out) / "config.yaml").is_file():
        run = RunDir.open(out)
        stored = make_config(run.config())
        wanted = config.with_recipe(MODELS.get(config.model).recipe)
        _check_same_config(stored, wanted, run)
        if run.status().get("status") == "complete":
            return load_ticket_result(run)
        return resume_ticket(
            run.path, progress=progress, leave=leave, trainer_factory=trainer_factory, dense_store=dense_store
        )
    search = _Search(config, None, progress, leave, trainer_factory)  # validates everything before touching the disk
    search.dense_store = dense_store
    if out is None:
        return search.run_all()
    with created_and_locked(out, lambda: RunDir.create(out, overwrite=overwrite)) as run:  # one writer per run
        search.run = run
        search.ticket.run = search.run
        for name, line in search.controls.items():
            line.run = search.run.control(name)
        return search.run_all()


def resume_ticket(
    path: str | Path,
    progress: bool = True,
    leave: bool = True,
    trainer_factory: Callable[..., Trainer] | None = None,
    dense_store: DenseStore | None = None,
) -> TicketResult:
    """Continue an unfinished run directory from its last checkpoint (LthError while another process writes it)."""
    run = RunDir.open(path)
    with run_lock(run.path):
        status = run.status().get("status")
        if status == "complete":
            raise LthError(f"run {str(path)!r} is already complete; nothing to resume")
        state = run.load_checkpoint()
        if state is None and run.rounds():
            raise LthError(f"run {str(path)!r} has no checkpoint to resume from")
        config = make_config(run.config())
        search = _Search(config, run, progress, leave, trainer_factory)
        search.dense_store = dense_store
        if state is not None:  # else it stopped (e.g. on a full disk) before its first checkpoint: start over
            _restore(search, state, run)
        run.remove_temporary_files()
        return search.run_all()


def _restore(search: _Search, state: dict, run: RunDir) -> None:
    """``search.restore(state)``; a checkpoint whose contents do not fit the run (its model, its
    controls) is refused in one line instead of failing somewhere in training."""
    from lth.documents import brief, damaged

    hint = "the run cannot be resumed"
    try:
        search.restore(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise damaged(
            run.checkpoint_path, f"it does not fit this run ({type(error).__name__}: {brief(str(error), 60)})", hint
        ) from None
    shapes = {name: tuple(value.shape) for name, value in search.model.state_dict().items()}
    pending = search.pending
    parts = {
        "mask": search.mask,
        "rewind_state": search.rewind_state or {},
        "w_final": search.w_final,
        "training model": pending.model if pending is not None else {},
    }
    for what, tensors in parts.items():
        for name, tensor in tensors.items():
            if shapes.get(name) != tuple(tensor.shape):
                raise damaged(
                    run.checkpoint_path,
                    f"its {what} has {name!r} of shape {tuple(tensor.shape)}, "
                    f"which {search.config.model} does not have",
                    hint,
                )


def load_ticket_result(run: RunDir) -> TicketResult:
    """The result of a finished run, read back from its directory."""
    rounds = run.rounds()
    return TicketResult(
        make_config(run.config()), rounds, [run.load_mask(r["round"]) for r in rounds], run, run.controls()
    )


def _check_same_config(stored: TicketConfig, wanted: TicketConfig, run: RunDir) -> None:
    a, b = stored.model_dump(), wanted.model_dump()
    for key in a:
        if key not in _IGNORED_ON_RESUME and a[key] != b[key]:
            raise LthError(
                f"cannot resume {str(run.path)!r}: its {key} is {a[key]!r} but this command asks for {b[key]!r}"
            )
