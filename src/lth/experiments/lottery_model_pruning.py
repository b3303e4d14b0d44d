"""How a :class:`~lth.experiments.lottery_model.LotteryModel` prunes and re-initialises: the
per-parameter prune rates, the criterion's scores and the new mask, and the next round's start
weights from the mask-1 and mask-0 actions."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from lth.actions import LayerState, Mask1Options, fresh_draw, round_start_values
from lth.criteria import NEEDS_DERIVATIVE, compute_scores
from lth.data.batcher import epoch_seed
from lth.errors import LthError
from lth.experiments.lottery_model_checks import check_resettable, check_scope, fresh_initialisation, listing, owner
from lth.experiments.lottery_model_store import clone_state
from lth.experiments.lottery_model_training import require_data
from lth.experiments.lottery_settings import is_number
from lth.masks import Mask
from lth.pruning import GROUPS, prune

if TYPE_CHECKING:
    from lth.experiments.lottery_model import LotteryModel

#: Prune rate of :meth:`LotteryModel.prune` when neither ``rate``, ``keep`` nor ``rates`` is given.
DEFAULT_RATE = 0.2


def prune_rates(
    mask: Mask,
    groups: Mapping[str, str],
    rate: float | None,
    keep: float | None,
    scope: str,
    rates: Mapping[str, float] | None,
) -> dict[str, float]:
    """Per-parameter prune rates (fractions of the kept weights removed) of :meth:`LotteryModel.prune`."""
    check_scope(scope)
    if keep is not None and (rate is not None or rates is not None):
        raise LthError(
            "give keep (fraction of all weights kept) or rate/rates (fraction of the kept weights removed), not both"
        )
    if keep is not None:
        return _keep_rates(mask, keep, scope)
    rate = DEFAULT_RATE if rate is None else rate
    out = {name: rate for name in mask}
    for key, value in (rates or {}).items():
        if key in mask:
            targets = [key]
        elif key in GROUPS or key == "other":
            targets = [n for n, g in groups.items() if g == key]
        else:
            targets = [n for n in mask if owner(n) == key]
        if not targets:
            raise LthError(
                f"rates key {key!r} is neither a pruned parameter, its layer, nor a group (fc, conv, output) "
                f"with pruned parameters; pruned parameters: {listing(list(mask))}"
            )
        for name in targets:
            out[name] = value
    for name, value in out.items():
        if not is_number(value) or not 0 <= value < 1:
            raise LthError(f"prune rate for {name!r} must be a fraction in [0, 1), got {value!r}")
    if scope == "global" and len(set(out.values())) > 1:
        raise LthError(f"global pruning needs one rate for all layers, got {sorted(set(out.values()))}")
    return out


def _keep_rates(mask: Mask, keep: float, scope: str) -> dict[str, float]:
    """The rates that leave ``keep`` of all weights (per parameter, or of all of them) kept."""
    if not is_number(keep) or not 0 < keep <= 1:
        raise LthError(f"keep must be a fraction in (0, 1], got {keep!r}")
    units = [[n] for n in mask] if scope == "layerwise" else [list(mask)]
    out: dict[str, float] = {}
    for names in units:
        kept = sum(int(mask[n].sum()) for n in names)
        size = sum(mask[n].numel() for n in names)
        target = keep * size
        if target > kept + 1e-9:
            where = f"parameter {names[0]!r}" if scope == "layerwise" else "the prunable weights"
            raise LthError(
                f"keep={keep} is more than the fraction {kept / size:.4g} of {where} still kept; "
                "pruned weights never come back"
            )
        out.update({n: (1.0 - target / kept) if kept else 0.0 for n in names})
    return out


def pruned_mask(experiment: LotteryModel, criterion: str, rates: Mapping[str, float], scope: str) -> Mask:
    """The current mask with the lowest-scoring kept weights removed at ``rates``: ``criterion``
    compares the rewind point with the trained weights; ties are broken with the seeded generator."""
    rewind, w_final = experiment._rewind_state, experiment._w_final
    assert rewind is not None and w_final is not None  # prune() checks the round was trained
    w_init = {name: rewind[name] for name in experiment._groups}
    scores = compute_scores(
        criterion,
        w_init,
        w_final,
        experiment._mask,
        experiment._generator,
        derivatives=criterion_inputs(experiment, criterion),
    )
    return prune(scores, experiment._mask, rates, scope, experiment._generator)


def criterion_inputs(experiment: LotteryModel, criterion: str) -> dict[str, dict[str, torch.Tensor]]:
    """What a model-based criterion (snip, grad, grasp, synflow) needs at the rewind point,
    current mask applied, on the first training batch ({} for the weight-only criteria)."""
    from lth.init_pruning.derivatives import criterion_derivatives

    if criterion not in NEEDS_DERIVATIVE:
        return {}
    trainer = require_data(experiment, "a gradient criterion")
    assert experiment._rewind_state is not None  # a trained round has its rewind point
    scratch = copy.deepcopy(experiment._module)
    scratch.load_state_dict(experiment._rewind_state)
    experiment._mask.apply_(scratch)
    batch = trainer.batcher.batch(0)
    return criterion_derivatives(
        criterion,
        scratch,
        experiment._groups,
        [batch],
        tuple(batch[0].shape[1:]),
        seed=epoch_seed(experiment._settings.seed, 2 * experiment._round + 1),
    )


def start_state(experiment: LotteryModel, mask1: str, mask0: str, options: Mask1Options) -> dict[str, torch.Tensor]:
    """The next round's start weights: the ``mask1`` action on kept, ``mask0`` on pruned weights,
    everything else rewound (see :meth:`LotteryModel.reinit`)."""
    rewind, w_final, settings = experiment._rewind_state, experiment._w_final, experiment._settings
    assert rewind is not None and w_final is not None
    fresh: dict[str, torch.Tensor] | None = None
    if "reinit" in mask1:
        if settings.initializer is None:
            check_resettable(experiment._module, list(experiment._groups))
        seed = int(torch.randint(0, 2**62, (1,), generator=experiment._generator))
        drawn = fresh_initialisation(experiment._module, seed, settings.initializer)
        fresh = {name: p.detach().to(experiment._device) for name, p in drawn.named_parameters()}
    state = clone_state(rewind)
    for name, m in experiment._mask.items():
        layer = LayerState(
            w_init=rewind[name],
            w_final=w_final[name],
            mask=m,
            generator=experiment._generator,
            fresh=fresh_draw(fresh, name) if fresh is not None else None,
        )
        state[name] = round_start_values(mask1, mask0, layer, options)
    return state
