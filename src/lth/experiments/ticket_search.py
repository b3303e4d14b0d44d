"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2019),
generalised as in Zhou et al. 2019: any mask criterion, mask-1 and mask-0 actions, controls.

One round, as data: starting weights -> train under the mask -> w_f -> criterion scores ->
prune the lowest fraction of the kept weights -> mask-1 action on the kept weights, mask-0
action on the pruned ones -> next round.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lth.actions import LayerState, Mask1Options, round_start_values, validate_actions
from lth.config import TicketConfig, parse_duration
from lth.criteria import CRITERIA, compute_scores
from lth.data import DATASETS, Batcher, load_dataset
from lth.errors import LthError
from lth.experiments.controls import control_generator, prepare_control
from lth.masks import Mask
from lth.models import MODELS, build_model
from lth.plots import plot_run
from lth.pruning import layer_rates, prunable_parameters, prune
from lth.store import RunDir
from lth.training import OptimizerSettings, RoundResult, Trainer
from lth.training.optim import check_settings

GRADIENT_CRITERIA = ("snip", "grad")


@dataclass
class TicketResult:
    """The rounds' summaries (as in ``rounds.json``), the controls' and where they were written."""

    config: TicketConfig
    rounds: list[dict]
    masks: list[Mask]
    run_dir: Optional[RunDir]
    controls: dict[str, list[dict]] = field(default_factory=dict)


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


def _summary(round_index: int, mask: Mask, result: RoundResult, seconds: float) -> dict:
    return {
        "round": round_index,
        "weights_remaining": mask.density(),
        "kept_weights": mask.kept(),
        "total_weights": mask.size(),
        "layers": mask.layer_density(),
        "early_stop_iteration": result.early_stop_iteration,
        "val_accuracy_at_early_stop": result.val_accuracy_at_early_stop,
        "test_accuracy_at_early_stop": result.test_accuracy_at_early_stop,
        "final_val_accuracy": result.final_val_accuracy,
        "final_test_accuracy": result.final_test_accuracy,
        "final_test_loss": result.final_test_loss,
        "seconds": round(seconds, 3),
    }


def _gradients(model: nn.Module, batcher: Batcher, names: list[str]) -> dict[str, torch.Tensor]:
    """Loss gradients of ``names`` on the first training batch, for the snip/grad criteria."""
    x, y = batcher.batch(0)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    grads = {name: params[name].grad.detach().clone() for name in names}
    model.zero_grad(set_to_none=True)
    return grads


def _initial_mask(path: str, dense: Mask, params: dict[str, nn.Parameter]) -> Mask:
    """The round-0 mask from a mask file; it may cover only some of the prunable tensors."""
    loaded = Mask.load(path)
    loaded.check_matches(params)
    extra = [name for name in loaded if name not in dense]
    if extra:
        raise LthError(
            f"mask file {path!r} masks {extra[0]!r}, which this run does not prune; "
            f"prunable here: {', '.join(dense)}"
        )
    return Mask({name: loaded[name].to(m.device) if name in loaded else m for name, m in dense.items()})


@torch.no_grad()
def _start_round(
    params: dict[str, nn.Parameter],
    mask: Mask,
    w_init: dict[str, torch.Tensor],
    w_final: dict[str, torch.Tensor],
    fresh: Optional[dict[str, torch.Tensor]],
    generator: torch.Generator,
    config: TicketConfig,
    options: Mask1Options,
) -> None:
    """Give every prunable tensor its next-round start: mask-1 action on kept, mask-0 on pruned."""
    for name, m in mask.items():
        state = LayerState(
            w_init=w_init[name], w_final=w_final[name], mask=m, generator=generator,
            fresh=(lambda n=name: fresh[n]) if fresh is not None else None,
        )
        params[name].copy_(round_start_values(config.mask1, config.mask0, state, options))


class _Progress:
    """Accumulates one line of results (ticket or control) and writes it to the run directory."""

    def __init__(self, run: Optional[RunDir]) -> None:
        self.run = run
        self.rounds: list[dict] = []
        self.metrics: list[dict] = []

    def add(self, round_index: int, mask: Mask, result: RoundResult, seconds: float) -> None:
        self.rounds.append(_summary(round_index, mask, result, seconds))
        self.metrics.extend({"round": round_index, **row} for row in result.metrics)
        if self.run is not None:
            self.run.save_mask(round_index, mask)
            self.run.write_metrics(self.metrics)
            self.run.write_rounds(self.rounds)


def find_ticket(
    config: TicketConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TicketResult:
    """Run a ticket search (with its controls); write it to ``out`` (a run directory) when given."""
    spec = MODELS.get(config.model)
    DATASETS.get(config.dataset)
    CRITERIA.get(config.criterion)
    options = Mask1Options(
        keep_sign=config.keep_sign, rescale=config.rescale, jitter_sd=config.jitter_sd, constant=config.constant
    )
    validate_actions(config.mask1, config.mask0, options)
    config = config.with_recipe(spec.recipe)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, data_dir=config.data_dir, device=device)
    torch.manual_seed(config.seed)

    def fresh_state(seed: int) -> dict[str, torch.Tensor]:
        return build_model(config.model, data.input_shape, data.num_classes, seed=seed).to(device).state_dict()

    model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed).to(device)
    groups = prunable_parameters(model, config.prune_biases, config.ignore_layers)
    prunable = list(groups)
    if config.scope == "layerwise":
        rates = layer_rates(groups, config.prune_rate_fc, config.prune_rate_conv, config.prune_rate_output)
    else:
        rates = {name: config.prune_rate for name in prunable}

    batcher = Batcher(data.train_x, data.train_y, config.batch_size, seed=config.seed)
    ipe = batcher.iterations_per_epoch
    budget = config.budget_iterations(ipe)
    rewind_at = parse_duration(config.rewind, ipe, budget)
    if rewind_at >= budget:
        raise LthError(
            f"rewind point {config.rewind!r} = iteration {rewind_at} is not before the end of training "
            f"(budget {budget} iterations)"
        )
    final_at: Optional[int] = None  # None: end of round; -1: early-stopping iteration
    if config.w_final == "early-stop":
        final_at = -1
    elif config.w_final != "end":
        final_at = parse_duration(config.w_final, ipe, budget)
        if not rewind_at <= final_at <= budget:
            raise LthError(
                f"w_final point {config.w_final!r} = iteration {final_at} must lie within the retraining "
                f"window {rewind_at}..{budget}; or use 'end' or 'early-stop'"
            )
    settings = OptimizerSettings(
        name=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        milestones=tuple(parse_duration(m, ipe, budget) for m in config.milestones),
        gamma=config.gamma,
        warmup=parse_duration(config.warmup, ipe, budget),
    )
    check_settings(settings)
    trainer = Trainer(data, config.batch_size, settings, config.seed, config.eval_every, progress)
    params = dict(model.named_parameters())
    mask = Mask.ones({name: params[name] for name in prunable})
    if config.init_mask is not None:
        mask = _initial_mask(config.init_mask, mask, params)
    # Everything is validated: only now touch the file system.
    run = RunDir.create(out, overwrite=overwrite) if out is not None else None

    init_state = _clone_state(model)
    rewind_state = init_state if rewind_at == 0 else None
    generator = torch.Generator().manual_seed(config.seed)
    started = _now()
    if run is not None:
        run.write_config(config.model_dump())
        run.write_status(status="running", started=started, device=str(device))
        run.save_weights("init", init_state)

    mask.apply_(model)  # an --init-mask prunes from round 0 on
    ticket = _Progress(run)
    controls = {name: _Progress(run.control(name) if run else None) for name in config.controls}
    masks: list[Mask] = []
    w_final: dict[str, torch.Tensor] = {}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def capture(t: int, m: nn.Module) -> None:
        snapshots[t] = _clone_state(m)

    def train(round_index: int, label: str, round_mask: Mask, points: list[int], keep_best: bool) -> tuple[RoundResult, float]:
        tic = time.perf_counter()
        result = trainer.train(
            model, round_mask, start=0 if round_index == 0 else rewind_at, stop=budget,
            capture=points, on_capture=capture, description=f"{label} {round_index}/{config.rounds}",
            postfix={"kept": f"{round_mask.density():.4f}"}, zero_pruned=False, keep_best=keep_best,
        )
        return result, time.perf_counter() - tic

    for round_index in range(config.rounds + 1):
        if round_index > 0:
            w_init = {name: rewind_state[name] for name in prunable}
            model.load_state_dict(rewind_state)
            grads = None
            if config.criterion in GRADIENT_CRITERIA:
                mask.apply_(model)
                grads = _gradients(model, batcher, prunable)
                model.load_state_dict(rewind_state)
            scores = compute_scores(config.criterion, w_init, w_final, mask, generator, grads)
            mask = prune(scores, mask, rates, config.scope, generator)
            fresh = None
            if "reinit" in config.mask1:
                fresh = fresh_state(int(torch.randint(0, 2**62, (1,), generator=generator)))
            _start_round(params, mask, w_init, w_final, fresh, generator, config, options)
        snapshots.clear()
        points = ([rewind_at] if round_index == 0 and rewind_at > 0 else []) + ([final_at] if final_at else [])
        result, seconds = train(round_index, "round", mask, [p for p in points if p > 0], final_at == -1)
        if round_index == 0 and rewind_at > 0:
            rewind_state = snapshots[rewind_at]
        if final_at is None:
            w_final = {name: params[name].detach().clone() for name in prunable}
        else:
            source = result.best_state if final_at == -1 else snapshots[final_at]
            w_final = {name: source[name].clone() for name in prunable}
        ticket.add(round_index, mask, result, seconds)
        masks.append(mask.cpu())
        if run is not None:
            if round_index == 0 and rewind_at > 0:
                run.save_weights("rewind", rewind_state)
            run.save_weights(f"final_round_{round_index:02d}", model.state_dict())
        if round_index > 0:
            for name, line in controls.items():
                control_mask = prepare_control(
                    name, model, mask, rewind_state, fresh_state, control_generator(config.seed, name, round_index)
                )
                control_mask.apply_(model)
                result, seconds = train(round_index, name, control_mask, [], False)
                line.add(round_index, control_mask, result, seconds)
        if run is not None:
            plot_run(run)
    if run is not None:
        run.write_status(status="complete", started=started, finished=_now(), device=str(device))
    return TicketResult(config, ticket.rounds, masks, run, {name: line.rounds for name, line in controls.items()})
