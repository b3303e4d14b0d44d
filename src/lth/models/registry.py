"""The model registry: name -> builder + the paper's recipe (importable without torch).

The built-in models are listed in :mod:`lth.models.zoo`, which names their builders as
``"module:function"`` strings: ``lth models`` reads recipes and layer groups without importing
torch, and a builder's module is imported the first time a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lth.errors import LthError
from lth.models.recipe import Recipe
from lth.registry import Registry

if TYPE_CHECKING:
    from torch import nn

InputShape = tuple[int, int, int]
Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its recipe, the layer groups it has and how to build it.

    ``builder`` is ``builder(input_shape, num_classes, **options) -> nn.Module`` or its
    ``"module:function"`` name; ``groups`` lists the prunable layer groups the model has (a subset
    of fc, conv, output), or None where only building it would tell.
    """

    name: str
    family: str
    description: str
    builder: Builder | str
    recipe: Recipe
    groups: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, input_shape: InputShape, num_classes: int) -> nn.Module:
        """An uninitialised instance (use :func:`lth.models.build_model` for a seeded, checked one)."""
        builder = self.builder
        if isinstance(builder, str):
            module, _, function = builder.partition(":")
            builder = getattr(importlib.import_module(module), function)
        return builder(input_shape, num_classes, **self.options)


MODELS: Registry[ModelSpec] = Registry("model")


def add_model(
    name: str,
    family: str,
    description: str,
    recipe: Recipe,
    builder: Builder | str,
    groups: tuple[str, ...] | None = None,
    **options: Any,
) -> ModelSpec:
    """Register ``name``; ``options`` are passed to the builder as keyword arguments."""
    return MODELS.add(name, ModelSpec(name, family, description, builder, recipe, groups, options))


def register_model(
    name: str, family: str, description: str, recipe: Recipe, groups: tuple[str, ...] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(input_shape, num_classes) -> nn.Module`` as ``name``."""

    def decorator(builder: Builder) -> Builder:
        add_model(name, family, description, recipe, builder, groups)
        return builder

    return decorator


def spatial_after(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a conv/pool along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def require_positive(h: int, w: int, where: str) -> None:
    """Raise ``LthError`` when a feature map has shrunk to nothing."""
    if h < 1 or w < 1:
        raise LthError(f"the feature map shrinks to {max(h, 0)}x{max(w, 0)} {where}")
