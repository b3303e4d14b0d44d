"""torch's global RNG, one per process, shared by threads.

A vectorised study runs its searches as threads (:mod:`lth.training.lockstep`). Whoever seeds,
sets or draws from the global RNG takes :data:`GLOBAL_RNG_LOCK` for the whole seed-then-draw
sequence, or another thread's seeding can land in the middle of it (a network initialised from
another search's stream). The lock is re-entrant: a locked section may call one that locks.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GLOBAL_RNG_LOCK = threading.RLock()


def seed_global_rng(seed: int) -> None:
    """``torch.manual_seed(seed)``, never in the middle of another thread's seeded draws."""
    import torch

    with GLOBAL_RNG_LOCK:
        torch.manual_seed(seed)


def set_global_rng_state(state: torch.Tensor) -> None:
    """``torch.set_rng_state(state)`` (the CPU generator), never in the middle of another thread's draws."""
    import torch

    with GLOBAL_RNG_LOCK:
        torch.set_rng_state(state)
