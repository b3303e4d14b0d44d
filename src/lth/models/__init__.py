"""Model zoo: registered architectures, each with its paper's training + pruning recipe.

The registry loads without torch; :func:`build_model` (and a model's family module) imports it.
Add a model of your own with one decorated builder function::

    @register_model("my-net", "mine", "what it is", recipe)
    def my_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module: ...
"""

from __future__ import annotations

import importlib
from typing import Any

from lth.models import zoo  # noqa: F401  (registers the built-in models)
from lth.models.init import INITIALIZERS, initialize
from lth.models.recipe import Recipe
from lth.models.registry import MODELS, ModelSpec, add_model, register_model

__all__ = [
    "INITIALIZERS",
    "MODELS",
    "ModelSpec",
    "Recipe",
    "add_model",
    "build_model",
    "initialize",
    "register_model",
]


def __getattr__(name: str) -> Any:
    if name != "build_model":
        raise AttributeError(f"module 'lth.models' has no attribute {name!r}")
    value = importlib.import_module("lth.models.build").build_model
    globals()[name] = value
    return value
