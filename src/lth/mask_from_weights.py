"""Masks computed from saved weights of any model, without the model itself.

``init`` and ``final`` are plain state dicts (``model.state_dict()``); the prunable tensors are
found by name and shape alone (see :func:`prunable_names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from lth.config import check_seed
from lth.criteria import CRITERIA, compute_scores
from lth.errors import LthError
from lth.masks import Mask, as_mask_tensor
from lth.pruning import prune

SCOPES = ("layerwise", "global")


def prunable_names(state: Mapping[str, Tensor], prune_biases: bool = False) -> list[str]:
    """Names of the Linear/Conv weights in a state dict (entries ``*.weight`` with ndim >= 2).

    With ``prune_biases``, the ``<layer>.bias`` of each such layer follows its weight.
    1-D weights (BatchNorm, LayerNorm) are never included.
    """
    names: list[str] = []
    for name, value in state.items():
        if name != "weight" and not name.endswith(".weight"):
            continue
        if not isinstance(value, Tensor) or value.ndim < 2 or not value.is_floating_point():
            continue
        names.append(name)
        if prune_biases:
            bias = name[: -len("weight")] + "bias"
            if isinstance(state.get(bias), Tensor):
                names.append(bias)
    return names


def prune_rate_from(keep: float | None, prune_rate: float | None) -> float:
    """The per-call prune rate given exactly one of ``keep`` in (0, 1] or ``prune_rate`` in [0, 1).

    ``keep`` is turned into ``prune_rate = 1 - keep``; counts then follow :func:`lth.pruning.prune`
    (``round(rate * kept)`` weights removed).
    """
    if keep is None and prune_rate is None:
        raise LthError(
            "give exactly one of keep (fraction kept, in (0, 1]) or prune_rate (fraction removed, in [0, 1)); "
            "got neither"
        )
    if keep is not None and prune_rate is not None:
        raise LthError(f"give exactly one of keep or prune_rate, not both (got keep={keep}, prune_rate={prune_rate})")
    if keep is not None:
        if not 0.0 < keep <= 1.0:
            raise LthError(f"keep must be in (0, 1] (the fraction of the weights kept), got {keep}")
        return 1.0 - keep
    assert prune_rate is not None
    if not 0.0 <= prune_rate < 1.0:
        raise LthError(f"prune_rate must be in [0, 1) (the fraction of the weights removed), got {prune_rate}")
    return prune_rate


def check_arguments(criterion: str, keep: float | None, prune_rate: float | None, scope: str) -> float:
    """Validate the cheap arguments of :func:`compute_mask` (before any file is read); return the rate."""
    rate = prune_rate_from(keep, prune_rate)
    CRITERIA.get(criterion)  # LthError listing the known criteria
    if scope not in SCOPES:
        raise LthError(f"unknown scope {scope!r}; choose layerwise or global")
    return rate


def check_same_layout(init: Mapping[str, Tensor], final: Mapping[str, Tensor]) -> None:
    """Raise LthError unless ``init`` and ``final`` have the same keys and shapes."""
    for name in init:
        if name not in final:
            raise LthError(f"key {name!r} is in the init weights but not in the final weights")
    for name in final:
        if name not in init:
            raise LthError(f"key {name!r} is in the final weights but not in the init weights")
    for name, a in init.items():
        b = final[name]
        shape_a = tuple(getattr(a, "shape", ()))
        shape_b = tuple(getattr(b, "shape", ()))
        if shape_a != shape_b:
            raise LthError(f"{name!r} has shape {shape_a} in the init weights but {shape_b} in the final weights")


def compute_mask(
    init: Mapping[str, Tensor],
    final: Mapping[str, Tensor],
    criterion: str = "large_final",
    *,
    keep: float | None = None,
    prune_rate: float | None = None,
    scope: str = "layerwise",
    prev_mask: Mapping[str, Tensor] | None = None,
    prune_biases: bool = False,
    seed: int = 0,
    grads: Mapping[str, Tensor] | None = None,
) -> Mask:
    """One pruning step on saved weights: a new mask keeping ``keep`` (or removing ``prune_rate``).

    The fraction applies to the weights still kept by ``prev_mask`` (all of them without it), and
    pruned weights never come back. The mask covers ``prev_mask``'s keys, else
    :func:`prunable_names` of ``final``. Ties are broken by a generator seeded with ``seed``.
    """
    rate = check_arguments(criterion, keep, prune_rate, scope)
    check_seed(seed)
    check_same_layout(init, final)
    if prev_mask is not None:
        current = Mask({str(k): as_mask_tensor(v, "the previous mask", str(k)) for k, v in prev_mask.items()})
        current.check_matches(final)
    else:
        current = Mask.ones({n: final[n] for n in prunable_names(final, prune_biases)})
    if not current:
        raise LthError(
            "no prunable tensors found: expected Linear/Conv weights named '*.weight' with 2 or more dimensions"
        )
    names = list(current)
    for name in names:
        _check_finite(init[name], "the init weights", name)
        _check_finite(final[name], "the final weights", name)
    if grads is not None:
        for name in names:
            if name not in grads:
                raise LthError(f"gradients are missing for {name!r}")
            if tuple(grads[name].shape) != tuple(final[name].shape):
                raise LthError(
                    f"gradient for {name!r} has shape {tuple(grads[name].shape)}, "
                    f"the weights {tuple(final[name].shape)}"
                )
    generator = torch.Generator().manual_seed(seed)
    scores = compute_scores(
        criterion,
        {n: init[n] for n in names},
        {n: final[n] for n in names},
        dict(current),
        generator,
        grads=None if grads is None else {n: grads[n] for n in names},
    )
    return prune(scores, current, {n: rate for n in names}, scope, generator)


def load_state_dict_file(path: str | Path, what: str = "state dict", finite: bool = False) -> dict[str, Tensor]:
    """``torch.load(path, weights_only=True)`` on the CPU, checked to be a mapping of names to tensors
    (with ``finite``: floating-point tensors without NaN or infinity)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LthError(f"{what} file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise LthError(f"{what} file {str(path)!r} is a directory, not a file saved with torch.save") from None
    except OSError as error:  # permissions and the like
        raise LthError(f"cannot read {what} file {str(path)!r}: {error.strerror or error}") from None
    except Exception:  # corrupt, not a torch file, or holding non-tensor objects (torch's message is long)
        raise LthError(
            f"cannot read {what} file {str(path)!r}: it is not a file of tensors saved with torch.save "
            "(corrupt, or holding Python objects other than tensors)"
        ) from None
    if not isinstance(data, Mapping):
        raise LthError(
            f"{what} file {str(path)!r} holds a {type(data).__name__}, not a mapping of names to tensors "
            "(save it with torch.save(model.state_dict(), path))"
        )
    for key, value in data.items():
        if not isinstance(value, Tensor):
            raise LthError(
                f"{what} file {str(path)!r} maps {key!r} to a {type(value).__name__}, not a tensor "
                "(save it with torch.save(model.state_dict(), path))"
            )
        if finite:
            _check_finite(value, f"{what} file {str(path)!r}", str(key))
    return {str(k): v for k, v in data.items()}


def _check_finite(value: Tensor, source: str, name: str) -> None:
    """LthError naming ``source`` and the tensor ``name`` if it holds NaN or an infinity."""
    if value.is_floating_point() or value.is_complex():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            raise LthError(
                f"{source}: tensor {name!r} holds {value[bad].flatten()[0].item()!r}; weights must be finite numbers"
            )
