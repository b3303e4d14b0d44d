"""The derivatives of a model that the model-based criteria read: SNIP's loss gradient, GraSP's
Hessian-gradient product, SynFlow's flow gradient.

Each function works on any ``nn.Module`` and leaves it untouched: it differentiates a copy, in
its own RNG scope (dropout draws neither depend on nor disturb the caller's global RNG), and
returns ``{parameter name: tensor}`` for the ``names`` asked for. The criteria in
:mod:`lth.criteria` turn them into scores; pruned weights should be zero in the model given.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.criteria import NEEDS_DATA, NEEDS_DERIVATIVE
from lth.errors import LthError
from lth.global_rng import GLOBAL_RNG_LOCK

Batch = tuple[Tensor, Tensor]

#: GraSP's softmax temperature: the logits are divided by it (the value of the paper's code).
GRASP_TEMPERATURE = 200.0
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@contextmanager
def _scratch(model: nn.Module, seed: int, train: bool) -> Iterator[nn.Module]:
    """A copy of ``model`` in train (or eval) mode, gradients on, global RNG forked and seeded."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    devices = [device] if device.type == "cuda" else []
    # The lock: the searches of a vectorised study score in threads, and seeding the shared global
    # RNG could land amid another thread's seeded draws (lth.global_rng).
    with GLOBAL_RNG_LOCK, torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        scratch = copy.deepcopy(model)
        scratch.train(train)
        for p in scratch.parameters():
            p.requires_grad_(True)
            p.grad = None
        yield scratch


def _params(model: nn.Module, names: Collection[str]) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    missing = [name for name in names if name not in params]
    if missing:
        raise LthError(f"the model has no parameter {missing[0]!r}; its parameters: {', '.join(params)}")
    return [params[name] for name in names]


def _check_batches(batches: Sequence[Batch] | None, what: str) -> Sequence[Batch]:
    if not batches:
        raise LthError(
            f"{what} needs training data (batches of inputs and labels), and none was given; "
            "pass data, or choose synflow, magnitude or random, which need none"
        )
    return batches


def loss_gradient(
    model: nn.Module, names: Collection[str], batches: Sequence[Batch] | None, seed: int = 0
) -> dict[str, Tensor]:
    """g = dL/dw, L the cross-entropy averaged over ``batches`` (the model in train mode)."""
    batches = _check_batches(batches, "a gradient criterion (snip, grad)")
    with _scratch(model, seed, train=True) as scratch:
        params = _params(scratch, names)
        total = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(scratch(x), y), params, allow_unused=True)
            for t, g in zip(total, grads):
                if g is not None:
                    t.add_(g)
        return {name: (t / len(batches)).detach() for name, t in zip(names, total)}


def hessian_gradient(
    model: nn.Module,
    names: Collection[str],
    batches: Sequence[Batch] | None,
    seed: int = 0,
    temperature: float = GRASP_TEMPERATURE,
) -> dict[str, Tensor]:
    """H g by double backpropagation (GraSP): g = dL/dw and H = d²L/dw², L the cross-entropy of
    the logits divided by ``temperature``, averaged over ``batches``; w = the ``names`` parameters
    (the others are held fixed)."""
    batches = _check_batches(batches, "grasp")
    with _scratch(model, seed, train=True) as scratch:
        params = _params(scratch, names)

        def loss(x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(scratch(x) / temperature, y)

        g = [torch.zeros_like(p) for p in params]
        for i, (x, y) in enumerate(batches):
            torch.manual_seed(seed + i)  # the same dropout draws for a batch in both passes
            for total, part in zip(g, torch.autograd.grad(loss(x, y), params, allow_unused=True)):
                if part is not None:
                    total.add_(part)
        g = [t / len(batches) for t in g]
        hg = [torch.zeros_like(p) for p in params]
        for i, (x, y) in enumerate(batches):
            torch.manual_seed(seed + i)
            grads = torch.autograd.grad(loss(x, y), params, create_graph=True, allow_unused=True)
            dot = sum((gi * fixed).sum() for gi, fixed in zip(grads, g) if gi is not None)
            if isinstance(dot, Tensor) and dot.requires_grad:
                for total, part in zip(hg, torch.autograd.grad(dot, params, allow_unused=True)):
                    if part is not None:
                        total.add_(part)
        return {name: (t / len(batches)).detach() for name, t in zip(names, hg)}


def flow_gradient(model: nn.Module, names: Collection[str], input_shape: Sequence[int]) -> dict[str, Tensor]:
    """dR/d|w| (SynFlow): in float64, every parameter replaced by its absolute value and every
    bias (and BatchNorm shift, and running mean) by 0, the model in eval mode, R = the sum of the
    outputs on one all-ones input of ``input_shape`` (channels first, no batch dimension)."""
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise LthError(f"synflow needs the network's input shape (e.g. (1, 28, 28)), got {tuple(input_shape or ())}")
    with _scratch(model, 0, train=False) as scratch:
        scratch.double()
        with torch.no_grad():
            for name, p in scratch.named_parameters():
                if name == "bias" or name.endswith(".bias"):
                    p.zero_()
                else:
                    p.abs_()
            for module in scratch.modules():
                running_mean = getattr(module, "running_mean", None) if isinstance(module, _NORMS) else None
                if running_mean is not None:
                    running_mean.zero_()
        params = _params(scratch, names)
        device = params[0].device if params else torch.device("cpu")
        ones = torch.ones((1, *map(int, input_shape)), dtype=torch.float64, device=device)
        total = scratch(ones).sum()
        grads = torch.autograd.grad(total, params, allow_unused=True)
        return {
            name: (torch.zeros_like(p) if g is None else g).detach().to(model_dtype(model))
            for name, p, g in zip(names, params, grads)
        }


def model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters()), torch.float32)


def criterion_derivatives(
    criterion: str,
    model: nn.Module,
    names: Collection[str],
    batches: Sequence[Batch] | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Tensor]]:
    """What criterion ``criterion`` needs of ``model`` (as :func:`lth.criteria.compute_scores`'s
    ``derivatives``): {} for the weight-only criteria. ``input_shape`` defaults to that of the
    first batch."""
    field = NEEDS_DERIVATIVE.get(criterion)
    if field is None:
        return {}
    if field == "grad":
        return {field: loss_gradient(model, names, batches, seed)}
    if field == "hessian_grad":
        return {field: hessian_gradient(model, names, batches, seed)}
    if input_shape is None:
        if not batches:
            raise LthError(
                "synflow needs the network's input shape (e.g. input_shape=(1, 28, 28)), or a batch to read it from"
            )
        input_shape = tuple(batches[0][0].shape[1:])
    return {field: flow_gradient(model, names, input_shape)}


__all__ = [
    "GRASP_TEMPERATURE",
    "NEEDS_DATA",
    "criterion_derivatives",
    "flow_gradient",
    "hessian_gradient",
    "loss_gradient",
]
