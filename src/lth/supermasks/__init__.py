"""Supermasks (Zhou et al. 2019): masks that make untrained networks perform."""

from lth.supermasks.evaluate import (
    DEFAULT_KEEPS,
    DEFAULT_WEIGHTS,
    WEIGHT_TRANSFORMS,
    SupermaskEvalResult,
    SupermaskGrid,
    evaluate_supermasks,
    run_supermask_eval,
)

__all__ = [
    "DEFAULT_KEEPS",
    "DEFAULT_WEIGHTS",
    "WEIGHT_TRANSFORMS",
    "SupermaskEvalResult",
    "SupermaskGrid",
    "evaluate_supermasks",
    "run_supermask_eval",
]

# Learned supermasks (Zhou et al. 2019 bernoulli; Ramanujan et al. 2020 edge-popup).
from lth.supermasks.learned import METHODS, WEIGHTS, SupermaskNet  # noqa: E402
from lth.supermasks.train import SupermaskResult, SupermaskRun, run_supermask_training, train_supermask  # noqa: E402

__all__ += [
    "METHODS",
    "WEIGHTS",
    "SupermaskNet",
    "SupermaskResult",
    "SupermaskRun",
    "run_supermask_training",
    "train_supermask",
]
