"""Tests for lth.criteria: exact scores worked out by hand, lilf/sisf keep sets, aliases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.criteria import (
    ALIASES,
    CRITERIA,
    CRITERION_NAMES,
    RANKED_CRITERIA,
    ScoreInputs,
    compute_scores,
)
from lth.errors import LthError
from lth.masks import Mask
from lth.pruning import prune


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# Signs of W_I: - + + - 0 ; signs of W_F: + - + - + ; same sign only at positions 2 and 3.
W_I = t([-2.0, 0.5, 1.0, -1.0, 0.0])
W_F = t([1.0, -1.5, 3.0, -0.25, 2.0])
G = t([0.5, -2.0, 1.0, 4.0, 3.0])


def score(name: str, w_i=W_I, w_f=W_F, mask=None, grad=None) -> torch.Tensor:
    mask = torch.ones_like(w_i, dtype=torch.bool) if mask is None else mask
    return CRITERIA.get(name)(ScoreInputs(w_i, w_f, mask, gen(), grad))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("large_final", [1.0, 1.5, 3.0, 0.25, 2.0]),
        ("small_final", [-1.0, -1.5, -3.0, -0.25, -2.0]),
        ("large_init", [2.0, 0.5, 1.0, 1.0, 0.0]),
        ("small_init", [-2.0, -0.5, -1.0, -1.0, 0.0]),
        ("magnitude_increase", [-1.0, 1.0, 2.0, -0.75, 2.0]),
        ("movement", [3.0, 2.0, 2.0, 0.75, 2.0]),
        ("large_final_same_sign", [0.0, 0.0, 3.0, 0.25, 0.0]),
        ("large_final_diff_sign", [1.0, 1.5, 0.0, 0.0, 2.0]),
        ("magnitude_increase_same_sign", [0.0, 0.0, 2.0, -0.75, 0.0]),
        ("magnitude_increase_diff_sign", [-1.0, 1.0, 0.0, 0.0, 2.0]),
    ],
)
def test_elementwise_criterion(name: str, expected: list[float]):
    assert torch.equal(score(name), t(expected))


def test_zero_init_agrees_in_sign_only_with_zero():
    w_i, w_f = t([0.0, 0.0]), t([0.0, -1.0])
    assert torch.equal(score("large_final_same_sign", w_i, w_f), t([0.0, 0.0]))
    assert torch.equal(score("large_final_diff_sign", w_i, w_f), t([0.0, 1.0]))


def test_snip_is_abs_init_times_grad():
    assert torch.equal(score("snip", grad=G), t([1.0, 1.0, 1.0, 4.0, 0.0]))


def test_grad_is_abs_grad():
    assert torch.equal(score("grad", grad=G), t([0.5, 2.0, 1.0, 4.0, 3.0]))


def test_gradient_criteria_through_compute_scores():
    ones = {"w": torch.ones(5, dtype=torch.bool)}
    scores = compute_scores("snip", {"w": W_I}, {"w": W_F}, ones, gen(), grads={"w": G})
    assert torch.equal(scores["w"], t([1.0, 1.0, 1.0, 4.0, 0.0]))


@pytest.mark.parametrize(
    "name, what",
    [
        ("snip", "a loss gradient"),
        ("grad", "a loss gradient"),
        ("grasp", "a Hessian-gradient product"),
        ("synflow", "the SynFlow gradient"),
    ],
)
def test_model_criteria_need_their_derivative(name: str, what: str):
    with pytest.raises(LthError, match=f"criterion '{name}' needs the model: {what}"):
        score(name)
    ones = {"w": torch.ones(5, dtype=torch.bool)}
    with pytest.raises(LthError, match="large_final"):
        compute_scores(name, {"w": W_I}, {"w": W_F}, ones, gen())


def test_grasp_and_synflow_from_their_derivatives():
    """grasp = w_i * Hg (the negated paper score: its highest -w*Hg go); synflow = |w_i| * dR/d|w|."""
    ones = {"w": torch.ones(5, dtype=torch.bool)}
    hg = {"w": t([2.0, -1.0, 0.5, 0.0, 3.0])}
    flow = {"w": t([1.0, 2.0, 3.0, 4.0, 5.0])}
    grasp = compute_scores("grasp", {"w": W_I}, {"w": W_F}, ones, gen(), derivatives={"hessian_grad": hg})
    assert torch.equal(grasp["w"], W_I * hg["w"])
    synflow = compute_scores("synflow", {"w": W_I}, {"w": W_F}, ones, gen(), derivatives={"flow_grad": flow})
    assert torch.equal(synflow["w"], W_I.abs() * flow["w"])


# ------------------------------------------------------------------ lilf / sisf

# |w_i| ranks: 0 3 5 2 4 1 ; |w_f| ranks: 4 3 0 5 2 1 ; min: 0 3 0 2 2 1 (over 5).
LILF_I = t([0.1, -0.5, 0.9, -0.3, 0.7, 0.2])
LILF_F = t([0.8, 0.6, -0.1, 0.9, -0.5, 0.2])


def test_lilf_scores_are_min_normalised_ranks():
    assert torch.equal(score("large_init_large_final", LILF_I, LILF_F), t([0.0, 0.6, 0.0, 0.4, 0.4, 0.2]))


def test_lilf_keeps_the_weights_on_top_of_both():
    scores = {"w": score("large_init_large_final", LILF_I, LILF_F)}
    kept = prune(scores, Mask.ones(scores), {"w": 0.5}, "layerwise", gen())["w"]
    # Positions 1, 3, 4 are the three in the top four (ranks >= 2) of both magnitudes.
    assert kept.tolist() == [False, True, False, True, True, False]


def test_sisf_keeps_the_weights_at_the_bottom_of_both():
    # reversed ranks: |w_i| 5 2 0 3 1 4 ; |w_f| 1 2 5 0 3 4 ; min 1 2 0 0 1 4 (over 5).
    s = score("small_init_small_final", LILF_I, LILF_F)
    assert torch.equal(s, t([0.2, 0.4, 0.0, 0.0, 0.2, 0.8]))
    kept = prune({"w": s}, Mask.ones({"w": s}), {"w": 4 / 6}, "layerwise", gen())["w"]
    assert kept.tolist() == [False, True, False, False, False, True]
    assert int(kept.sum()) == 2


def test_lilf_ranks_only_the_kept_entries():
    mask = torch.tensor([True, True, False, True])
    s = score("lilf", t([1.0, 2.0, 9.0, 3.0]), t([3.0, 1.0, 9.0, 2.0]), mask)
    # kept |w_i| ranks 0 1 - 2, |w_f| ranks 2 0 - 1 (over 2); pruned -> -1.
    assert torch.equal(s, t([0.0, 0.0, -1.0, 0.5]))


def test_lilf_ties_share_the_average_rank():
    s = score("lilf", t([1.0, -1.0, 2.0]), t([1.0, 2.0, 3.0]))
    # |w_i| ranks 0.5 0.5 2, |w_f| ranks 0 1 2 (over 2).
    assert torch.equal(s, t([0.0, 0.25, 1.0]))


def ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks of distinct values (test-side, by double argsort)."""
    return values.argsort().argsort()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    seed=st.integers(0, 2**31 - 1),
    pruned_fraction=st.floats(0.0, 0.5),
    target_fraction=st.floats(0.0, 1.0),
    small=st.booleans(),
)
def test_lilf_property_exact_count_and_one_percentile(n, seed, pruned_fraction, target_fraction, small):
    g = gen(seed)
    w_i, w_f = torch.randn(n, generator=g), torch.randn(n, generator=g)
    assert w_i.abs().unique().numel() == n and w_f.abs().unique().numel() == n  # no ties
    mask = torch.rand(n, generator=g) >= pruned_fraction
    mask[0] = True
    kept_before = int(mask.sum())
    target = int(round(target_fraction * kept_before))
    rate = (kept_before - target) / kept_before
    name = "small_init_small_final" if small else "large_init_large_final"
    scores = {"w": score(name, w_i, w_f, mask)}
    new = prune(scores, Mask({"w": mask}), {"w": rate}, "layerwise", gen(seed + 1))["w"]
    assert int(new.sum()) == target
    assert not bool((new & ~mask).any())
    if target == 0:
        return
    sign = -1.0 if small else 1.0
    r_i = ranks(sign * w_i[mask].abs())
    r_f = ranks(sign * w_f[mask].abs())
    kept = new[mask]
    threshold = int(torch.minimum(r_i, r_f)[kept].min())  # the percentile t, as a rank
    # every kept weight is at or above the t-th value of both magnitudes ...
    assert bool((r_i[kept] >= threshold).all()) and bool((r_f[kept] >= threshold).all())
    # ... and every weight strictly above it in both is kept, so t is one shared percentile.
    assert bool(kept[(r_i > threshold) & (r_f > threshold)].all())


# ------------------------------------------------------------------ names


def test_aliases_point_to_the_same_function():
    assert ALIASES == {
        "lf": "large_final",
        "lilf": "large_init_large_final",
        "mi": "magnitude_increase",
        "mov": "movement",
        "lfss": "large_final_same_sign",
    }
    for alias, target in ALIASES.items():
        assert CRITERIA.get(alias) is CRITERIA.get(target)


def test_name_lists():
    ranked = [
        "large_final",
        "small_final",
        "large_init",
        "small_init",
        "large_init_large_final",
        "small_init_small_final",
        "magnitude_increase",
        "movement",
        "large_final_same_sign",
        "large_final_diff_sign",
        "magnitude_increase_same_sign",
        "magnitude_increase_diff_sign",
    ]
    assert RANKED_CRITERIA == ranked
    assert sorted(CRITERION_NAMES) == sorted(ranked + ["random", "snip", "grad", "grasp", "synflow"])
    assert sorted(CRITERIA.names()) == sorted(CRITERION_NAMES + list(ALIASES))


def test_unknown_criterion_lists_the_names():
    with pytest.raises(LthError, match="unknown criterion 'biggest'.*large_init_large_final"):
        CRITERIA.get("biggest")
