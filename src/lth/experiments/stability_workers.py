"""The children of one rewind point trained in local worker processes (``lth stability --backend process``).

On a multi-core CPU one small network's training does not use every core; N children trained
in N processes (each with its share of the torch threads) finish sooner than one after another.
A worker reads the parent's weights and the level's mask from the run directory, trains its
child with the run's recipe and data order, and writes the child's weights atomically; the
driver records the results and checkpoints. A child that a kill interrupts is trained again
from k on resume (its result is the same: it depends on its seeds only).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.cpus import available_cpus
from lth.errors import LthError


@dataclass(frozen=True)
class ChildJob:
    """One child's training: the run's resolved config, the files it reads and writes, its seeds."""

    config: dict[str, Any]
    parent: str  # weights file of the parent at k
    mask: str | None  # mask file of the level (None: dense)
    out: str  # where the child's final weights go
    start: int
    stop: int
    data_seed: int
    dropout_seed: int


def _train_child(job: ChildJob) -> Any:
    """In a worker: train one child; its RoundResult, or ("error", message) for a user-facing failure."""
    import torch

    from lth.atomic import atomic_torch_save
    from lth.config import make_config, resolved
    from lth.data import shared_dataset
    from lth.experiments.ticket_search import optimizer_settings, resolve_device
    from lth.masks import Mask
    from lth.models import build_model
    from lth.training import Trainer

    try:
        config = make_config(job.config)
        device = resolve_device(config.device)
        data = shared_dataset(config.dataset, data_dir=config.data_dir, device=device)
        ipe = data.train_x.shape[0] // config.batch_size
        settings = optimizer_settings(config, ipe, config.budget_iterations(ipe))
        model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed).to(device)
        model.load_state_dict(torch.load(job.parent, map_location=device, weights_only=True))
        mask = None if job.mask is None else Mask.load(job.mask).to(device)
        torch.manual_seed(job.dropout_seed)
        trainer = Trainer(
            data,
            resolved(config.batch_size, "batch_size"),
            settings,
            job.data_seed,
            config.eval_every,
            progress=False,
            acceleration=config.acceleration(),
        )
        result = trainer.train(model, mask, start=job.start, stop=job.stop)
        atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(job.out))
        result.best_state = None
        return result
    except LthError as error:  # (a diverged training, a missing file): reported by the driver
        return ("error", str(error))


def train_children(jobs: list[ChildJob], workers: int) -> list[Any]:
    """Train ``jobs`` in at most ``workers`` spawned processes (each with its share of the CPUs'
    torch threads); their RoundResults in order. LthError for the first child that failed."""
    from lth.backends.process import _init

    count = max(1, min(workers, len(jobs)))
    threads = max(1, available_cpus() // count)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_init, initargs=(threads, os.getpid())) as pool:
        results = list(pool.map(_train_child, jobs))
    for result in results:
        if isinstance(result, tuple) and result and result[0] == "error":
            raise LthError(result[1])
    return results
