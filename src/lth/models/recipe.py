"""The training + pruning recipe that a paper prescribes for a model."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from lth.errors import LthError

OPTIMIZERS = ("adam", "sgd")
SCOPES = ("layerwise", "global")
_DURATION = re.compile(r"^\d+(it|ep)$")


def _check_duration(field: str, value: object) -> None:
    if not isinstance(value, str) or not _DURATION.match(value):
        raise LthError(
            f"recipe {field} {value!r} is not a duration; use an integer followed by "
            f"'it' (iterations) or 'ep' (epochs), e.g. '50000it' or '160ep'"
        )


def _check_rate(field: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise LthError(f"recipe {field} {value!r} must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to train and prune a model (hyper-parameters from its paper).

    Durations (``budget``, ``milestones``, ``warmup``) are strings such as
    ``'50000it'`` or ``'160ep'``. ``prune_rate`` is the fraction removed per
    round under ``scope='global'`` (and the default rate); under
    ``scope='layerwise'`` conv layers use ``prune_rate_conv``, fully-connected
    layers ``prune_rate_fc`` and the output layer ``prune_rate_output``.
    """

    optimizer: str
    lr: float
    batch_size: int
    budget: str
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    milestones: tuple[str, ...] = ()
    gamma: float = 0.1
    warmup: str = "0it"
    scope: str = "layerwise"
    prune_rate: float = 0.2
    prune_rate_fc: float = 0.2
    prune_rate_conv: float = 0.1
    prune_rate_output: float = 0.1
    initializer: str

    def __post_init__(self) -> None:
        # Accept any iterable (e.g. a JSON list) for milestones; store a tuple.
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.optimizer not in OPTIMIZERS:
            raise LthError(f"recipe optimizer {self.optimizer!r} is unknown; choose one of: {', '.join(OPTIMIZERS)}")
        if self.scope not in SCOPES:
            raise LthError(f"recipe scope {self.scope!r} is unknown; choose one of: {', '.join(SCOPES)}")
        from lth.models.init import INITIALIZERS

        if self.initializer not in INITIALIZERS:
            raise LthError(
                f"recipe initializer {self.initializer!r} is unknown; choose one of: {', '.join(INITIALIZERS.names())}"
            )
        if not self.lr > 0:
            raise LthError(f"recipe lr {self.lr!r} must be a positive number")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LthError(f"recipe batch_size {self.batch_size!r} must be a positive integer")
        if not 0.0 <= self.momentum < 1.0:
            raise LthError(f"recipe momentum {self.momentum!r} must be in [0, 1)")
        if self.weight_decay < 0:
            raise LthError(f"recipe weight_decay {self.weight_decay!r} must be >= 0")
        if not self.gamma > 0:
            raise LthError(f"recipe gamma {self.gamma!r} must be a positive number")
        _check_duration("budget", self.budget)
        _check_duration("warmup", self.warmup)
        for milestone in self.milestones:
            _check_duration("milestone", milestone)
        for name in ("prune_rate", "prune_rate_fc", "prune_rate_conv", "prune_rate_output"):
            _check_rate(name, getattr(self, name))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (milestones as a list); ``Recipe(**d)`` round-trips."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d
