"""Tests for lth.actions: mask-1 values, mask-0 starting tensors, validation."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.actions import (
    MASK0_ACTIONS,
    MASK1_ACTIONS,
    MASK1_NAMES,
    LayerState,
    Mask1Options,
    mask1_values,
    round_start_values,
    validate_actions,
)
from lth.errors import LthError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def b(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


W_I = t([[1.0, -2.0], [3.0, -4.0]])
MASK = b([[True, False], [True, True]])


def state(w_init=W_I, mask=MASK, w_final=None, seed=0, fresh=None) -> LayerState:
    w_final = w_init if w_final is None else w_final
    return LayerState(w_init, w_final, mask, gen(seed), fresh)


def values(name: str, s: LayerState | None = None, **options) -> torch.Tensor:
    return mask1_values(name, state() if s is None else s, Mask1Options(**options))


def random_state(seed: int, n: int, keep: float) -> LayerState:
    """A layer of n nonzero, distinct initial values with about ``keep`` of them kept."""
    g = gen(seed)
    w_init = torch.randn(n, generator=g)
    w_final = torch.randn(n, generator=g)
    mask = torch.rand(n, generator=g) < keep
    mask[0] = True
    fresh_seed = seed + 1
    return LayerState(w_init, w_final, mask, gen(seed + 2), lambda: torch.randn(n, generator=gen(fresh_seed)))


# ------------------------------------------------------------------ mask-1, deterministic


def test_names():
    assert MASK1_ACTIONS.names() == [
        "rewind",
        "reinit",
        "random_reinit",
        "random_reshuffle",
        "constant",
        "jitter",
    ]
    assert MASK1_NAMES == MASK1_ACTIONS.names() + [
        "signed_reinit",
        "signed_reshuffle",
        "signed_constant",
        "rand_signed_constant",
    ]
    assert MASK0_ACTIONS.names() == ["zero", "freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all"]


def test_rewind():
    assert torch.equal(values("rewind"), t([[1.0, 0.0], [3.0, -4.0]]))


def test_rewind_rescale_multiplies_by_size_over_kept():
    mask = b([[True, False], [False, True]])  # 4 / 2 = 2
    assert torch.equal(values("rewind", state(mask=mask), rescale=True), t([[2.0, 0.0], [0.0, -8.0]]))
    assert torch.equal(values("rewind", rescale=True), t([[4 / 3, 0.0], [4.0, -16 / 3]]))


def test_reinit_uses_the_fresh_draw():
    s = state(fresh=lambda: t([[5.0, 6.0], [-7.0, 8.0]]))
    assert torch.equal(values("reinit", s), t([[5.0, 0.0], [-7.0, 8.0]]))


def test_signed_reinit_takes_the_sign_of_w_init():
    s = state(fresh=lambda: t([[-5.0, 6.0], [-7.0, 8.0]]))
    assert torch.equal(values("signed_reinit", s), t([[5.0, 0.0], [7.0, -8.0]]))
    assert torch.equal(values("reinit", s, keep_sign=True), t([[5.0, 0.0], [7.0, -8.0]]))


def test_reinit_without_initializer_is_an_error():
    with pytest.raises(LthError, match="mask-1 action 'reinit' needs the layer's initializer"):
        values("reinit")


def test_keep_sign_where_w_init_is_zero_keeps_the_value_sign():
    s = state(w_init=t([0.0, 0.0, -1.0]), mask=b([True, True, True]), fresh=lambda: t([-3.0, 2.0, 5.0]))
    assert torch.equal(values("signed_reinit", s), t([-3.0, 2.0, -5.0]))


def test_constant_given_value_with_random_signs():
    s = state(w_init=torch.ones(1000), mask=torch.ones(1000, dtype=torch.bool))
    out = values("constant", s, constant=0.5)
    assert bool((out.abs() == 0.5).all())
    assert 400 < int((out > 0).sum()) < 600


def test_constant_pruned_positions_are_zero():
    out = values("constant", constant=0.5)
    assert out[0, 1] == 0.0 and bool((out[MASK].abs() == 0.5).all())


def test_signed_constant_is_c_times_sign_of_w_init():
    # w_init = [1, -3, 1, -3]: mean -1, deviations +-2, population std exactly 2.
    s = state(w_init=t([1.0, -3.0, 1.0, -3.0]), mask=b([True, True, False, True]))
    assert torch.equal(values("signed_constant", s), t([2.0, -2.0, 0.0, -2.0]))
    assert torch.equal(values("constant", s, keep_sign=True, constant=0.5), t([0.5, -0.5, 0.0, -0.5]))
    assert torch.equal(values("signed_constant", s, rescale=True), t([8 / 3, -8 / 3, 0.0, -8 / 3]))


def test_rand_signed_constant_is_constant_without_keep_sign():
    s1, s2 = random_state(3, 50, 0.7), random_state(3, 50, 0.7)
    assert torch.equal(values("rand_signed_constant", s1), values("constant", s2))
    with pytest.raises(LthError, match="rand_signed_constant"):
        values("rand_signed_constant", s1, keep_sign=True)


def test_signed_reshuffle_has_kept_magnitudes_and_init_signs():
    s = state(w_init=t([1.0, -2.0, 3.0, -4.0, 9.0]), mask=b([True, True, True, True, False]))
    out = values("signed_reshuffle", s)
    assert sorted(out[:4].abs().tolist()) == [1.0, 2.0, 3.0, 4.0]
    assert torch.equal(torch.sign(out), t([1.0, -1.0, 1.0, -1.0, 0.0]))


def test_random_reinit_of_a_dense_layer_is_a_permutation():
    s = state(w_init=t([1.0, 2.0, 3.0, 4.0, 5.0]), mask=torch.ones(5, dtype=torch.bool))
    assert sorted(values("random_reinit", s).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_jitter_adds_gaussian_noise():
    n = 200_000
    s = state(w_init=torch.full((n,), 0.3), mask=torch.ones(n, dtype=torch.bool))
    noise = values("jitter", s, jitter_sd=0.1) - 0.3
    assert abs(float(noise.mean())) < 0.002  # 0.1 / sqrt(n) ~ 2.2e-4
    assert abs(float(noise.std()) - 0.1) < 0.002
    assert torch.equal(values("jitter", jitter_sd=0.0), t([[1.0, 0.0], [3.0, -4.0]]))


def test_jitter_default_sd_is_001():
    n = 100_000
    s = state(w_init=torch.zeros(n), mask=torch.ones(n, dtype=torch.bool))
    assert abs(float(values("jitter", s).std()) - 0.01) < 0.0005


# ------------------------------------------------------------------ mask-1, properties

SEEDS = st.integers(0, 2**31 - 3)
SIZES = st.integers(2, 80)  # one value has std 0: constant would be 0
KEEP = st.floats(0.05, 1.0)


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=SIZES, keep=KEEP, name=st.sampled_from(MASK1_NAMES), rescale=st.booleans())
def test_keep_sign_gives_every_action_the_sign_of_w_init(seed, n, keep, name, rescale):
    if name == "rand_signed_constant":
        return
    s = random_state(seed, n, keep)
    out = mask1_values(name, s, Mask1Options(keep_sign=True, rescale=rescale))
    kept = s.mask
    assert torch.equal(torch.sign(out[kept]), torch.sign(s.w_init[kept]))
    assert bool((out[~kept] == 0).all())


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=SIZES, keep=KEEP)
def test_random_reshuffle_keeps_the_multiset_of_kept_values(seed, n, keep):
    s = random_state(seed, n, keep)
    out = values("random_reshuffle", s)
    assert torch.equal(out[s.mask].sort().values, s.w_init[s.mask].sort().values)
    assert bool((out[~s.mask] == 0).all())


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=SIZES, keep=KEEP, repeats=st.integers(1, 3))
def test_random_reinit_draws_from_all_initial_values_without_replacement(seed, n, keep, repeats):
    s = random_state(seed, n, keep)
    s.w_init = s.w_init.repeat(repeats)[:n]  # some values occur more than once
    out = values("random_reinit", s)
    available, used = Counter(s.w_init.tolist()), Counter(out[s.mask].tolist())
    assert all(used[v] <= available[v] for v in used)
    assert bool((out[~s.mask] == 0).all())


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 80), keep=KEEP)
def test_constant_magnitude_is_the_layer_init_std(seed, n, keep):
    s = random_state(seed, n, keep)
    out = values("constant", s)
    w = s.w_init.double()
    std = math.sqrt(float(((w - w.mean()) ** 2).mean()))  # population std of all initial values
    expected = torch.full((int(s.mask.sum()),), std, dtype=torch.float64)
    assert torch.allclose(out[s.mask].abs().double(), expected, rtol=1e-6, atol=0)


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=SIZES, keep=KEEP, name=st.sampled_from(MASK1_NAMES), keep_sign=st.booleans())
def test_same_seed_same_values(seed, n, keep, name, keep_sign):
    if name == "rand_signed_constant":
        keep_sign = False
    options = Mask1Options(keep_sign=keep_sign)
    first = mask1_values(name, random_state(seed, n, keep), options)
    assert torch.equal(first, mask1_values(name, random_state(seed, n, keep), options))


@pytest.mark.parametrize("name", ["random_reinit", "random_reshuffle", "constant", "jitter"])
def test_different_seed_different_values(name):
    a = values(name, random_state(1, 100, 1.0))
    other = random_state(1, 100, 1.0)
    other.generator = gen(12345)
    assert not torch.equal(a, values(name, other))


# ------------------------------------------------------------------ mask-0

# |w_i| > |w_f| (moved toward zero) at positions 0 and 2; positions 0, 1 kept.
M0_I = t([1.0, -2.0, 3.0, -4.0])
M0_F = t([0.5, -3.0, 1.0, -5.0])
M0_MASK = b([True, True, False, False])


@pytest.mark.parametrize(
    ("mask0", "expected"),
    [
        ("zero", [1.0, -2.0, 0.0, 0.0]),
        ("freeze_init", [1.0, -2.0, 3.0, -4.0]),
        ("freeze_init_zero_mask", [1.0, -2.0, 0.0, -4.0]),
        ("freeze_init_zero_all", [0.0, -2.0, 0.0, -4.0]),
    ],
)
def test_mask0_with_rewind(mask0: str, expected: list[float]):
    s = state(w_init=M0_I, w_final=M0_F, mask=M0_MASK)
    assert torch.equal(round_start_values("rewind", mask0, s, Mask1Options()), t(expected))


@pytest.mark.parametrize(
    ("mask0", "expected"),
    [
        ("zero", [0.5, -0.5, 0.0, 0.0]),
        ("freeze_init", [0.5, -0.5, 3.0, -4.0]),
        ("freeze_init_zero_mask", [0.5, -0.5, 0.0, -4.0]),
        ("freeze_init_zero_all", [0.0, -0.5, 0.0, -4.0]),
    ],
)
def test_mask0_with_signed_constant(mask0: str, expected: list[float]):
    s = state(w_init=M0_I, w_final=M0_F, mask=M0_MASK)
    out = round_start_values("signed_constant", mask0, s, Mask1Options(constant=0.5))
    assert torch.equal(out, t(expected))


# ------------------------------------------------------------------ validation


def test_validate_accepts_every_known_pair():
    for mask1 in MASK1_NAMES:
        for mask0 in MASK0_ACTIONS.names():
            validate_actions(mask1, mask0, Mask1Options(constant=0.1, jitter_sd=0.0))


def test_unknown_mask1_lists_the_names():
    with pytest.raises(LthError, match="unknown mask-1 action 'rewound'.*rewind.*signed_constant"):
        validate_actions("rewound", "zero", Mask1Options())


def test_unknown_mask0_lists_the_names():
    with pytest.raises(LthError, match="unknown mask-0 action 'frozen'.*freeze_init_zero_all"):
        validate_actions("rewind", "frozen", Mask1Options())


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan")])
def test_constant_must_be_positive(c: float):
    with pytest.raises(LthError, match="constant must be > 0"):
        validate_actions("constant", "zero", Mask1Options(constant=c))


def test_jitter_sd_must_not_be_negative():
    with pytest.raises(LthError, match="jitter sd must be >= 0, got -0.1"):
        validate_actions("jitter", "zero", Mask1Options(jitter_sd=-0.1))
    with pytest.raises(LthError, match="jitter sd"):
        round_start_values("jitter", "zero", state(), Mask1Options(jitter_sd=-0.1))


def test_rand_signed_constant_with_keep_sign_is_rejected():
    with pytest.raises(LthError, match="rand_signed_constant"):
        validate_actions("rand_signed_constant", "zero", Mask1Options(keep_sign=True))
