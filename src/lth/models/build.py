"""Building a registered model: seeded, initialised by its recipe and checked against the data's shape."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lth.errors import LthError
from lth.global_rng import GLOBAL_RNG_LOCK
from lth.models.init import initialize
from lth.models.registry import MODELS, InputShape


def _check_shape(name: str, input_shape: Any) -> InputShape:
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = len(shape) == 3 and all(s >= 1 for s in shape) and shape == tuple(input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LthError(
            f"input shape {input_shape!r} for model {name!r} is invalid; use "
            f"(channels, height, width) with positive integers"
        )
    channels, height, width = shape
    return channels, height, width


def build_model(name: str, input_shape: InputShape, num_classes: int, seed: int) -> nn.Module:
    """Build model ``name``, initialise it under ``seed`` and check it fits ``input_shape``.

    The result is bit-identical for the same seed and the caller's global RNG is
    untouched. A forward pass on zeros of shape ``(2, *input_shape)`` is dry-run;
    any failure raises ``LthError`` naming the model and the shape.
    """
    spec = MODELS.get(name)
    shape = _check_shape(name, input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise LthError(f"num_classes {num_classes!r} for model {name!r} must be a positive integer")

    def unfit(reason: str) -> LthError:
        return LthError(f"model {name!r} does not fit input shape {shape} of the dataset: {reason}")

    with GLOBAL_RNG_LOCK:  # the draws below use the global RNG (forked): one thread at a time
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = spec.build(shape, num_classes)
            except LthError as e:
                raise unfit(str(e)) from e
            except Exception as e:  # any failure means the model does not fit
                raise unfit(_short(e)) from e
        initialize(model, spec.recipe.initializer, generator_seed=seed)

    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except LthError as e:
        raise unfit(str(e)) from e
    except Exception as e:  # any failure means the model does not fit
        raise unfit(_short(e)) from e
    finally:
        model.train()
    if tuple(out.shape) != (2, num_classes):
        raise unfit(f"output shape {tuple(out.shape)} is not (batch, {num_classes})")
    return model


def _short(error: Exception) -> str:
    """First line of an exception message, for a one-sentence error."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
