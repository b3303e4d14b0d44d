"""Mask-1 and mask-0 actions: pure tensor functions giving the values a layer starts a round with.

A mask-1 action gives the value of each kept weight (SPEC 3); a mask-0 action decides what the
pruned weights hold (SPEC 4). The trainer freezes pruned entries at whatever value they start
with. All randomness comes from the seeded CPU generator in ``LayerState``; draws are made on
the CPU and moved to the layer's device, so results do not depend on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from lth.errors import LthError
from lth.registry import Registry


@dataclass
class LayerState:
    """What the actions of one parameter tensor may look at."""

    w_init: Tensor  # value at the rewind point (w_0 or w_k): the "initial values" of the layer
    w_final: Tensor  # value at the end of the round that produced the mask
    mask: Tensor  # bool, True = kept
    generator: torch.Generator  # seeded CPU generator; all randomness comes from it
    fresh: Callable[[], Tensor] | None = None  # a fresh draw from the layer's initializer (reinit)


def fresh_draw(fresh: Mapping[str, Tensor], name: str) -> Callable[[], Tensor]:
    """A :attr:`LayerState.fresh` callback for parameter ``name``: its value in the fresh state ``fresh``."""
    return lambda: fresh[name]


@dataclass(frozen=True)
class Mask1Options:
    """Modifiers of the mask-1 actions."""

    keep_sign: bool = False  # give every kept value the sign of w_init
    rescale: bool = False  # multiply kept values by layer size / kept count
    jitter_sd: float = 0.01  # sd of the noise added by ``jitter``
    constant: float | None = None  # ``constant`` magnitude; None = std of w_init (whole layer)


Mask1Action = Callable[[LayerState, Mask1Options], Tensor]
Mask0Action = Callable[[LayerState, Tensor], Tensor]
MASK1_ACTIONS: Registry[Mask1Action] = Registry("mask-1 action")
MASK0_ACTIONS: Registry[Mask0Action] = Registry("mask-0 action")

#: Named combinations: name -> (base action, keep_sign).
MASK1_COMBINATIONS: dict[str, tuple[str, bool]] = {
    "signed_reinit": ("reinit", True),
    "signed_reshuffle": ("random_reshuffle", True),
    "signed_constant": ("constant", True),
    "rand_signed_constant": ("constant", False),
}


def _kept_index(state: LayerState) -> Tensor:
    return state.mask.flatten().nonzero().squeeze(1)


def _on_kept(state: LayerState, values: Tensor) -> Tensor:
    """A tensor shaped like w_init holding ``values`` at the kept positions (in order), 0 elsewhere."""
    out = torch.zeros_like(state.w_init)
    out.view(-1)[_kept_index(state)] = values.to(out)
    return out


def _random_signs(state: LayerState) -> Tensor:
    signs = torch.randint(0, 2, state.w_init.shape, generator=state.generator) * 2 - 1
    return signs.to(state.w_init)


def init_std(w_init: Tensor) -> Tensor:
    """The population standard deviation of all the layer's initial values (``constant``'s c)."""
    return w_init.double().std(correction=0).to(w_init.dtype)


@MASK1_ACTIONS.register("rewind")
def rewind(state: LayerState, options: Mask1Options) -> Tensor:
    """The value at the rewind point (w_0 or w_k)."""
    return state.w_init.clone()


@MASK1_ACTIONS.register("reinit")
def reinit(state: LayerState, options: Mask1Options) -> Tensor:
    """A fresh draw from the layer's initializer."""
    if state.fresh is None:
        raise LthError(
            "mask-1 action 'reinit' needs the layer's initializer, and none was given; "
            "pass LayerState.fresh or choose rewind, random_reinit, random_reshuffle, constant or jitter"
        )
    return state.fresh().to(state.w_init).reshape(state.w_init.shape)


@MASK1_ACTIONS.register("random_reinit")
def random_reinit(state: LayerState, options: Mask1Options) -> Tensor:
    """A random permutation of ALL the layer's initial values (pruned positions included),
    placed on the kept positions: kept-count draws without replacement."""
    count = int(state.mask.sum())
    order = torch.randperm(state.w_init.numel(), generator=state.generator)[:count]
    return _on_kept(state, state.w_init.flatten()[order.to(state.w_init.device)])


@MASK1_ACTIONS.register("random_reshuffle")
def random_reshuffle(state: LayerState, options: Mask1Options) -> Tensor:
    """A random permutation of the kept weights' initial values among the kept positions."""
    kept = state.w_init.flatten()[_kept_index(state)]
    order = torch.randperm(kept.numel(), generator=state.generator)
    return _on_kept(state, kept[order.to(kept.device)])


@MASK1_ACTIONS.register("constant")
def constant(state: LayerState, options: Mask1Options) -> Tensor:
    """±c with a uniformly random sign; c = ``options.constant`` or ``init_std(w_init)``."""
    c = init_std(state.w_init) if options.constant is None else options.constant
    return _random_signs(state) * c


@MASK1_ACTIONS.register("jitter")
def jitter(state: LayerState, options: Mask1Options) -> Tensor:
    """w_init + N(0, jitter_sd²)."""
    noise = torch.randn(state.w_init.shape, generator=state.generator, dtype=torch.float64)
    return state.w_init + (noise * options.jitter_sd).to(state.w_init)


#: Every mask-1 name: the actions and the named combinations (for CLI choices and help).
MASK1_NAMES: list[str] = MASK1_ACTIONS.names() + list(MASK1_COMBINATIONS)


@MASK0_ACTIONS.register("zero")
def zero(state: LayerState, kept: Tensor) -> Tensor:
    """Pruned weights start (and stay) at 0."""
    return torch.where(state.mask, kept, torch.zeros_like(kept))


@MASK0_ACTIONS.register("freeze_init")
def freeze_init(state: LayerState, kept: Tensor) -> Tensor:
    """Pruned weights are frozen at their initial value w_i."""
    return torch.where(state.mask, kept, state.w_init)


def _shrunk(state: LayerState) -> Tensor:
    """Weights that moved toward zero: |w_i| > |w_f|."""
    return state.w_init.abs() > state.w_final.abs()


@MASK0_ACTIONS.register("freeze_init_zero_mask")
def freeze_init_zero_mask(state: LayerState, kept: Tensor) -> Tensor:
    """Pruned weights with |w_i| > |w_f| frozen at 0, the other pruned ones at w_i."""
    pruned = torch.where(_shrunk(state), torch.zeros_like(kept), state.w_init)
    return torch.where(state.mask, kept, pruned)


@MASK0_ACTIONS.register("freeze_init_zero_all")
def freeze_init_zero_all(state: LayerState, kept: Tensor) -> Tensor:
    """Every weight with |w_i| > |w_f| starts at 0 (kept ones then train from 0); the other
    pruned ones are frozen at w_i."""
    return torch.where(_shrunk(state), torch.zeros_like(kept), freeze_init(state, kept))


def _resolve(name: str, options: Mask1Options) -> tuple[str, bool]:
    """(base action, keep_sign) for a mask-1 name; LthError for unknown or contradictory ones."""
    if name not in MASK1_NAMES:
        raise LthError(f"unknown mask-1 action {name!r}; choose one of: {', '.join(MASK1_NAMES)}")
    base, keep_sign = MASK1_COMBINATIONS.get(name, (name, False))
    if name == "rand_signed_constant" and options.keep_sign:
        raise LthError(
            "mask-1 action 'rand_signed_constant' has random signs and cannot take keep_sign; "
            "use signed_constant, or rand_signed_constant without keep_sign"
        )
    return base, keep_sign or options.keep_sign


def _check_options(options: Mask1Options) -> None:
    if options.constant is not None and not options.constant > 0:
        raise LthError(f"constant must be > 0 (or unset for the layer's init std), got {options.constant}")
    if options.constant is not None and not math.isfinite(options.constant):
        raise LthError(f"constant must be a finite number (or unset for the layer's init std), got {options.constant}")
    if not options.jitter_sd >= 0:
        raise LthError(f"jitter sd must be >= 0, got {options.jitter_sd}")
    if not math.isfinite(options.jitter_sd):
        raise LthError(f"jitter sd must be a finite number, got {options.jitter_sd}")


def validate_actions(mask1: str, mask0: str, options: Mask1Options) -> None:
    """Raise LthError for an unknown action name or a bad option value."""
    _resolve(mask1, options)
    MASK0_ACTIONS.get(mask0)
    _check_options(options)


def mask1_values(name: str, state: LayerState, options: Mask1Options) -> Tensor:
    """The values the kept weights start the next round with (0 at pruned positions).

    ``keep_sign`` gives each value the sign of w_init (|value|·sign(w_i)); where w_init is
    exactly 0 the value keeps its own sign. ``rescale`` then multiplies by size / kept count.
    """
    base, keep_sign = _resolve(name, options)
    _check_options(options)
    values = MASK1_ACTIONS.get(base)(state, options)
    if keep_sign:
        values = torch.where(state.w_init != 0, values.abs() * torch.sign(state.w_init), values)
    if options.rescale:
        values = values * (state.mask.numel() / max(int(state.mask.sum()), 1))
    values = torch.where(state.mask, values, torch.zeros_like(values))
    if not bool(torch.isfinite(values).all()):  # once per layer and round: e.g. a huge constant, rescaled
        used = [
            f"constant={options.constant:g}" if base == "constant" and options.constant is not None else "",
            f"jitter_sd={options.jitter_sd:g}" if base == "jitter" else "",
            "rescale" if options.rescale else "",
        ]
        causes = ", ".join(u for u in used if u) or "the weights it starts from are not finite"
        raise LthError(f"mask-1 action {name!r} gives non-finite start weights ({causes}); use smaller values")
    return values


def round_start_values(mask1: str, mask0: str, state: LayerState, options: Mask1Options) -> Tensor:
    """The full tensor the layer starts the next round with: kept from ``mask1``, pruned from ``mask0``."""
    validate_actions(mask1, mask0, options)
    return MASK0_ACTIONS.get(mask0)(state, mask1_values(mask1, state, options))
