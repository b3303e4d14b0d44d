"""Learned supermasks: train a mask over frozen weights (Zhou et al. 2019; Ramanujan et al. 2020).

:class:`SupermaskNet` wraps ANY ``nn.Module`` without special layers. Every prunable weight
(Linear/Conv weights by default) gets a trainable score tensor of its shape; the weights
themselves are frozen copies (buffers) and every parameter of the wrapped model is set to
``requires_grad=False``. The forward pass calls the wrapped model through
``torch.func.functional_call`` with ``weight * mask`` in place of each prunable weight.

Methods:

``bernoulli`` (Zhou et al.)
    ``p = sigmoid(s)``; in training a fresh ``m ~ Bernoulli(p)`` is drawn every forward; the
    backward pass is straight-through: it treats ``dm/ds`` as ``dp/ds = p (1 - p)``. Scores start
    at the constant ``score_init`` (0 gives p = 0.5). In evaluation the mask is the thresholded
    expected mask ``p > 0.5`` (``eval_mode="expected"``) or a fresh sample (``"sample"``).
``edge-popup`` (Ramanujan et al.)
    ``m`` keeps exactly ``round(keep * numel)`` entries of largest ``|s|`` per layer (the same in
    training and evaluation); straight-through: ``dm/d|s|`` is treated as the identity, so ``s``
    gets ``dL/dw_eff * w * sign(s)`` (as in the authors' code, which ranks ``scores.abs()``; without
    the sign factor negative scores move the wrong way and training fails). Scores start
    Kaiming-uniform as in the authors' code (``kaiming_uniform_(s, a=sqrt(5))``: uniform in
    ``±1/sqrt(fan_in)``), drawn from a generator seeded with ``seed``.

The forward values of the straight-through masks are exactly 0/1 (a custom autograd function
returns the mask forward and hands the gradient to ``p`` or ``s`` backward), so a mask of ones
reproduces the wrapped model bit for bit.

Weights (``weights``): ``init`` = the wrapped model's current values; ``signed_constant`` =
``sign(w) * std(w)`` per layer (Zhou et al.; the population std of the layer's values, as in
:func:`lth.actions.init_std`); ``signed_kaiming_constant`` = ``sign(w) * sqrt(2 / fan_in)``
(Ramanujan et al.; fan_in = in_features, or in_channels/groups * kernel area).

``dynamic_scaling`` multiplies each layer's masked weight by ``numel / sum(m)`` (``sum(m)``
clamped to >= 1); the factor is computed from the mask value and carries no gradient.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lth.actions import init_std
from lth.errors import LthError
from lth.masks import Mask
from lth.pruning import prunable_parameters

METHODS = ("bernoulli", "edge-popup")
WEIGHTS = ("init", "signed_constant", "signed_kaiming_constant")
EVAL_MODES = ("expected", "sample")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise LthError(f"unknown supermask method {method!r}; choose one of: {', '.join(METHODS)}")


def check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise LthError(f"unknown supermask weights {weights!r}; choose one of: {', '.join(WEIGHTS)}")


def check_keep(keep: float) -> None:
    if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
        raise LthError(f"keep {keep!r} is invalid for edge-popup; it must be in (0, 1]")


class _StraightThrough(torch.autograd.Function):
    """Returns ``mask`` forward; passes the incoming gradient unchanged to ``source`` backward."""

    @staticmethod
    def forward(ctx: Any, source: Tensor, mask: Tensor) -> Tensor:
        return mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(source: Tensor, mask: Tensor) -> Tensor:
    """``mask`` in the forward pass, the identity to ``source`` in the backward pass."""
    return _StraightThrough.apply(source, mask)


def fan_in(weight: Tensor) -> int:
    """Inputs per output unit: in_features (Linear) or in_channels/groups * kernel area (Conv)."""
    return weight[0].numel() if weight.dim() > 1 else 1


def frozen_weights(weight: Tensor, kind: str) -> Tensor:
    """The value a layer's weight is frozen at (see the module docstring)."""
    check_weights(kind)
    w = weight.detach()
    if kind == "init":
        return w.clone()
    if kind == "signed_constant":
        return torch.sign(w) * init_std(w)
    return torch.sign(w) * math.sqrt(2.0 / fan_in(w))


def top_k_mask(scores: Tensor, keep: float) -> Tensor:
    """Float mask keeping exactly ``round(keep * numel)`` entries of largest ``|scores|``."""
    k = round(keep * scores.numel())
    flat = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
    if k > 0:
        flat.index_fill_(0, torch.topk(scores.detach().abs().flatten(), k, sorted=False).indices, 1)
    return flat.view_as(scores)


def scale_factor(mask: Tensor) -> Tensor:
    """Dynamic-scaling factor of one layer: ``numel / sum(mask)`` (sum clamped to >= 1), no grad."""
    return mask.numel() / mask.detach().sum().clamp_min(1)


class SupermaskNet(nn.Module):
    """A supermask network over ``model``: only the scores (``self.scores``) are trainable.

    ``model``'s parameters are set to ``requires_grad=False`` (the wrapper owns the model).
    ``names`` defaults to the prunable parameters of :func:`lth.pruning.prunable_parameters`.
    ``seed`` seeds the edge-popup score initialisation and the Bernoulli sampling.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "bernoulli",
        weights: str | None = None,
        score_init: float = 0.0,
        keep: float | None = None,
        dynamic_scaling: bool = False,
        names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_method(method)
        weights = weights or ("init" if method == "bernoulli" else "signed_kaiming_constant")
        check_weights(weights)
        if method == "edge-popup":
            keep = 0.5 if keep is None else keep
            check_keep(keep)
            if score_init != 0.0:
                raise LthError(
                    "score_init applies to the bernoulli method only (edge-popup scores start Kaiming uniform)"
                )
        elif keep is not None:
            raise LthError("keep applies to the edge-popup method only")
        self.model = model
        self.method, self.weights_kind, self.keep = method, weights, keep
        self.score_init, self.dynamic_scaling, self.seed = float(score_init), bool(dynamic_scaling), seed
        self.eval_mode = "expected"
        for p in model.parameters():
            p.requires_grad_(False)

        params = dict(model.named_parameters())
        self.names: list[str] = list(prunable_parameters(model) if names is None else names)
        missing = [n for n in self.names if n not in params]
        if missing:
            raise LthError(f"model has no parameter {missing[0]!r}; it has: {', '.join(params)}")
        self._keys = {name: name.replace(".", "__") for name in self.names}
        if len(set(self._keys.values())) != len(self._keys):
            raise LthError("parameter names collide after replacing '.' with '__'")

        generator = torch.Generator().manual_seed(seed)
        self.scores = nn.ParameterDict()
        self.frozen = nn.Module()  # buffers: the frozen weights, never updated
        for name, key in self._keys.items():
            w = params[name]
            self.frozen.register_buffer(key, frozen_weights(w, weights))
            if method == "bernoulli":
                s = torch.full_like(w, self.score_init)
            else:
                bound = 1.0 / math.sqrt(fan_in(w))  # kaiming_uniform_ with a = sqrt(5)
                draw = torch.rand(w.shape, generator=generator, dtype=torch.float64)
                s = ((draw * 2 - 1) * bound).to(w)
            self.scores[key] = nn.Parameter(s)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._fixed: dict[str, Tensor] | None = None

    # -- masks -----------------------------------------------------------------------
    def weight(self, name: str) -> Tensor:
        """The frozen weight of parameter ``name`` (original parameter name)."""
        return self.frozen.get_buffer(self._keys[name])

    def score(self, name: str) -> nn.Parameter:
        return self.scores[self._keys[name]]

    def generator(self, device: torch.device) -> torch.Generator:
        """The sampling generator on ``device`` (seeded with ``seed`` when first used)."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _sample(self, p: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A 0/1 sample of ``Bernoulli(p)`` (same dtype as ``p``): ``u < p`` with ``u ~ U[0, 1)``.

        (About twice as fast as ``torch.bernoulli`` on the CPU.)
        """
        generator = generator or self.generator(p.device)
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        return (u < p.detach()).to(p.dtype)

    def _layer_mask(self, s: Tensor, mode: str, generator: torch.Generator | None = None) -> Tensor:
        """One layer's float mask; straight-through when ``mode == "train"``."""
        if self.method == "edge-popup":
            assert self.keep is not None  # edge-popup always has its fraction kept (default 0.5)
            m = top_k_mask(s, self.keep)
            return straight_through(s.abs(), m) if mode == "train" else m
        if mode == "expected":
            return (torch.sigmoid(s.detach()) > 0.5).to(s.dtype)
        p = torch.sigmoid(s) if mode == "train" else torch.sigmoid(s.detach())
        m = self._sample(p, generator)
        return straight_through(p, m) if mode == "train" else m

    def masks(self, mode: str = "expected", generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Float masks keyed by original names: ``train`` (straight-through), ``expected`` or
        ``sample`` (bernoulli); edge-popup always gives the top-k mask."""
        return {name: self._layer_mask(self.scores[key], mode, generator) for name, key in self._keys.items()}

    def effective_weights(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``w * m`` per layer (times ``numel / sum(m)`` with dynamic scaling)."""
        out = {}
        for name, m in masks.items():
            w = self.weight(name) * m
            out[name] = w * scale_factor(m) if self.dynamic_scaling else w
        return out

    @torch.no_grad()
    def current_mask(self, mode: str = "expected", generator: torch.Generator | None = None) -> Mask:
        """The mask as bool tensors keyed by the model's parameter names (lth mask format)."""
        if mode not in EVAL_MODES:
            raise LthError(f"unknown mask mode {mode!r}; choose one of: {', '.join(EVAL_MODES)}")
        return Mask({name: m.bool() for name, m in self.masks(mode, generator).items()})

    def layer_density(self, mode: str = "expected") -> dict[str, float]:
        """Fraction kept per layer of :meth:`current_mask` (one host sync)."""
        masks = self.current_mask(mode)
        values = torch.stack([m.sum() / m.numel() for m in masks.values()]).tolist() if masks else []
        return dict(zip(masks, values))

    @contextlib.contextmanager
    def fixed_mask(self, masks: Mapping[str, Tensor]) -> Iterator[SupermaskNet]:
        """Inside the block, every forward uses ``masks`` (e.g. one sampled mask for a whole test set)."""
        previous = self._fixed
        with torch.no_grad():
            self._fixed = self.effective_weights({n: m.to(self.weight(n).dtype) for n, m in masks.items()})
        try:
            yield self
        finally:
            self._fixed = previous

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self._fixed is not None:
            weights = self._fixed
        else:
            mode = "train" if self.training else self.eval_mode
            weights = self.effective_weights(self.masks(mode))
        return functional_call(self.model, weights, (x,))

    def extra_repr(self) -> str:
        keep = f", keep={self.keep}" if self.method == "edge-popup" else ""
        return (
            f"method={self.method!r}, weights={self.weights_kind!r}{keep}, "
            f"dynamic_scaling={self.dynamic_scaling}, layers={len(self.names)}"
        )
