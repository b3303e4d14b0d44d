"""Evaluation in large batches without autograd."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2500) -> torch.Tensor:
    """Mean loss and accuracy of ``model`` on (x, y) as a 2-element tensor on the data's device.

    Returns a tensor (not floats) so that callers can batch several evaluations per host sync.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)  # exact counts, accurate sums
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        totals[0] += F.cross_entropy(logits, target, reduction="sum")
        totals[1] += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return totals / max(1, x.shape[0])
