"""Tests for lth.pruning: exact masks from hand-made scores, tie-breaking, prunable parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.criteria import compute_scores
from lth.errors import LthError
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import Prunable, layer_rates, prunable_parameters, prune


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bools(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# ------------------------------------------------------------------ layerwise


def test_layerwise_two_by_two():
    scores = {"w": torch.tensor([[0.5, 0.1], [0.3, 0.9]])}
    new = prune(scores, Mask.ones(scores), {"w": 0.5}, "layerwise", gen())
    assert torch.equal(new["w"], bools([[True, False], [False, True]]))


def test_layerwise_each_layer_by_its_own_rate():
    scores = {
        "a": torch.tensor([0.4, 0.2, 0.8, 0.6, 0.1]),
        "b": torch.tensor([[3.0, -1.0, 2.0], [0.5, 7.0, 4.0]]),
        "c": torch.tensor([9.0, 1.0]),
    }
    rates = {"a": 0.4, "b": 0.5, "c": 0.0}
    new = prune(scores, Mask.ones(scores), rates, "layerwise", gen())
    assert torch.equal(new["a"], bools([True, False, True, True, False]))  # 0.1 and 0.2 go
    assert torch.equal(new["b"], bools([[True, False, False], [False, True, True]]))  # -1, 0.5, 2 go
    assert torch.equal(new["c"], bools([True, True]))  # rate 0: untouched


def test_layerwise_prunes_only_among_kept_and_never_resurrects():
    # The already-pruned positions have by far the highest scores: they must stay pruned and
    # must not count towards the number removed.
    scores = {"w": torch.tensor([100.0, 1.0, 101.0, 5.0, 2.0, 102.0, 3.0, 4.0, 103.0, 6.0])}
    mask = Mask({"w": bools([False, True, False, True, True, False, True, True, False, True])})
    new = prune(scores, mask, {"w": 0.5}, "layerwise", gen())
    # 6 kept (scores 1, 5, 2, 3, 4, 6): round(0.5 * 6) = 3 go, the lowest: 1, 2, 3.
    expected = bools([False, False, False, True, False, False, False, True, False, True])
    assert torch.equal(new["w"], expected)
    assert int(new["w"].sum()) == 3
    # the input mask is not modified
    assert torch.equal(mask["w"], bools([False, True, False, True, True, False, True, True, False, True]))


@pytest.mark.parametrize("kept,rate,removed", [(10, 0.2, 2), (7, 0.2, 1), (9, 0.2, 2), (1000, 0.1, 100), (3, 0.1, 0)])
def test_layerwise_removes_round_rate_times_kept(kept, rate, removed):
    n = kept + 5
    scores = {"w": torch.randn(n, generator=gen(3))}
    mask = Mask({"w": torch.arange(n) < kept})
    new = prune(scores, mask, {"w": rate}, "layerwise", gen())
    assert int(new["w"].sum()) == kept - removed
    assert not bool((new["w"] & ~mask["w"]).any())
    # the removed ones are the lowest-scoring of the kept
    gone = scores["w"][mask["w"] & ~new["w"]]
    stay = scores["w"][new["w"]]
    if removed:
        assert gone.max() < stay.min()


def test_repeated_layerwise_pruning_counts():
    scores = {"w": torch.randn(1000, generator=gen(1))}
    mask = Mask.ones(scores)
    kept = []
    for _ in range(4):
        new = prune(scores, mask, {"w": 0.2}, "layerwise", gen())
        assert not bool((new["w"] & ~mask["w"]).any())
        mask = new
        kept.append(mask.kept())
    assert kept == [800, 640, 512, 410]  # 512 - round(102.4) = 410


def test_unknown_scope():
    scores = {"w": torch.ones(4)}
    with pytest.raises(LthError, match="scope"):
        prune(scores, Mask.ones(scores), {"w": 0.5}, "per-neuron", gen())


# ------------------------------------------------------------------ criteria


def ones(tensors):
    return {name: torch.ones_like(t, dtype=torch.bool) for name, t in tensors.items()}


def test_large_final_scores_are_absolute_final_values():
    w_init = {"w": torch.tensor([9.0, 9.0, 9.0])}
    w_final = {"w": torch.tensor([-2.0, 0.5, 0.0])}
    scores = compute_scores("large_final", w_init, w_final, ones(w_final), gen())
    assert torch.equal(scores["w"], torch.tensor([2.0, 0.5, 0.0]))


def test_random_scores_are_seeded():
    w = {"w": torch.zeros(50)}
    first = compute_scores("random", w, w, ones(w), gen(3))["w"]
    assert torch.equal(first, compute_scores("random", w, w, ones(w), gen(3))["w"])
    assert not torch.equal(first, compute_scores("random", w, w, ones(w), gen(4))["w"])
    assert bool(((first >= 0) & (first < 1)).all())


def test_unknown_criterion_lists_criteria():
    w = {"w": torch.zeros(2)}
    with pytest.raises(LthError, match="large_final"):
        compute_scores("biggest", w, w, ones(w), gen())


# ------------------------------------------------------------------ global


def test_global_one_threshold_over_all_tensors():
    scores = {
        "a": torch.tensor([0.1, 0.9, 0.5, 0.6]),
        "b": torch.tensor([[0.2, 0.3, 0.8], [0.05, 0.7, 0.4]]),
    }
    new = prune(scores, Mask.ones(scores), {"a": 0.5, "b": 0.5}, "global", gen())
    # 10 weights, 5 go: 0.05, 0.1, 0.2, 0.3, 0.4 -> 'a' loses 1 of 4, 'b' loses 4 of 6.
    assert torch.equal(new["a"], bools([False, True, True, True]))
    assert torch.equal(new["b"], bools([[False, False, True], [False, True, False]]))


def test_global_pools_only_kept_weights():
    scores = {
        "a": torch.tensor([0.0, 0.9, 0.5, 0.6]),
        "b": torch.tensor([0.2, 0.3, 0.8, -1.0, 0.7, 0.4]),
        "dense": torch.tensor([0.01, 0.02]),  # no rate: neither pruned nor part of the pool
    }
    mask = Mask(
        {
            "a": bools([False, True, True, True]),
            "b": bools([True, True, True, False, True, True]),
            "dense": bools([True, True]),
        }
    )
    new = prune(scores, mask, {"a": 0.25, "b": 0.25}, "global", gen())
    # kept pool: a 0.9 0.5 0.6 | b 0.2 0.3 0.8 0.7 0.4 -> 8 weights, round(0.25 * 8) = 2 go: 0.2, 0.3
    assert torch.equal(new["a"], bools([False, True, True, True]))
    assert torch.equal(new["b"], bools([False, False, True, False, True, True]))
    assert torch.equal(new["dense"], bools([True, True]))


def test_global_unequal_rates_raise():
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    with pytest.raises(LthError, match="one rate"):
        prune(scores, Mask.ones(scores), {"a": 0.2, "b": 0.1}, "global", gen())


def test_global_prunes_exact_count_with_mixed_shapes():
    scores = {"c": torch.randn(6, 3, 3, 3, generator=gen(4)), "f": torch.randn(50, 30, generator=gen(5))}
    new = prune(scores, Mask.ones(scores), {"c": 0.2, "f": 0.2}, "global", gen())
    total = 6 * 27 + 50 * 30
    assert new.kept() == total - round(0.2 * total)
    pooled_kept = torch.cat([scores[k][new[k]] for k in scores])
    pooled_gone = torch.cat([scores[k][~new[k]] for k in scores])
    assert pooled_gone.max() < pooled_kept.min()


# ------------------------------------------------------------------ ties


def test_all_equal_scores_prune_exactly_half():
    scores = {"w": torch.ones(10)}
    new = prune(scores, Mask.ones(scores), {"w": 0.5}, "layerwise", gen(0))
    assert int((~new["w"]).sum()) == 5


def test_tie_breaking_is_seeded():
    scores = {"w": torch.ones(10)}

    def mask_for(seed: int) -> torch.Tensor:
        return prune(scores, Mask.ones(scores), {"w": 0.5}, "layerwise", gen(seed))["w"]

    assert torch.equal(mask_for(0), mask_for(0))
    assert torch.equal(mask_for(7), mask_for(7))
    different = [seed for seed in range(1, 30) if not torch.equal(mask_for(seed), mask_for(0))]
    assert different, "every seed gave the same mask: tie-breaking ignores the generator"


def test_tie_breaking_is_uniformly_random_among_ties_only():
    # Position 0 is strictly lowest (always pruned), position 4 strictly highest (never);
    # exactly one of the tied positions 1..3 must go, each of them sometimes.
    scores = {"w": torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0])}
    counts = torch.zeros(5)
    for seed in range(120):
        new = prune(scores, Mask.ones(scores), {"w": 0.4}, "layerwise", gen(seed))["w"]
        assert int((~new).sum()) == 2
        counts += (~new).float()
    assert counts[0] == 120 and counts[4] == 0
    assert counts[1:4].sum() == 120
    assert bool((counts[1:4] >= 20).all()), counts  # ~40 each if uniform


def test_every_position_is_pruned_sometimes_under_full_ties():
    scores = {"w": torch.ones(10)}
    counts = torch.zeros(10)
    for seed in range(100):
        counts += (~prune(scores, Mask.ones(scores), {"w": 0.5}, "layerwise", gen(seed))["w"]).float()
    assert bool((counts > 0).all()) and bool((counts < 100).all()), counts
    assert counts.sum() == 500


def test_global_ties_are_seeded_and_exact():
    scores = {"a": torch.ones(4), "b": torch.ones(6)}
    masks = [prune(scores, Mask.ones(scores), {"a": 0.3, "b": 0.3}, "global", gen(s)) for s in range(20)]
    assert all(m.kept() == 7 for m in masks)
    assert len({tuple(torch.cat([m["a"], m["b"]]).tolist()) for m in masks}) > 1


# ------------------------------------------------------------------ prunable parameters


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, kernel_size=3)  # (2, 1, 3, 3), bias
        self.norm = nn.BatchNorm2d(2)
        self.flat = nn.Flatten()
        self.b = nn.Linear(8, 5, bias=False)

    def forward(self, x):
        return self.b(self.flat(self.norm(self.a(x))))


class Odd(nn.Module):
    """A custom model with unusual names: body.a (conv), body.b (fc, no bias), mid (fc), head (output)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.mid = nn.Linear(5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mid(self.body(x))))


def test_prunable_parameters_groups_and_order():
    found = prunable_parameters(Odd())
    assert list(found) == ["body.a.weight", "body.b.weight", "mid.weight", "head.weight"]
    assert {name: p.group for name, p in found.items()} == {
        "body.a.weight": "conv",
        "body.b.weight": "fc",
        "mid.weight": "fc",
        "head.weight": "output",
    }
    assert found["head.weight"] == Prunable("head.weight", "output")


def test_prunable_parameters_with_biases_excludes_batchnorm():
    found = prunable_parameters(Odd(), prune_biases=True)
    assert {name: p.group for name, p in found.items()} == {
        "body.a.weight": "conv",
        "body.a.bias": "conv",
        "body.b.weight": "fc",  # no bias on body.b
        "mid.weight": "fc",
        "mid.bias": "fc",
        "head.weight": "output",
        "head.bias": "output",
    }
    assert not any("norm" in name for name in found)


def test_prunable_parameters_ignore_by_module_and_by_parameter():
    found = prunable_parameters(Odd(), prune_biases=True, ignore=["body.a", "head.weight"])
    assert list(found) == ["body.b.weight", "mid.weight", "mid.bias", "head.bias"]
    found = prunable_parameters(Odd(), ignore=["mid"])
    assert list(found) == ["body.a.weight", "body.b.weight", "head.weight"]


def test_prunable_parameters_unknown_ignore_lists_layers():
    with pytest.raises(LthError) as info:
        prunable_parameters(Odd(), ignore=["fc9"])
    message = str(info.value)
    assert "'fc9'" in message
    for layer in ("body.a", "body.b", "mid", "head"):
        assert layer in message
    with pytest.raises(LthError, match="norm"):
        prunable_parameters(Odd(), ignore=["body.norm"])  # BN is not prunable


def test_prunable_parameters_names_match_model_parameters():
    model = Odd()
    params = dict(model.named_parameters())
    for name in prunable_parameters(model, prune_biases=True):
        assert name in params


def test_layer_rates_by_group():
    prunable = prunable_parameters(Odd(), prune_biases=True)
    rates = layer_rates(prunable, fc=0.2, conv=0.1, output=0.05)
    assert rates == {
        "body.a.weight": 0.1,
        "body.a.bias": 0.1,
        "body.b.weight": 0.2,
        "mid.weight": 0.2,
        "mid.bias": 0.2,
        "head.weight": 0.05,
        "head.bias": 0.05,
    }


def test_lenet5_groups():
    model = build_model("lenet-5", (1, 28, 28), 10, seed=0)
    groups = {name: p.group for name, p in prunable_parameters(model).items()}
    assert groups == {
        "conv1.weight": "conv",
        "conv2.weight": "conv",
        "fc1.weight": "fc",
        "fc2.weight": "fc",
        "fc3.weight": "output",
    }


# ------------------------------------------------------------------ acceptance


def test_acceptance_lenet_300_100_density_schedule():
    model = build_model("lenet-300-100", (1, 28, 28), 10, seed=0)
    prunable = prunable_parameters(model)
    assert list(prunable) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    params = dict(model.named_parameters())
    rates = layer_rates(prunable, fc=0.2, conv=0.1, output=0.1)
    mask = Mask.ones({name: params[name] for name in prunable})
    assert mask.size() == 266_200

    # expected kept counts per layer: each round removes round(rate * kept)
    expected = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    generator = torch.Generator().manual_seed(0)
    densities = {}
    for round_index in range(1, 16):
        w_final = {name: torch.randn(params[name].shape, generator=generator) for name in prunable}
        scores = compute_scores("large_final", w_final, w_final, mask, generator)
        new = prune(scores, mask, rates, "layerwise", generator)
        assert not any(bool((new[n] & ~mask[n]).any()) for n in new)  # never resurrected
        mask = new
        for name in expected:
            expected[name] -= round(rates[name] * expected[name])
            assert int(mask[name].sum()) == expected[name], (round_index, name)
        densities[round_index] = round(mask.density(), 4)
    assert mask.size() == 266_200
    assert {r: densities[r] for r in (3, 7, 9, 12, 15)} == {
        3: 0.5128,
        7: 0.2107,
        9: 0.1352,
        12: 0.0695,
        15: 0.0358,
    }
