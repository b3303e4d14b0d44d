"""Speed options of a training that do not change the recipe: mixed precision, ``torch.compile``
and channels-last memory layout.

All three are off by default, so results stay bit-for-bit reproducible in float32. They pay on a
GPU (tensor cores, fused kernels, cuDNN's NHWC convolutions); on a CPU they mostly do not (see
the README's performance section for figures measured on this project's machine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from lth.errors import LthError

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Acceleration:
    """``precision``: fp32, or bf16 autocast of the forward pass (the weights, gradients and
    optimizer stay float32). ``compile``: run the forward pass through ``torch.compile``.
    ``channels_last``: NHWC layout for convolutional models and their image batches."""

    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise LthError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.compile and not hasattr(torch, "compile"):
            raise LthError(f"--compile needs torch >= 2.0 (this is torch {torch.__version__})")

    @property
    def vectorizable(self) -> bool:
        """Can networks with these options be trained side by side? (Autocast does not reach
        inside ``vmap``, so bf16 trainings run one at a time.)"""
        return self.precision == "fp32"

    def autocast(self, device: torch.device) -> AbstractContextManager[None]:
        """The context for forward passes on ``device``."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in the memory layout wanted (in place; parameters keep their identity)."""
        if self.channels_last and _has_conv(model):
            # Module.to takes memory_format at run time; torch's type stubs lack that keyword.
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the memory layout wanted."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The callable that runs ``model``'s forward pass: the model itself, or its compiled form
        (the caller keeps it: compiling again costs tens of seconds)."""
        return torch.compile(model) if self.compile else model


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


DEFAULT = Acceleration()
