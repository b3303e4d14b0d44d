"""The sanity-check ablations of Frankle et al. 2021 ("Pruning Neural Networks at Initialization:
Why are We Missing the Mark?"), each changing one thing of a mask found at initialisation:

- ``shuffle``: the mask permuted at random within each tensor (same count per layer);
- ``reinit``: the kept weights re-drawn from the initialiser (mask unchanged);
- ``invert``: in each tensor, keep the lowest-scoring weights of the unpruned network's scores,
  as many as the method kept there.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lth.errors import LthError
from lth.masks import Mask
from lth.pruning import keep_highest

ABLATIONS = ("none", "shuffle", "reinit", "invert")


def check_ablation(name: str) -> str:
    if name not in ABLATIONS:
        raise LthError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
    return name


def shuffle_mask(mask: Mapping[str, Tensor], generator: torch.Generator) -> Mask:
    """Each tensor's mask permuted uniformly at random: the same number kept, anywhere in it."""
    out = Mask()
    for name, m in mask.items():
        flat = m.flatten()
        order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
        out[name] = flat[order].view_as(m).clone()
    return out


def invert_mask(mask: Mapping[str, Tensor], scores: Mapping[str, Tensor], generator: torch.Generator) -> Mask:
    """In each tensor, the ``mask``'s count of weights kept among the lowest ``scores``."""
    names = list(mask)
    counts = {name: int(mask[name].sum()) for name in names}
    inverted = keep_highest({name: -scores[name].float() for name in names}, counts, names, generator)
    return Mask({name: m.to(mask[name].device) for name, m in inverted.items()})


def reinit_weights(
    weights: Mapping[str, Tensor], fresh: Mapping[str, Tensor], mask: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``weights`` with the kept entries of every masked tensor taken from ``fresh`` (a new draw of
    the initialiser); pruned entries and unmasked tensors are left as they are."""
    out = dict(weights)
    for name, m in mask.items():
        out[name] = torch.where(m.to(weights[name].device), fresh[name].to(weights[name]), weights[name])
    return out


def ablate_mask(name: str, mask: Mask, first_scores: Mapping[str, Tensor], generator: torch.Generator) -> Mask:
    """The mask of ablation ``name``: shuffled or inverted; ``none`` and ``reinit`` keep it."""
    check_ablation(name)
    if name == "shuffle":
        return shuffle_mask(mask, generator)
    if name == "invert":
        return invert_mask(mask, first_scores, generator)
    return Mask({n: m.clone() for n, m in mask.items()})
