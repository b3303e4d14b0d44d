"""Mask criteria: pure functions of tensors giving scores where higher = kept.

Every criterion scores all entries of a parameter tensor; ``lth.pruning.prune`` only lets
the entries still kept (``ScoreInputs.mask``) compete. Signs follow ``torch.sign``: an exact
zero has sign 0, so it agrees only with another zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lth.errors import LthError
from lth.registry import Registry


@dataclass
class ScoreInputs:
    """What a criterion may look at for one parameter tensor."""

    w_init: torch.Tensor  # value at the rewind point (w_0 or w_k)
    w_final: torch.Tensor  # value at the end of the round (or at the chosen evaluation step)
    mask: torch.Tensor  # bool, the current mask (True = still kept); only kept entries compete
    generator: torch.Generator  # seeded, for random scores
    grad: torch.Tensor | None = None  # loss gradient at the rewind point, for gradient criteria
    hessian_grad: torch.Tensor | None = None  # H g (Hessian times loss gradient), for grasp
    flow_grad: torch.Tensor | None = None  # dR/d|w| of the SynFlow objective R, for synflow


Criterion = Callable[[ScoreInputs], torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("criterion")

#: Short names, registered as separate entries pointing to the same function.
ALIASES: dict[str, str] = {
    "lf": "large_final",
    "lilf": "large_init_large_final",
    "mi": "magnitude_increase",
    "mov": "movement",
    "lfss": "large_final_same_sign",
}
#: Criteria that need a derivative of the model, not only weights: criterion -> the
#: ``ScoreInputs`` field it reads (computed by :mod:`lth.init_pruning.derivatives`).
NEEDS_DERIVATIVE: dict[str, str] = {"snip": "grad", "grad": "grad", "grasp": "hessian_grad", "synflow": "flow_grad"}
#: Those of them that need training data (SynFlow is data-free).
NEEDS_DATA: tuple[str, ...] = ("snip", "grad", "grasp")


def _same_sign(s: ScoreInputs) -> torch.Tensor:
    return torch.sign(s.w_init) == torch.sign(s.w_final)


def _kept_ranks(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Ranks of ``values`` among the kept entries, scaled to [0, 1] (ties share their average
    rank); pruned entries get -1."""
    kept = values[mask]
    _, inverse, counts = torch.unique(kept, sorted=True, return_inverse=True, return_counts=True)
    first = counts.cumsum(0) - counts
    average = first.to(values.dtype) + (counts.to(values.dtype) - 1) / 2
    scale = max(kept.numel() - 1, 1)
    ranks = torch.full_like(values, -1.0)
    ranks[mask] = average[inverse] / scale
    return ranks


def _both_top(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """min(rank of a, rank of b) among the kept entries; pruned entries score -1."""
    return torch.minimum(_kept_ranks(a, mask), _kept_ranks(b, mask))


@CRITERIA.register("large_final")
def large_final(s: ScoreInputs) -> torch.Tensor:
    """|w_f|: the classic magnitude criterion of Frankle & Carbin."""
    return s.w_final.abs()


@CRITERIA.register("small_final")
def small_final(s: ScoreInputs) -> torch.Tensor:
    """-|w_f|."""
    return -s.w_final.abs()


@CRITERIA.register("large_init")
def large_init(s: ScoreInputs) -> torch.Tensor:
    """|w_i|."""
    return s.w_init.abs()


@CRITERIA.register("small_init")
def small_init(s: ScoreInputs) -> torch.Tensor:
    """-|w_i|."""
    return -s.w_init.abs()


@CRITERIA.register("large_init_large_final")
def large_init_large_final(s: ScoreInputs) -> torch.Tensor:
    """Keep the weights in the top of both |w_i| and |w_f| (Zhou et al.).

    Score = min(rank of |w_i|, rank of |w_f|), ranks taken among the kept entries and scaled to
    [0, 1]; pruned entries score -1. A weight scores >= t exactly when it is at or above the
    t-percentile of both magnitudes, so keeping the top k scores *is* the rule "above one
    percentile t in both", with t chosen so that exactly k are kept (``prune`` breaks ties at t
    at random).
    """
    return _both_top(s.w_init.abs(), s.w_final.abs(), s.mask)


@CRITERIA.register("small_init_small_final")
def small_init_small_final(s: ScoreInputs) -> torch.Tensor:
    """As ``large_init_large_final`` with -|w|: keep the weights small at both ends."""
    return _both_top(-s.w_init.abs(), -s.w_final.abs(), s.mask)


@CRITERIA.register("magnitude_increase")
def magnitude_increase(s: ScoreInputs) -> torch.Tensor:
    """|w_f| - |w_i|."""
    return s.w_final.abs() - s.w_init.abs()


@CRITERIA.register("movement")
def movement(s: ScoreInputs) -> torch.Tensor:
    """|w_f - w_i|."""
    return (s.w_final - s.w_init).abs()


@CRITERIA.register("large_final_same_sign")
def large_final_same_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| where sign(w_i) = sign(w_f), else 0."""
    return torch.where(_same_sign(s), s.w_final.abs(), torch.zeros_like(s.w_final))


@CRITERIA.register("large_final_diff_sign")
def large_final_diff_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| where sign(w_i) != sign(w_f), else 0."""
    return torch.where(_same_sign(s), torch.zeros_like(s.w_final), s.w_final.abs())


@CRITERIA.register("magnitude_increase_same_sign")
def magnitude_increase_same_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| - |w_i| where the signs agree, else 0."""
    return torch.where(_same_sign(s), magnitude_increase(s), torch.zeros_like(s.w_final))


@CRITERIA.register("magnitude_increase_diff_sign")
def magnitude_increase_diff_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| - |w_i| where the signs differ, else 0."""
    return torch.where(_same_sign(s), torch.zeros_like(s.w_final), magnitude_increase(s))


@CRITERIA.register("random")
def random(s: ScoreInputs) -> torch.Tensor:
    """i.i.d. uniform scores from the run's seeded generator."""
    return torch.rand(s.w_final.shape, generator=s.generator).to(s.w_final.device)


def _needed(s: ScoreInputs, name: str) -> torch.Tensor:
    """The derivative that criterion ``name`` reads; LthError when it was not given."""
    field = NEEDS_DERIVATIVE[name]
    value = getattr(s, field)
    if value is None:
        others = ", ".join(RANKED_CRITERIA + ["random"])
        what = {
            "grad": "a loss gradient",
            "hessian_grad": "a Hessian-gradient product",
            "flow_grad": "the SynFlow gradient",
        }[field]
        raise LthError(
            f"criterion {name!r} needs the model: {what} at the rewind point, and none was "
            f"given; compute it with lth.init_pruning or choose a criterion that needs none: {others}"
        )
    return value


@CRITERIA.register("snip")
def snip(s: ScoreInputs) -> torch.Tensor:
    """|w_i * g| (SNIP connection sensitivity, Lee et al. 2019), g the loss gradient at w_i."""
    return (s.w_init * _needed(s, "snip")).abs()


@CRITERIA.register("grad")
def grad(s: ScoreInputs) -> torch.Tensor:
    """|g|, g the loss gradient at the rewind point."""
    return _needed(s, "grad").abs()


@CRITERIA.register("grasp")
def grasp(s: ScoreInputs) -> torch.Tensor:
    """w_i * (H g) (GraSP, Wang et al. 2020), with g and H the loss gradient and Hessian at w_i.

    The paper's score is S = -w * (H g) and it removes the weights of *highest* S; here higher
    is kept, so the score is -S: keeping the highest -S removes exactly the paper's weights.
    """
    return s.w_init * _needed(s, "grasp")


@CRITERIA.register("synflow")
def synflow(s: ScoreInputs) -> torch.Tensor:
    """|w_i| * dR/d|w| (SynFlow, Tanaka et al. 2020): R the output sum of the network with every
    weight replaced by its absolute value, biases 0, on an all-ones input (data-free)."""
    return s.w_init.abs() * _needed(s, "synflow")


#: Canonical criterion names (no aliases).
CRITERION_NAMES: list[str] = CRITERIA.names()
#: Criteria that rank weights by their values alone (no randomness, no data).
RANKED_CRITERIA: list[str] = [n for n in CRITERION_NAMES if n not in ("random", *NEEDS_DERIVATIVE)]

for _alias, _target in ALIASES.items():
    CRITERIA.add(_alias, CRITERIA.get(_target))


def compute_scores(
    name: str,
    w_init: dict[str, torch.Tensor],
    w_final: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor],
    generator: torch.Generator,
    grads: dict[str, torch.Tensor] | None = None,
    derivatives: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Scores for every parameter in ``mask`` under the criterion ``name``.

    ``grads``: loss gradients per parameter (snip, grad). ``derivatives``: any of the
    ``ScoreInputs`` derivative fields (``grad``, ``hessian_grad``, ``flow_grad``) per parameter.
    """
    criterion = CRITERIA.get(name)
    fields = dict(derivatives or {})
    if grads is not None:
        fields["grad"] = grads

    def pick(field: str, key: str) -> torch.Tensor | None:
        values = fields.get(field)
        return None if values is None or key not in values else values[key].float()

    return {
        key: criterion(
            ScoreInputs(
                w_init[key].float(),
                w_final[key].float(),
                mask[key].bool(),
                generator,
                pick("grad", key),
                pick("hessian_grad", key),
                pick("flow_grad", key),
            )
        )
        for key in mask
    }
