"""The kinds of branch (``lth branch RUN KIND``): what one level of a branch starts from.

Each kind is one function of a :class:`BranchLevel` (the trunk's mask and weights at that level,
and the branch's own generator) returning the mask and the full starting state dict; adding a
kind is one registered function here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lth.experiments.controls import random_mask_like
from lth.masks import Mask
from lth.registry import Registry

if TYPE_CHECKING:
    from lth.experiments.trunk import Trunk


def level_seed(seed: int, kind: str, level: int) -> int:
    """The seed of one level's draws of a branch (63 bits of SHA-256 of seed, kind and level)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}/{kind}/{level}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class BranchLevel:
    """What a branch kind may use at one level of the trunk."""

    index: int
    mask: Mask  # the trunk's mask at this level
    start: dict[str, Tensor]  # the trunk's starting weights at this level (pruned entries 0)
    rewind: dict[str, Tensor]  # the dense weights the trunk rewinds to (w_0 at level 0)
    generator: torch.Generator  # the branch's own, seeded by (seed, kind, level)
    seed: int  # the branch seed
    scope: str  # layerwise | global
    trunk: Trunk


BranchKind = Callable[[BranchLevel], tuple[Mask, dict[str, Tensor]]]
#: Branch kinds by name: each returns the mask and the starting weights (a full state dict) of one level.
BRANCH_KINDS: Registry[BranchKind] = Registry("branch kind")


def masked(state: dict[str, Tensor], mask: Mask) -> dict[str, Tensor]:
    """``state`` with the pruned entries of every masked tensor set to 0 (the others copied)."""
    return {
        k: torch.where(mask[k].to(v.device), v, torch.zeros_like(v)) if k in mask else v.clone()
        for k, v in state.items()
    }


@BRANCH_KINDS.register("random-reinit")
def random_reinit(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """The level's mask; every weight drawn afresh by the model's initialiser, seeded by
    ``level_seed(seed, "random-reinit", level)`` (never the trunk's own draw)."""
    return level.mask, masked(level.trunk.fresh_state(level_seed(level.seed, "random-reinit", level.index)), level.mask)


@BRANCH_KINDS.register("random-prune")
def random_prune(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """A uniformly random mask with the level's per-tensor kept counts (``global``: the same total
    count over the tensors the trunk prunes); the trunk's rewind weights."""
    if level.scope == "layerwise":
        mask = random_mask_like(level.mask, level.generator)
    else:
        names = level.trunk.pruned_names
        total = sum(level.mask[name].numel() for name in names)
        kept = sum(int(level.mask[name].sum()) for name in names)
        order = torch.randperm(total, generator=level.generator)[:kept]
        flat = torch.zeros(total, dtype=torch.bool)
        flat[order] = True
        mask = Mask(dict(level.mask))
        offset = 0
        for name in names:
            n = level.mask[name].numel()
            mask[name] = flat[offset : offset + n].view_as(level.mask[name])
            offset += n
    return mask, masked(level.rewind, mask)


@BRANCH_KINDS.register("shuffle-mask")
def shuffle_mask(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """The level's mask with its entries permuted within each tensor (same per-layer counts;
    Frankle et al. 2021's ablation); the trunk's rewind weights."""
    mask = Mask(
        {
            name: m.flatten()[torch.randperm(m.numel(), generator=level.generator)].view_as(m)
            for name, m in level.mask.items()
        }
    )
    return mask, masked(level.rewind, mask)


@BRANCH_KINDS.register("flip-sign")
def flip_sign(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """The level's mask and starting weights with the sign of every kept weight inverted."""
    start = {k: torch.where(level.mask[k], -v, v) if k in level.mask else v.clone() for k, v in level.start.items()}
    return level.mask, start


@BRANCH_KINDS.register("one-shot")
def one_shot(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """The dense trunk pruned in one step by its own criterion to the level's kept counts (per
    tensor, or in total with ``global`` scope), then rewound."""
    trunk = level.trunk
    scores = trunk.dense_scores(level.generator)
    names = trunk.pruned_names
    counts: dict[str, int] | int
    if level.scope == "layerwise":
        counts = {name: int(level.mask[name].sum()) for name in names}
    else:
        counts = sum(int(level.mask[name].sum()) for name in names)
    from lth.pruning import keep_highest

    mask = Mask(dict(level.trunk.level_mask(0)))
    mask.update(keep_highest(scores, counts, names, level.generator))
    return mask, masked(level.rewind, mask)


@BRANCH_KINDS.register("retrain")
def retrain(level: BranchLevel) -> tuple[Mask, dict[str, Tensor]]:
    """The level's mask and starting weights as they are (to train with other settings or data)."""
    return level.mask, {k: v.clone() for k, v in level.start.items()}
