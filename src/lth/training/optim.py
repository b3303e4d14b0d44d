"""Optimizers (Adam, SGD with momentum/Nesterov/weight decay) and the LR schedule."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from lth.errors import LthError


@dataclass(frozen=True)
class OptimizerSettings:
    name: str  # "adam" | "sgd"
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = field(default_factory=tuple)  # iterations where lr *= gamma
    gamma: float = 0.1
    warmup: int = 0  # iterations of linear warmup from ~0 to lr


def learning_rate(settings: OptimizerSettings, iteration: int) -> float:
    """The learning rate used for the step at ``iteration`` (0-based)."""
    lr = settings.lr * settings.gamma ** bisect.bisect_right(sorted(settings.milestones), iteration)
    if settings.warmup > 0 and iteration < settings.warmup:
        lr *= (iteration + 1) / settings.warmup
    return lr


def build_optimizer(
    params: Iterable[torch.Tensor],
    settings: OptimizerSettings,
    params_without_decay: Iterable[torch.Tensor] = (),
) -> torch.optim.Optimizer:
    """A fresh optimizer; the fastest implementation available for the parameters' device.

    ``params_without_decay`` get no weight decay from the optimizer (the mask enforcer applies
    it to their kept entries only).
    """
    check_settings(settings)
    groups: list[dict[str, Any]] = [
        {"params": list(params)},
        {"params": list(params_without_decay), "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    kind: Callable[..., torch.optim.Optimizer]
    options: dict[str, Any]
    if settings.name == "adam":
        kind, options = torch.optim.Adam, {"weight_decay": settings.weight_decay}
    else:
        kind = torch.optim.SGD
        options = {"momentum": settings.momentum, "nesterov": settings.nesterov, "weight_decay": settings.weight_decay}
    try:
        # The fused kernels make one pass over memory per step (CPU and CUDA): about 3x faster
        # than the per-tensor loop for LeNet-300-100 on a 2-core CPU.
        return kind(groups, lr=settings.lr, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # older torch or an unsupported device
        return kind(groups, lr=settings.lr, **options)


def check_settings(settings: OptimizerSettings) -> None:
    """Raise LthError for an impossible optimizer setting, before any work starts."""
    if settings.name not in ("adam", "sgd"):
        raise LthError(f"unknown optimizer {settings.name!r}; choose adam or sgd")
    if settings.nesterov and (settings.name != "sgd" or settings.momentum <= 0):
        raise LthError("Nesterov momentum needs --optimizer sgd and --momentum > 0")
