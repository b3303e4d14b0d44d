"""Linear paths between two trained networks, and their error and loss barriers.

The network at ``alpha`` on the path from ``a`` to ``b`` has the floating-point entries
``(1 - alpha) * a + alpha * b``, computed so that alpha 0 and 1 give ``a`` and ``b`` bit for bit
and an entry equal in ``a`` and ``b`` keeps that value all along (two identical networks give a
constant path: barrier exactly 0), times the mask: pruned weights are exactly 0 at every point
(the path lies in the mask's subspace). Integer buffers (BatchNorm's step count) are taken from ``a``.

BatchNorm running statistics do not interpolate meaningfully (the mean of two networks'
statistics is not the statistics of the mean network), so by default they are recomputed at
every point: reset, then one pass over training data in training mode with a cumulative
average (``momentum=None``), without gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lth.training.evaluate import evaluate

_NORMS = nn.modules.batchnorm._BatchNorm


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation coefficients from 0 to 1 (both included)."""
    if points < 2:
        raise ValueError("a path needs at least 2 points")
    return [i / (points - 1) for i in range(points)]


@torch.no_grad()
def interpolate(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float, mask: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """The state ``(1 - alpha) * a + alpha * b`` (masked entries exactly 0; integer entries from ``a``)."""
    state = {}
    for name, x in a.items():
        if not x.is_floating_point():
            state[name] = x.clone()
            continue
        y = b[name].to(x.device, x.dtype)
        value = x * (1.0 - alpha) + y * alpha  # alpha 0: x*1 + y*0 == x exactly; alpha 1: x*0 + y == y
        value = torch.where(x == y, x, value)  # (1 - alpha) * x + alpha * x may round away from x
        if mask is not None and name in mask:
            value = value * mask[name].to(value.device, value.dtype)
        state[name] = value
    return state


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, _NORMS) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, x: Tensor, batch_size: int = 500) -> None:
    """Replace every BatchNorm's running statistics by their average over ``x`` (one pass, no gradients)."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    for start in range(0, x.shape[0], batch_size):
        model(x[start : start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@dataclass
class PathResult:
    """Error (1 - accuracy) and mean cross-entropy at every alpha, per split."""

    alpha: list[float]
    error: dict[str, list[float]]  # split -> one value per alpha
    loss: dict[str, list[float]]

    def barrier(self, split: str, what: str = "error") -> float:
        """Max along the path minus the mean of the two endpoints (Frankle et al. 2020's instability)."""
        values = (self.error if what == "error" else self.loss)[split]
        return max(values) - (values[0] + values[-1]) / 2


def evaluate_path(
    model: nn.Module,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    mask: Mapping[str, Tensor] | None,
    points: Sequence[float],
    splits: Mapping[str, tuple[Tensor, Tensor]],
    batch_norm_data: Tensor | None = None,
) -> PathResult:
    """Evaluate ``model`` at each point of the linear path from state ``a`` to state ``b``.

    ``splits``: name -> (x, y) to measure error and loss on; ``batch_norm_data``: training inputs to
    recompute BatchNorm statistics on at every point (None: keep the interpolated statistics).
    The model's own state is restored afterwards.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    error: dict[str, list[float]] = {name: [] for name in splits}
    loss: dict[str, list[float]] = {name: [] for name in splits}
    try:
        for alpha in points:
            model.load_state_dict(interpolate(a, b, alpha, mask))
            if batch_norm_data is not None:
                recompute_batch_norm(model, batch_norm_data)
            measured = torch.stack([evaluate(model, x, y) for x, y in splits.values()]).tolist()
            for name, (value_loss, accuracy) in zip(splits, measured):
                error[name].append(1.0 - accuracy)
                loss[name].append(value_loss)
    finally:
        model.load_state_dict(saved)
    return PathResult(list(points), error, loss)
