"""Evaluation in large batches without autograd."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lth.training.acceleration import DEFAULT, Acceleration


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 2500,
    acceleration: Acceleration = DEFAULT,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean loss and accuracy of ``model`` on (x, y) as a 2-element tensor on the data's device.

    Returns a tensor (not floats) so that callers can batch several evaluations per host sync.
    ``forward`` runs the model (default: the model itself; e.g. its compiled form).
    """
    was_training = model.training
    model.eval()
    forward = model if forward is None else forward
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)  # exact counts, accurate sums
    for start in range(0, x.shape[0], batch_size):
        with acceleration.autocast(x.device):
            logits = forward(acceleration.batch(x[start : start + batch_size])).float()
        target = y[start : start + batch_size]
        totals[0] += F.cross_entropy(logits, target, reduction="sum")
        totals[1] += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return totals / max(1, x.shape[0])
