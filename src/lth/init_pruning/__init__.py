"""Pruning at initialisation (SNIP, GraSP, SynFlow, magnitude, random) and its ablations."""

from lth.init_pruning.ablations import ABLATIONS, ablate_mask, invert_mask, reinit_weights, shuffle_mask
from lth.init_pruning.derivatives import criterion_derivatives, flow_gradient, hessian_gradient, loss_gradient
from lth.init_pruning.prune import (
    DEFAULT_ITERATIONS,
    METHOD_NAMES,
    METHODS,
    InitPruning,
    default_iterations,
    keep_fractions,
    needs_data,
    prune_at_init,
    schedule_counts,
    warn_collapse,
)

__all__ = [
    "ABLATIONS",
    "DEFAULT_ITERATIONS",
    "InitPruning",
    "METHODS",
    "METHOD_NAMES",
    "ablate_mask",
    "criterion_derivatives",
    "default_iterations",
    "flow_gradient",
    "hessian_gradient",
    "invert_mask",
    "keep_fractions",
    "loss_gradient",
    "needs_data",
    "prune_at_init",
    "reinit_weights",
    "schedule_counts",
    "shuffle_mask",
    "warn_collapse",
]
