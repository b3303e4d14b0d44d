"""Pruning at initialisation: score, keep the top, repeat on an exponential schedule.

``prune_at_init(model, "synflow", keep=0.01)`` works on any ``nn.Module`` with Linear/Conv
weights. A method is a criterion of :mod:`lth.criteria` scored on the model as it stands (the
initialisation, pruned weights zero): ``snip`` (|g ⊙ w|), ``grasp`` (w ⊙ Hg, so that the paper's
highest -w ⊙ Hg go), ``synflow`` (data-free), ``magnitude`` (|w|) and ``random``.

Iterative pruning over n iterations keeps, after iteration i, the top ``keep^(i/n)`` of the
weights (exponential schedule), rescoring the network each time with the weights pruned so far
set to zero: ``round(total * keep^(i/n))`` weights over all pruned tensors with ``scope
global``, ``round(size * keep^(i/n))`` in each tensor with ``layerwise``. Pruned weights never
come back; ties are broken at random by the seeded generator.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lth.criteria import NEEDS_DATA, compute_scores
from lth.errors import LthError, warn
from lth.init_pruning.derivatives import Batch, criterion_derivatives
from lth.masks import Mask
from lth.pruning import prunable_parameters, prune_to
from lth.registry import Registry

#: Method -> the criterion that scores it.
METHODS: Registry[str] = Registry("pruning-at-init method")
METHODS.add("snip", "snip")
METHODS.add("grasp", "grasp")
METHODS.add("synflow", "synflow")
METHODS.add("magnitude", "large_init")
METHODS.add("random", "random")
METHOD_NAMES: list[str] = METHODS.names()
#: Iterations when none are asked for: SynFlow's paper prunes in 100, the others in one shot.
DEFAULT_ITERATIONS = {"synflow": 100}
SCOPES = ("global", "layerwise")


def needs_data(method: str) -> bool:
    """Does ``method`` score with training data? (SynFlow, magnitude and random do not.)"""
    return METHODS.get(method) in NEEDS_DATA


def default_iterations(method: str) -> int:
    return DEFAULT_ITERATIONS.get(method, 1)


def keep_fractions(keep: float, iterations: int) -> list[float]:
    """The fraction kept after each iteration: ``keep^(i/n)`` for i = 1..n (the last is ``keep``)."""
    return [keep if i == iterations else keep ** (i / iterations) for i in range(1, iterations + 1)]


def schedule_counts(sizes: Mapping[str, int], keep: float, iterations: int, scope: str) -> list[int | dict[str, int]]:
    """The weights kept after each iteration: one int per iteration (``global``: over all of
    ``sizes`` pooled) or a count per tensor (``layerwise``)."""
    total = sum(sizes.values())
    out: list[int | dict[str, int]] = []
    for fraction in keep_fractions(keep, iterations):
        if scope == "global":
            out.append(int(round(total * fraction)))
        else:
            out.append({name: int(round(size * fraction)) for name, size in sizes.items()})
    return out


def check_method_arguments(method: str, keep: float, scope: str, iterations: int | None) -> None:
    """LthError for an unknown method or scope, a ``keep`` outside (0, 1] or fewer than 1 iteration."""
    METHODS.get(method)
    if not _fraction(keep):
        raise LthError(f"keep must be in (0, 1] (the fraction of the weights kept), got {keep!r}")
    if scope not in SCOPES:
        raise LthError(f"unknown scope {scope!r}; choose global or layerwise")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise LthError(f"prune iterations must be a whole number >= 1, got {iterations!r}")


def _fraction(value: Any) -> bool:
    """A real number (Python, NumPy or a one-element tensor; not a bool) in (0, 1]."""
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return not math.isnan(number) and 0.0 < number <= 1.0


@dataclass
class InitPruning:
    """A mask found at initialisation, and how it was found."""

    mask: Mask
    method: str
    keep: float
    scope: str
    iterations: int
    #: Weights kept (over all pruned tensors) after each iteration.
    kept_per_iteration: list[int]
    #: The scores of the unpruned network (the first iteration's), for the invert ablation.
    first_scores: dict[str, Tensor] = field(repr=False, default_factory=dict)

    def layers(self) -> dict[str, float]:
        """Fraction kept per pruned tensor."""
        return self.mask.layer_density()

    def collapsed(self) -> list[str]:
        """The pruned tensors left without a weight (layer collapse: nothing flows through them)."""
        return [name for name, m in self.mask.items() if not bool(m.any())]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: method, keep, scope, iterations, kept counts, per-layer fractions, collapsed layers."""
        return {
            "method": self.method,
            "keep": self.keep,
            "scope": self.scope,
            "iterations": self.iterations,
            "kept": self.mask.kept(),
            "total": self.mask.size(),
            "density": self.mask.density(),
            "kept_per_iteration": list(self.kept_per_iteration),
            "layers": self.layers(),
            "collapsed": self.collapsed(),
        }


def warn_collapse(result: InitPruning, where: str = "") -> None:
    """One line on stderr when a pruned tensor keeps no weight."""
    names = result.collapsed()
    if names:
        warn(
            f"{result.method} keeping {100 * result.keep:.3g}% of the weights{where} leaves no weight in "
            f"{', '.join(names)}: nothing flows through it "
            "(layer collapse; without a path around it the network is disconnected)"
        )


def prune_at_init(
    model: nn.Module,
    method: str,
    keep: float,
    *,
    batches: Iterable[Batch] | None = None,
    score_batches: int | None = None,
    input_shape: Sequence[int] | None = None,
    scope: str = "global",
    iterations: int | None = None,
    names: Sequence[str] | None = None,
    prune_biases: bool = False,
    ignore: Sequence[str] = (),
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    warn_collapsed: bool = True,
) -> InitPruning:
    """A mask keeping ``keep`` of ``model``'s prunable weights, chosen by ``method`` at its current weights.

    The model itself is not changed.

    ``batches``: (inputs, labels) pairs for the data-driven methods (snip, grasp): a list, or any
    iterable such as a DataLoader, of which the first ``score_batches`` (default: all of a list,
    10 of another iterable) are used; the scores use their mean loss. ``input_shape`` (SynFlow):
    the shape of one input, e.g. ``(1, 28, 28)`` (default: that of the first batch).
    ``iterations``: default 100 for synflow, 1 for the others. ``names``: the parameters to prune
    (default: the Linear/Conv weights, see :func:`lth.pruning.prunable_parameters` with
    ``prune_biases`` and ``ignore``). ``seed`` (or a ``generator``) breaks ties and draws random
    scores.
    """
    check_method_arguments(method, keep, scope, iterations)
    keep = float(keep)
    if score_batches is not None and (
        isinstance(score_batches, bool) or not isinstance(score_batches, int) or score_batches < 1
    ):
        raise LthError(f"score_batches must be a whole number >= 1, got {score_batches!r}")
    if batches is not None:
        if isinstance(batches, Sequence):
            batches = list(batches[:score_batches] if score_batches else batches)
        else:
            batches = list(itertools.islice(batches, score_batches or 10))
    criterion = METHODS.get(method)
    if criterion in NEEDS_DATA and not batches:
        raise LthError(
            f"method {method!r} scores with training data and none was given; pass batches, "
            "or choose synflow, magnitude or random, which need none"
        )
    if names is None:
        names = list(prunable_parameters(model, prune_biases, ignore))
    if not names:
        raise LthError("the network has no prunable layers: pruning at initialisation needs Linear or Conv weights")
    iterations = iterations or default_iterations(method)
    generator = generator or torch.Generator().manual_seed(seed)
    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    missing = [name for name in names if name not in params]
    if missing:
        raise LthError(f"the model has no parameter {missing[0]!r}; its parameters: {', '.join(params)}")
    original = {name: params[name].detach().clone() for name in names}
    mask = Mask.ones(original)
    counts = schedule_counts({name: t.numel() for name, t in original.items()}, keep, iterations, scope)
    kept_per_iteration: list[int] = []
    first: dict[str, Tensor] = {}
    from lth.progress import progress_bar

    bar = progress_bar(
        total=iterations, desc=f"{method} at init", unit="it", disable=not progress or iterations == 1, leave=False
    )
    for i, target in enumerate(counts):
        with torch.no_grad():
            for name in names:
                params[name].copy_(original[name] * mask[name].to(original[name].dtype))
        derivatives = criterion_derivatives(
            criterion, work, names, batches, input_shape, seed=int(torch.randint(0, 2**62, (1,), generator=generator))
        )
        scores = compute_scores(criterion, original, original, dict(mask), generator, derivatives=derivatives)
        _check_finite(scores, method)
        if i == 0:
            first = {name: s.detach().clone() for name, s in scores.items()}
        mask = prune_to(scores, mask, target, generator)
        kept_per_iteration.append(mask.kept())
        bar.update(1)
    bar.close()
    result = InitPruning(mask, method, keep, scope, iterations, kept_per_iteration, first)
    if warn_collapsed:
        warn_collapse(result)
    return result


def _check_finite(scores: Mapping[str, Tensor], method: str) -> None:
    for name, s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise LthError(
                f"{method} scores of {name!r} are not finite numbers (overflow or a non-finite weight); "
                "check the network's weights or choose another method"
            )
