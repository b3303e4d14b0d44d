"""Model-based criteria (snip, grad, grasp, synflow) on saved weights: ``lth mask --model``.

The weights are loaded into a registered model built for the dataset's input shape; the data
methods score on the first ``score_batches`` training batches of the dataset (the seeded order of
a run with that seed), SynFlow on the input shape alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lth.criteria import NEEDS_DATA, NEEDS_DERIVATIVE, compute_scores
from lth.errors import LthError
from lth.masks import Mask
from lth.pruning import prune

#: Batches snip/grad/grasp score on by default (as ``lth prune-at-init``).
SCORE_BATCHES = 10


def load_into_model(model_name: str, dataset: str, state: Mapping[str, Tensor], seed: int = 0) -> torch.nn.Module:
    """Registered model ``model_name`` for ``dataset``'s shape, holding ``state`` (LthError when it does not fit)."""
    from lth.data import DATASETS
    from lth.models import build_model

    source = DATASETS.get(dataset)
    model = build_model(model_name, source.input_shape, source.num_classes, seed=seed)
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise LthError(
            f"the weights do not fit model {model_name!r} for {dataset!r}: {lines[-1] if lines else error}"
        ) from None
    return model


def score_batches(
    dataset: str, batch_size: int, count: int, seed: int, data_dir: str | None = None
) -> list[tuple[Tensor, Tensor]]:
    """The first ``count`` training batches of ``dataset`` in the seeded order of a run with ``seed``."""
    from lth.data import Batcher, shared_dataset

    data = shared_dataset(dataset, data_dir=data_dir, device=torch.device("cpu"))
    batcher = Batcher(data.train_x, data.train_y, batch_size, seed=seed)
    return [batcher.batch(i) for i in range(count)]


def mask_with_model(
    init: Mapping[str, Tensor],
    criterion: str,
    model_name: str,
    dataset: str,
    *,
    rate: float,
    scope: str,
    names: list[str],
    prev_mask: Mask | None = None,
    seed: int = 0,
    iterations: int | None = None,
    batches: int = SCORE_BATCHES,
    batch_size: int | None = None,
    data_dir: str | None = None,
) -> Mask:
    """A mask of ``init`` by a model-based criterion: ``rate`` of the kept weights removed.

    Without ``prev_mask``, snip, grasp and synflow prune as :func:`lth.init_pruning.prune_at_init`
    (``iterations``: synflow 100, others 1; exponential schedule). With it, one scoring of the
    network under that mask (``iterations`` must then be 1).
    """
    from lth.init_pruning.derivatives import criterion_derivatives
    from lth.init_pruning.prune import METHOD_NAMES, prune_at_init
    from lth.models import MODELS

    if criterion not in NEEDS_DERIVATIVE:
        raise LthError(f"criterion {criterion!r} needs no model; drop --model and --dataset")
    model = load_into_model(model_name, dataset, init)
    data = None
    if criterion in NEEDS_DATA:
        size = batch_size or MODELS.get(model_name).recipe.batch_size
        data = score_batches(dataset, size, batches, seed, data_dir)
    from lth.data import DATASETS

    shape = DATASETS.get(dataset).input_shape
    if prev_mask is None and criterion in METHOD_NAMES:
        from lth.experiments.branch_kinds import level_seed

        # the seed a find-ticket --prune-at-init run of seed ``seed`` uses: its mask is reproduced
        found = prune_at_init(
            model,
            criterion,
            1.0 - rate,
            batches=data,
            input_shape=shape,
            scope=scope,
            iterations=iterations,
            names=names,
            seed=level_seed(seed, "prune-at-init", 0),
        )
        return found.mask
    if iterations not in (None, 1):
        what = "with --prev-mask" if prev_mask is not None else f"for criterion {criterion!r}"
        raise LthError(f"--prune-iterations {iterations} is not available {what}; it scores once")
    mask = prev_mask if prev_mask is not None else Mask.ones({n: init[n] for n in names})
    mask.apply_(model)
    derivatives = criterion_derivatives(criterion, model, names, data, shape, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    weights = {n: init[n] for n in names}
    scores = compute_scores(criterion, weights, weights, dict(mask), generator, derivatives=derivatives)
    return prune(scores, mask, {n: rate for n in names}, scope, generator)
