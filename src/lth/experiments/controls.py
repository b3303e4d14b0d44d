"""The controls every ticket needs (Frankle & Carbin 2019): the same masks with fresh weights
(``reinit``) and random masks with the same per-layer sparsity (``random-prune``).

A control's randomness comes from its own generator, so adding controls never changes the
ticket's own results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lth.config import CONTROL_NAMES
from lth.masks import Mask

__all__ = ["CONTROL_NAMES", "control_generator", "prepare_control", "random_mask_like"]


def control_generator(seed: int, control: str, round_index: int) -> torch.Generator:
    """A generator private to one control round (any seed torch accepts: a mixed value beyond
    torch's range is folded into 64 bits; values within it are used as they are, as always)."""
    value = seed * 1_000_003 + (CONTROL_NAMES.index(control) + 1) * 10_007 + round_index
    if not -(2**63) <= value < 2**64:
        value &= 2**64 - 1
    return torch.Generator().manual_seed(value)


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A uniformly random mask keeping exactly as many entries per tensor as ``mask``."""
    new = Mask()
    for name, m in mask.items():
        kept = int(m.sum())
        order = torch.randperm(m.numel(), generator=generator)[:kept].to(m.device)
        flat = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        flat[order] = True
        new[name] = flat.view_as(m)
    return new


def prepare_control(
    control: str,
    model: nn.Module,
    mask: Mask,
    rewind_state: dict[str, torch.Tensor],
    fresh_state: Callable[[int], dict[str, torch.Tensor]],
    generator: torch.Generator,
) -> Mask:
    """Load the control's starting weights into ``model``; return the mask it trains under."""
    if control == "reinit":
        # A fresh initialiser draw (seeded from the control's generator) under the ticket's mask.
        model.load_state_dict(fresh_state(int(torch.randint(0, 2**62, (1,), generator=generator))))
        return mask
    if control == "random-prune":
        model.load_state_dict(rewind_state)
        return random_mask_like(mask, generator)
    raise ValueError(f"unknown control {control!r}")
