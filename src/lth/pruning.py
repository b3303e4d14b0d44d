"""(scores, current mask, rates, scope) -> new mask. Nothing else.

Prunable parameters of any ``nn.Module`` are found here too: the weights of Linear and
Conv layers (and their biases on request), each in a pruning group (``conv``, ``fc`` or
``output`` = the last Linear layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lth.errors import LthError, warn
from lth.masks import Mask

GROUPS = ("fc", "conv", "output")


@dataclass(frozen=True)
class Prunable:
    name: str  # parameter name, e.g. "fc1.weight"
    group: str  # one of GROUPS


def prunable_parameters(
    model: nn.Module, prune_biases: bool = False, ignore: Sequence[str] = ()
) -> dict[str, Prunable]:
    """The model's prunable parameters in module order, keyed by parameter name.

    ``ignore`` holds module names (``fc1``) or parameter names (``fc1.weight``) to leave dense.
    """
    layers = [
        (module_name, module)
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    last_linear = max((i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)), default=-1)
    found: dict[str, Prunable] = {}
    for i, (module_name, module) in enumerate(layers):
        group = "conv" if not isinstance(module, nn.Linear) else ("output" if i == last_linear else "fc")
        kinds = ["weight"] + (["bias"] if prune_biases and module.bias is not None else [])
        for kind in kinds:
            name = f"{module_name}.{kind}" if module_name else kind
            found[name] = Prunable(name, group)
    unknown = [item for item in ignore if item not in found and not any(n.rsplit(".", 1)[0] == item for n in found)]
    if unknown:
        layer_names = sorted({n.rsplit(".", 1)[0] for n in found})
        raise LthError(f"cannot ignore unknown layer {unknown[0]!r}; prunable layers are: {', '.join(layer_names)}")
    return {name: p for name, p in found.items() if name not in ignore and name.rsplit(".", 1)[0] not in ignore}


def _lowest(scores: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the ``count`` lowest scores; ties broken uniformly at random."""
    order = torch.randperm(scores.numel(), generator=generator).to(scores.device)
    ranked = torch.argsort(scores[order], stable=True)
    return order[ranked[:count]]


def prune(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    rates: Mapping[str, float],
    scope: str,
    generator: torch.Generator,
) -> Mask:
    """Remove, among the weights still kept, the lowest-scoring fraction.

    ``layerwise``: each parameter loses ``round(rate * kept)`` of its kept weights.
    ``global``: one threshold over all parameters in ``rates`` (their rates must be equal).
    Pruned weights never come back; exactly the requested count is removed.
    """
    new = Mask({name: m.clone() for name, m in mask.items()})
    names = [name for name in mask if rates.get(name, 0.0) > 0.0]
    if scope == "layerwise":
        for name in names:
            kept_idx = new[name].flatten().nonzero().squeeze(1)
            count = int(round(rates[name] * kept_idx.numel()))
            drop = kept_idx[_lowest(scores[name].flatten()[kept_idx].float(), count, generator)]
            new[name].view(-1)[drop] = False
    elif scope == "global":
        distinct = {rates[name] for name in names}
        if len(distinct) > 1:
            raise LthError(f"global pruning needs one rate for all layers, got {sorted(distinct)}")
        if not names:
            return new
        kept = [new[name].flatten().nonzero().squeeze(1) for name in names]
        pooled = torch.cat([scores[n].flatten()[k].float() for n, k in zip(names, kept)])
        count = int(round(distinct.pop() * pooled.numel()))
        drop = _lowest(pooled, count, generator)
        offsets = torch.tensor([0] + [k.numel() for k in kept]).cumsum(0).tolist()
        for name, k, start, stop in zip(names, kept, offsets[:-1], offsets[1:]):
            local = drop[(drop >= start) & (drop < stop)] - start
            new[name].view(-1)[k[local]] = False
    else:
        raise LthError(f"unknown scope {scope!r}; choose layerwise or global")
    return new


def prune_to(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    counts: Mapping[str, int] | int,
    generator: torch.Generator,
) -> Mask:
    """Keep, among the weights still kept, the ``counts[name]`` highest-scoring ones of each tensor
    (a mapping), or that many over all of ``mask``'s tensors pooled (an int: one global
    threshold). A count at or above what is kept keeps everything; pruned weights never come
    back; ties are broken uniformly at random, as in :func:`prune`."""
    new = Mask({name: m.clone() for name, m in mask.items()})
    names = list(mask)
    kept = [new[name].flatten().nonzero().squeeze(1) for name in names]
    if isinstance(counts, int):
        pooled = torch.cat([scores[n].flatten()[k].float() for n, k in zip(names, kept)]) if names else torch.zeros(0)
        drop = _lowest(pooled, max(0, pooled.numel() - counts), generator)
        offsets = torch.tensor([0] + [k.numel() for k in kept]).cumsum(0).tolist()
        for name, k, start, stop in zip(names, kept, offsets[:-1], offsets[1:]):
            new[name].view(-1)[k[drop[(drop >= start) & (drop < stop)] - start]] = False
        return new
    for name, k in zip(names, kept):
        local = scores[name].flatten()[k].float()
        new[name].view(-1)[k[_lowest(local, max(0, k.numel() - counts[name]), generator)]] = False
    return new


def keep_highest(
    scores: Mapping[str, torch.Tensor],
    counts: Mapping[str, int] | int,
    names: Sequence[str],
    generator: torch.Generator,
) -> Mask:
    """A fresh mask over ``names`` keeping the highest-scoring weights: ``counts[name]`` in each
    tensor (a mapping), or that many over all of them pooled (an int: one global threshold).
    Ties are broken uniformly at random, as in :func:`prune`."""
    new = Mask({name: torch.ones_like(scores[name], dtype=torch.bool) for name in names})
    if isinstance(counts, int):
        pooled = torch.cat([scores[name].flatten().float() for name in names])
        drop = _lowest(pooled, pooled.numel() - counts, generator)
        offsets = torch.tensor([0] + [scores[name].numel() for name in names]).cumsum(0).tolist()
        for name, start, stop in zip(names, offsets[:-1], offsets[1:]):
            new[name].view(-1)[drop[(drop >= start) & (drop < stop)] - start] = False
        return new
    for name in names:
        flat = scores[name].flatten().float()
        new[name].view(-1)[_lowest(flat, flat.numel() - counts[name], generator)] = False
    return new


def layer_rates(prunable: Mapping[str, Prunable], fc: float, conv: float, output: float) -> dict[str, float]:
    """The per-parameter prune rate given per-group rates."""
    by_group = {"fc": fc, "conv": conv, "output": output}
    return {name: by_group[p.group] for name, p in prunable.items()}


def warn_emptied(before: Mask, after: Mask, round_index: int, hint: str) -> list[str]:
    """Warn (one line on stderr) when pruning for ``round_index`` removed the last kept weight of a
    tensor; return the names of the tensors it emptied. ``hint`` says what to change."""
    names = [name for name, m in after.items() if not bool(m.any()) and bool(before[name].any())]
    if names:
        them = "it" if len(names) == 1 else "them"
        none_left = "no weight is left in any pruned layer; " if not any(bool(m.any()) for m in after.values()) else ""
        warn(
            f"pruning for round {round_index} leaves no weight in {', '.join(names)}; the network cannot learn "
            f"through {them} ({none_left}{hint})"
        )
    return names
