"""Weight initialisers, selected by name in a model's recipe (torch is imported when one runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lth.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

INITIALIZERS: Registry[Callable[[nn.Module], None]] = Registry("initializer")


def _apply(module: nn.Module, init_weight: Callable[[torch.Tensor], object]) -> None:
    """Initialise Linear/Conv weights with ``init_weight``; zero biases; BN to identity."""
    import torch
    from torch import nn

    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, weighted):
                init_weight(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, norms):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


@INITIALIZERS.register("glorot_normal")
def glorot_normal(module: nn.Module) -> None:
    """Glorot & Bengio (2010) normal: std = sqrt(2 / (fan_in + fan_out))."""
    from torch import nn

    _apply(module, nn.init.xavier_normal_)


@INITIALIZERS.register("kaiming_normal")
def kaiming_normal(module: nn.Module) -> None:
    """He et al. (2015) normal for ReLU nets: std = sqrt(2 / fan_in).

    fan_in = in_channels * kernel area (conv) or in_features (linear).
    """
    from torch import nn

    _apply(module, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"))


def initialize(module: nn.Module, name: str, generator_seed: int | None = None) -> None:
    """Apply initializer ``name`` to ``module`` in place.

    With ``generator_seed`` the draws happen on a forked RNG seeded with it, so the
    result is a pure function of the seed (for a given device) and the caller's
    global RNG state is left untouched.
    """
    import torch

    init = INITIALIZERS.get(name)
    if generator_seed is None:
        init(module)
        return
    cuda_devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(generator_seed)
        init(module)
