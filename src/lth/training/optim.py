"""Optimizers (Adam, SGD with momentum/Nesterov/weight decay) and the LR schedule."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

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


def build_optimizer(params: Iterable[torch.nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    """A fresh optimizer; the fastest implementation available for the parameters' device."""
    params = list(params)
    on_cuda = bool(params) and params[0].is_cuda
    # foreach: one kernel per step for all tensors instead of a Python loop per tensor.
    fast = {"fused": True} if on_cuda else {"foreach": True}
    if settings.name == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, **fast)
    if settings.name == "sgd":
        if settings.nesterov and settings.momentum <= 0:
            raise LthError("Nesterov momentum needs --momentum > 0")
        return torch.optim.SGD(
            params,
            lr=settings.lr,
            momentum=settings.momentum,
            nesterov=settings.nesterov,
            weight_decay=settings.weight_decay,
            **fast,
        )
    raise LthError(f"unknown optimizer {settings.name!r}; choose adam or sgd")
