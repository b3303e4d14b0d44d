"""lth: a laboratory for the Lottery Ticket Hypothesis.

Find sparse trainable sub-networks ("winning tickets") by iterative magnitude pruning with
rewinding, on the bundled models or any ``torch.nn.Module``.

The names below are imported on first use (``import lth`` alone loads neither torch nor the
plotting stack), so that ``lth --help`` and a script's start stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "TicketConfig": "lth.config",
    "LthError": "lth.errors",
    "TicketResult": "lth.experiments",
    "find_ticket": "lth.experiments",
    "branch": "lth.experiments.branches",
    "LotteryModel": "lth.experiments.lottery_model",
    "LotteryRobust": "lth.experiments.lottery_robust",
    "LotterySession": "lth.experiments.lottery_session",
    "stability": "lth.experiments.stability",
    "summarise_trials": "lth.experiments.statistics",
    "InitPruning": "lth.init_pruning",
    "prune_at_init": "lth.init_pruning",
    "compute_mask": "lth.mask_from_weights",
    "Mask": "lth.masks",
    "prunable_parameters": "lth.pruning",
    "prune": "lth.pruning",
    "apply_with_torch_prune": "lth.torch_prune",
    "mask_from_torch_prune": "lth.torch_prune",
}

__all__ = sorted(["__version__", *_EXPORTS])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # e.g. a submodule not imported yet: ``from lth import jsonio`` then imports it
        raise AttributeError(f"module 'lth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
