"""Mask criteria: pure functions of tensors giving scores where higher = kept."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from lth.registry import Registry


@dataclass
class ScoreInputs:
    """What a criterion may look at for one parameter tensor."""

    w_init: torch.Tensor  # value at the rewind point (w_0 or w_k)
    w_final: torch.Tensor  # value at the end of the round (or at the chosen evaluation step)
    mask: torch.Tensor  # bool, the current mask (True = still kept); only kept entries compete
    generator: torch.Generator  # seeded, for random scores
    grad: Optional[torch.Tensor] = None  # loss gradient at the rewind point, for gradient criteria


Criterion = Callable[[ScoreInputs], torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("criterion")


@CRITERIA.register("large_final")
def large_final(s: ScoreInputs) -> torch.Tensor:
    """|w_f|: the classic magnitude criterion of Frankle & Carbin."""
    return s.w_final.abs()


@CRITERIA.register("random")
def random(s: ScoreInputs) -> torch.Tensor:
    """i.i.d. uniform scores from the run's seeded generator."""
    return torch.rand(s.w_final.shape, generator=s.generator).to(s.w_final.device)


def compute_scores(
    name: str,
    w_init: dict[str, torch.Tensor],
    w_final: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor],
    generator: torch.Generator,
    grads: Optional[dict[str, torch.Tensor]] = None,
) -> dict[str, torch.Tensor]:
    """Scores for every parameter in ``mask`` under the criterion ``name``."""
    criterion = CRITERIA.get(name)
    return {
        key: criterion(
            ScoreInputs(
                w_init[key].float(), w_final[key].float(), mask[key].bool(), generator,
                None if grads is None else grads[key].float(),
            )
        )
        for key in mask
    }
