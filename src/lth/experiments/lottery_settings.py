"""The settings of a :class:`~lth.experiments.lottery_model.LotteryModel`: what defines an
experiment besides the module and the data, validated with one clear message per mistake."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from lth.config import CONTROL_NAMES, MAX_ITERATIONS, SEED_RANGE
from lth.errors import LthError
from lth.models.init import INITIALIZERS
from lth.training import Acceleration, OptimizerSettings
from lth.training.optim import check_settings

Initializer = str | Callable[[nn.Module], None] | None


@dataclass(frozen=True)
class LotterySettings:
    """Everything that defines a :class:`LotteryModel` besides the module and the data."""

    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup: int = 0
    batch_size: int = 60
    iterations: int | None = None
    epochs: float | None = None
    eval_every: int = 100
    prunable: tuple[str, ...] | None = None
    prune_biases: bool = False
    ignore_layers: tuple[str, ...] = ()
    rewind_iteration: int = 0
    initializer: Initializer = None
    controls: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    progress: bool = True
    data_dir: str | None = None
    val_size: int | None = None

    def optimizer_settings(self) -> OptimizerSettings:
        return OptimizerSettings(
            name=self.optimizer,
            lr=self.lr,
            momentum=self.momentum if self.optimizer == "sgd" else 0.0,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            milestones=self.milestones,
            gamma=self.gamma,
            warmup=self.warmup,
        )

    def acceleration(self) -> Acceleration:
        return Acceleration(self.precision, self.compile, self.channels_last)


#: The keyword settings LotteryModel, LotterySession and LotteryRobust accept.
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LotterySettings))


def check_setting_names(names: Sequence[str]) -> None:
    """LthError for a keyword that is not a LotteryModel setting."""
    for name in names:
        if name not in SETTING_NAMES:
            raise LthError(f"unknown LotteryModel setting {name!r}; choose from: {', '.join(SETTING_NAMES)}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise LthError(message)


def _controls(value: Any) -> tuple[str, ...]:
    """The ``controls`` setting as a tuple of control names (None: none; a string: comma-separated)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise LthError(f"controls must be a list of control names ({', '.join(CONTROL_NAMES)}), got {value!r}")
    for name in value:
        if name not in CONTROL_NAMES:
            raise LthError(f"unknown control {name!r}; choose from: {', '.join(CONTROL_NAMES)}")
    return tuple(dict.fromkeys(value))


def make_settings(**values: Any) -> LotterySettings:
    """Validated :class:`LotterySettings` (LthError naming the first bad value)."""
    check_setting_names(list(values))
    for key in ("milestones", "prunable", "ignore_layers"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    if values.get("data_dir") is not None:
        values["data_dir"] = str(values["data_dir"])
    if "controls" in values:
        values["controls"] = _controls(values["controls"])
    s = LotterySettings(**values)
    _require(s.optimizer in ("adam", "sgd"), f"unknown optimizer {s.optimizer!r}; choose adam or sgd")
    _require(is_number(s.lr) and s.lr > 0, f"lr must be a positive number, got {s.lr!r}")
    _require(is_number(s.momentum) and 0 <= s.momentum < 1, f"momentum must be in [0, 1), got {s.momentum!r}")
    _require(is_number(s.weight_decay) and s.weight_decay >= 0, f"weight_decay must be >= 0, got {s.weight_decay!r}")
    _require(is_number(s.gamma) and s.gamma > 0, f"gamma must be a positive number, got {s.gamma!r}")
    _require(is_int(s.warmup) and s.warmup >= 0, f"warmup must be a whole number of iterations >= 0, got {s.warmup!r}")
    _require(
        all(is_int(m) and m >= 0 for m in s.milestones),
        f"milestones must be iterations (integers >= 0), got {list(s.milestones)!r}",
    )
    _require(is_int(s.batch_size) and s.batch_size >= 1, f"batch_size must be an integer >= 1, got {s.batch_size!r}")
    _require(
        s.iterations is None or (is_int(s.iterations) and 1 <= s.iterations <= MAX_ITERATIONS),
        f"iterations must be an integer from 1 to {MAX_ITERATIONS}, got {s.iterations!r}",
    )
    _require(
        s.epochs is None or (is_number(s.epochs) and s.epochs > 0), f"epochs must be a number > 0, got {s.epochs!r}"
    )
    _require(s.iterations is None or s.epochs is None, "give either iterations or epochs, not both")
    _require(is_int(s.eval_every) and s.eval_every >= 1, f"eval_every must be an integer >= 1, got {s.eval_every!r}")
    _require(
        is_int(s.rewind_iteration) and s.rewind_iteration >= 0,
        f"rewind_iteration must be an integer >= 0, got {s.rewind_iteration!r}",
    )
    _require(
        is_int(s.seed) and SEED_RANGE[0] <= s.seed <= SEED_RANGE[1],
        f"seed must be an integer from -2^63 to 2^64-1 (what torch.manual_seed accepts), got {s.seed!r}",
    )
    _require(s.val_size is None or is_int(s.val_size), f"val_size must be an integer, got {s.val_size!r}")
    _require(
        s.prunable is None or (len(s.prunable) > 0 and all(isinstance(n, str) for n in s.prunable)),
        f"prunable must be a non-empty list of parameter names, got {s.prunable!r}",
    )
    _require(
        s.prunable is None or not s.ignore_layers,
        "give prunable=[...] or ignore_layers=[...], not both: ignore_layers only filters the inferred layers",
    )
    _require(
        s.prunable is None or not s.prune_biases,
        "prune_biases only applies when prunable is inferred; list the bias names in prunable instead",
    )
    if isinstance(s.initializer, str):
        INITIALIZERS.get(s.initializer)
    _require(
        s.initializer is None or isinstance(s.initializer, str) or callable(s.initializer),
        f"initializer must be None, an lth initializer name or a callable(module), got {s.initializer!r}",
    )
    if not isinstance(s.device, (str, torch.device)):
        raise LthError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {s.device!r}")
    _require(isinstance(s.compile, bool), f"compile must be True or False, got {s.compile!r}")
    _require(isinstance(s.channels_last, bool), f"channels_last must be True or False, got {s.channels_last!r}")
    s.acceleration()  # checks the precision
    check_settings(s.optimizer_settings())
    return replace(s, device=str(s.device))
