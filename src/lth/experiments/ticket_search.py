"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2019).

One round, as data: weights at the rewind point -> train under the mask -> w_f ->
criterion scores -> prune the lowest fraction of the kept weights -> rewind -> next round.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

from lth.config import TicketConfig, parse_duration
from lth.criteria import CRITERIA, compute_scores
from lth.data import DATASETS, Batcher, load_dataset
from lth.errors import LthError
from lth.masks import Mask
from lth.models import MODELS, build_model
from lth.plots import plot_run
from lth.pruning import layer_rates, prunable_parameters, prune
from lth.store import RunDir
from lth.training import OptimizerSettings, Trainer
from lth.training.optim import check_settings


@dataclass
class TicketResult:
    """The rounds' summaries (as in ``rounds.json``) and where they were written."""

    config: TicketConfig
    rounds: list[dict]
    masks: list[Mask]
    run_dir: Optional[RunDir]


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


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def find_ticket(
    config: TicketConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TicketResult:
    """Run a ticket search; write it to ``out`` (a run directory) when given."""
    spec = MODELS.get(config.model)
    DATASETS.get(config.dataset)
    CRITERIA.get(config.criterion)
    config = config.with_recipe(spec.recipe)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, data_dir=config.data_dir, device=device)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed).to(device)
    prunable = prunable_parameters(model, config.prune_biases, config.ignore_layers)
    if config.scope == "layerwise":
        rates = layer_rates(prunable, config.prune_rate_fc, config.prune_rate_conv, config.prune_rate_output)
    else:
        rates = {name: config.prune_rate for name in prunable}

    ipe = Batcher(data.train_x, data.train_y, config.batch_size, seed=config.seed).iterations_per_epoch
    budget = config.budget_iterations(ipe)
    rewind_at = parse_duration(config.rewind, ipe, budget)
    if rewind_at >= budget:
        raise LthError(
            f"rewind point {config.rewind!r} = iteration {rewind_at} is not before the end of training "
            f"(budget {budget} iterations)"
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
    # Everything is validated: only now touch the file system.
    run = RunDir.create(out, overwrite=overwrite) if out is not None else None

    params = dict(model.named_parameters())
    init_state = _clone_state(model)
    rewind_state = init_state if rewind_at == 0 else None
    mask = Mask.ones({name: params[name] for name in prunable})
    generator = torch.Generator().manual_seed(config.seed)
    started = _now()
    if run is not None:
        run.write_config(config.model_dump())
        run.write_status(status="running", started=started, device=str(device))
        run.save_weights("init", init_state)

    rounds: list[dict] = []
    masks: list[Mask] = []
    metrics: list[dict] = []
    w_final: dict[str, torch.Tensor] = {}
    for round_index in range(config.rounds + 1):
        if round_index > 0:
            w_init = {name: rewind_state[name] for name in prunable}
            scores = compute_scores(config.criterion, w_init, w_final, mask, generator)
            mask = prune(scores, mask, rates, config.scope, generator)
            model.load_state_dict(rewind_state)
        remaining = mask.density()

        def keep_rewind_point(t: int, m: torch.nn.Module) -> None:
            nonlocal rewind_state
            rewind_state = _clone_state(m)

        tic = time.perf_counter()
        result = trainer.train(
            model,
            mask,
            start=0 if round_index == 0 else rewind_at,
            stop=budget,
            capture=[rewind_at] if round_index == 0 and rewind_at > 0 else [],
            on_capture=keep_rewind_point,
            description=f"round {round_index}/{config.rounds}",
            postfix={"kept": f"{remaining:.4f}"},
        )
        w_final = {name: params[name].detach().clone() for name in prunable}
        summary = {
            "round": round_index,
            "weights_remaining": remaining,
            "kept_weights": mask.kept(),
            "total_weights": mask.size(),
            "layers": mask.layer_density(),
            "early_stop_iteration": result.early_stop_iteration,
            "val_accuracy_at_early_stop": result.val_accuracy_at_early_stop,
            "test_accuracy_at_early_stop": result.test_accuracy_at_early_stop,
            "final_val_accuracy": result.final_val_accuracy,
            "final_test_accuracy": result.final_test_accuracy,
            "final_test_loss": result.final_test_loss,
            "seconds": round(time.perf_counter() - tic, 3),
        }
        rounds.append(summary)
        masks.append(mask.cpu())
        metrics.extend({"round": round_index, **row} for row in result.metrics)
        if run is not None:
            if round_index == 0 and rewind_at > 0:
                run.save_weights("rewind", rewind_state)
            run.save_mask(round_index, mask)
            run.save_weights(f"final_round_{round_index:02d}", model.state_dict())
            run.write_metrics(metrics)
            run.write_rounds(rounds)
            plot_run(run)
    if run is not None:
        run.write_status(status="complete", started=started, finished=_now(), device=str(device))
    return TicketResult(config, rounds, masks, run)
