"""compute_mask on hand-made state dicts, agreement with torch.nn.utils.prune, and the torch_prune interop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as P

from lth.errors import LthError
from lth.mask_from_weights import compute_mask, prunable_names
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import prunable_parameters
from lth.torch_prune import apply_with_torch_prune, mask_from_torch_prune

T, F = True, False


def tiny_state(scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Two layers (6 + 4 weights, distinct magnitudes) plus a bias and a BatchNorm."""
    return {
        "a.weight": scale * torch.tensor([[0.1, -0.5, 0.3], [0.9, -0.2, 0.05]]),
        "a.bias": torch.tensor([0.7, -0.8]),
        "bn.weight": torch.tensor([1.0, 2.0]),
        "bn.bias": torch.tensor([0.0, 0.0]),
        "bn.running_mean": torch.zeros(2),
        "bn.num_batches_tracked": torch.tensor(3),
        "b.weight": scale * torch.tensor([[1.0, -0.01], [0.4, 0.6]]),
    }


def as_lists(mask: Mask) -> dict[str, list]:
    return {name: m.tolist() for name, m in mask.items()}


# ------------------------------------------------------------------ prunable_names


def test_prunable_names_hand_made():
    state = tiny_state()
    assert prunable_names(state) == ["a.weight", "b.weight"]
    assert prunable_names(state, prune_biases=True) == ["a.weight", "a.bias", "b.weight"]
    assert prunable_names({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, True) == ["weight", "bias"]


def test_prunable_names_lenet():
    state = build_model("lenet-300-100", (1, 28, 28), 10, seed=0).state_dict()
    assert prunable_names(state) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert prunable_names(state, prune_biases=True) == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc3.weight",
        "fc3.bias",
    ]


def test_prunable_names_resnet_excludes_batchnorm():
    model = build_model("resnet-20", (3, 32, 32), 10, seed=0)
    names = prunable_names(model.state_dict())
    assert "conv.weight" in names and "stage2.0.shortcut.0.weight" in names and "fc.weight" in names
    assert not any(".bn" in n or n.startswith("bn.") for n in names)
    assert names == list(prunable_parameters(model))  # same as what lth finds with the model


# ------------------------------------------------------------------ compute_mask, exact


def test_layerwise_exact():
    state = tiny_state()
    mask = compute_mask(state, state, keep=0.5)
    # a: drop the 3 smallest |w| (0.05, 0.1, 0.2); b: drop the 2 smallest (0.01, 0.4)
    assert as_lists(mask) == {"a.weight": [[F, T, T], [T, F, F]], "b.weight": [[T, F], [F, T]]}
    assert all(m.dtype == torch.bool for m in mask.values())


def test_global_exact():
    state = tiny_state()
    mask = compute_mask(state, state, keep=0.5, scope="global")
    # 10 weights, drop the 5 smallest overall: 0.01, 0.05, 0.1, 0.2, 0.3
    assert as_lists(mask) == {"a.weight": [[F, T, F], [T, F, F]], "b.weight": [[T, F], [T, T]]}


def test_uses_final_weights_not_init():
    init, final = tiny_state(), tiny_state()
    final["a.weight"] = torch.tensor([[6.0, 5.0, 4.0], [3.0, 2.0, 1.0]])
    mask = compute_mask(init, final, keep=0.5)
    assert mask["a.weight"].tolist() == [[T, T, T], [F, F, F]]


def test_prune_biases():
    state = tiny_state()
    mask = compute_mask(state, state, prune_rate=0.5, prune_biases=True)
    assert list(mask) == ["a.weight", "a.bias", "b.weight"]
    assert mask["a.bias"].tolist() == [F, T]  # |0.7| < |-0.8|


@pytest.mark.parametrize("keep", [0.1, 0.25, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_keep_equals_one_minus_prune_rate(keep, scope):
    g = torch.Generator().manual_seed(1)
    state = {"x.weight": torch.randn(7, 9, generator=g), "y.weight": torch.randn(4, 3, 2, 2, generator=g)}
    a = compute_mask(state, state, keep=keep, scope=scope)
    b = compute_mask(state, state, prune_rate=1 - keep, scope=scope)
    assert as_lists(a) == as_lists(b)


def test_prev_mask_semantics_exact():
    w = torch.arange(1, 11, dtype=torch.float32).reshape(2, 5) / 10  # |w| = 0.1 ... 1.0
    state = {"l.weight": w}
    prev = torch.zeros(10, dtype=torch.bool)
    prev[[0, 2, 4, 6, 8, 9]] = True  # keeps 6; index 7 (0.8) is large but pruned
    mask = compute_mask(state, state, keep=0.5, prev_mask={"l.weight": prev.reshape(2, 5)})
    kept = mask["l.weight"].flatten()
    assert int(kept.sum()) == 3
    assert kept.nonzero().flatten().tolist() == [6, 8, 9]  # the 3 largest among prev's kept
    assert not (kept & ~prev).any()  # nothing comes back


def test_prev_mask_fraction_of_remaining():
    g = torch.Generator().manual_seed(0)
    state = {"l.weight": torch.randn(10, 10, generator=g)}
    prev = compute_mask(state, state, keep=0.4)
    assert prev.kept() == 40
    mask = compute_mask(state, state, keep=0.5, prev_mask=prev)
    assert mask.kept() == 20 and mask.density() == pytest.approx(0.2)


def test_random_criterion_is_seeded():
    g = torch.Generator().manual_seed(0)
    state = {"l.weight": torch.randn(8, 8, generator=g)}
    a = compute_mask(state, state, "random", keep=0.5, seed=3)
    b = compute_mask(state, state, "random", keep=0.5, seed=3)
    c = compute_mask(state, state, "random", keep=0.5, seed=4)
    assert as_lists(a) == as_lists(b) and as_lists(a) != as_lists(c)
    assert a.kept() == 32


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(keep=0.0), "keep must be in (0, 1]"),
        (dict(keep=1.5), "keep must be in (0, 1]"),
        (dict(prune_rate=1.0), "prune_rate must be in [0, 1)"),
        (dict(prune_rate=-0.1), "prune_rate must be in [0, 1)"),
        (dict(), "neither"),
        (dict(keep=0.5, prune_rate=0.5), "not both"),
        (dict(keep=0.5, scope="per-layer"), "'per-layer'"),
        (dict(keep=0.5, criterion="largest"), "'largest'"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    state = tiny_state()
    with pytest.raises(LthError) as info:
        compute_mask(state, state, **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_mismatched_weights():
    init, final = tiny_state(), tiny_state()
    del final["b.weight"]
    with pytest.raises(LthError, match="'b.weight' is in the init weights but not in the final"):
        compute_mask(init, final, keep=0.5)
    final = tiny_state()
    final["a.weight"] = torch.zeros(3, 2)
    with pytest.raises(LthError, match=r"'a.weight' has shape \(2, 3\) in the init weights but \(3, 2\)"):
        compute_mask(init, final, keep=0.5)


def test_bad_prev_mask_and_no_prunable():
    state = tiny_state()
    with pytest.raises(LthError, match="'c.weight'"):
        compute_mask(state, state, keep=0.5, prev_mask={"c.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(LthError, match=r"\(2, 2\)"):
        compute_mask(state, state, keep=0.5, prev_mask={"a.weight": torch.ones(2, 2, dtype=torch.bool)})
    bn_only = {"bn.weight": torch.ones(4), "bn.bias": torch.zeros(4)}
    with pytest.raises(LthError, match="no prunable tensors"):
        compute_mask(bn_only, bn_only, keep=0.5)


# ------------------------------------------------------------------ acceptance: same masks as torch.nn.utils.prune


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_torch_float_amount_is_a_fraction_of_the_remaining_weights():
    """The torch semantics the acceptance tests rely on (checked, not assumed)."""
    layer = nn.Linear(10, 10)
    P.l1_unstructured(layer, "weight", amount=0.2)
    assert int(layer.weight_mask.sum()) == 80
    P.l1_unstructured(layer, "weight", amount=0.2)
    assert int(layer.weight_mask.sum()) == 64  # 20% of the remaining 80, not of all 100
    P.l1_unstructured(layer, "weight", amount=0.3)
    assert int(layer.weight_mask.sum()) == 45  # round(0.3 * 64) = 19 removed


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_large_final_matches_torch_prune_over_rounds(scope):
    g = torch.Generator().manual_seed(0)
    net = small_net()
    layers = [(net[0], "weight"), (net[2], "weight"), (net[4], "weight")]
    init = {k: torch.randn(v.shape, generator=g) for k, v in net.state_dict().items()}
    mask = None
    rate = 0.2
    expected_kept = {
        "layerwise": [(58, 102, 19), (46, 82, 15), (37, 66, 12), (30, 53, 10)],
        "global": [179, 143, 114, 91],
    }[scope]
    for r in range(4):
        final = {k: torch.randn(v.shape, generator=g) for k, v in init.items()}  # "training" = new weights
        mask = compute_mask(init, final, "large_final", prune_rate=rate, scope=scope, prev_mask=mask)
        with torch.no_grad():  # torch prunes on |w_final| among the entries it still keeps
            for module, _name in layers:
                key = {net[0]: "0", net[2]: "2", net[4]: "4"}[module] + ".weight"
                target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
                target.copy_(final[key])
            net(torch.zeros(1, 2, 4, 4))  # torch recomputes `weight` = weight_orig * weight_mask on forward
        if scope == "layerwise":
            for module, name in layers:
                P.l1_unstructured(module, name, amount=rate)
        else:
            P.global_unstructured(layers, pruning_method=P.L1Unstructured, amount=rate)
        theirs = mask_from_torch_prune(net)
        assert list(theirs) == ["0.weight", "2.weight", "4.weight"] == list(mask)
        for key in mask:
            assert torch.equal(mask[key], theirs[key]), (r, key)
        if scope == "layerwise":
            assert tuple(int(m.sum()) for m in mask.values()) == expected_kept[r]
        else:
            assert mask.kept() == expected_kept[r]


# ------------------------------------------------------------------ torch_prune interop


def lenet_and_mask() -> tuple[nn.Module, Mask]:
    model = build_model("lenet-300-100", (1, 28, 28), 10, seed=0)
    state = model.state_dict()
    final = build_model("lenet-300-100", (1, 28, 28), 10, seed=1).state_dict()
    return model, compute_mask(state, final, keep=0.3)


def test_round_trip_and_forward():
    model, mask = lenet_and_mask()
    reference = mask.apply_(copy.deepcopy(model))
    apply_with_torch_prune(model, mask)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key in ["fc1", "fc2", "fc3"]:
        assert f"{key}.weight_orig" in params and f"{key}.weight" not in params
        assert f"{key}.weight_mask" in buffers
        layer = getattr(model, key)
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    back = mask_from_torch_prune(model)
    assert list(back) == list(mask)
    assert all(torch.equal(back[k], mask[k]) and back[k].dtype == torch.bool for k in mask)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=0, rtol=0)
    assert not torch.equal(model.fc1.weight_orig, reference.fc1.weight)  # the originals are kept


def test_reads_back_torch_l1_unstructured():
    model = build_model("lenet-300-100", (1, 28, 28), 10, seed=0)
    P.l1_unstructured(model.fc1, "weight", amount=0.3)
    P.l1_unstructured(model.fc2, "weight", amount=0.5)
    mask = mask_from_torch_prune(model)
    assert list(mask) == ["fc1.weight", "fc2.weight"]
    assert mask.layer_density() == {"fc1.weight": 0.7, "fc2.weight": 0.5}
    assert mask.kept() == 164640 + 15000


def test_apply_on_already_pruned_combines():
    model = nn.Linear(4, 2)
    P.l1_unstructured(model, "weight", amount=0.5)
    first = model.weight_mask.bool().clone()
    extra = torch.ones(2, 4, dtype=torch.bool)
    extra[0, :] = False
    apply_with_torch_prune(model, {"weight": extra})
    assert torch.equal(mask_from_torch_prune(model)["weight"], first & extra)


def test_apply_errors_leave_model_untouched():
    model = build_model("lenet-300-100", (1, 28, 28), 10, seed=0)
    ok = torch.ones(300, 784, dtype=torch.bool)
    with pytest.raises(LthError, match="'fc9.weight'"):
        apply_with_torch_prune(model, {"fc1.weight": ok, "fc9.weight": ok})
    with pytest.raises(LthError, match="'fc1.running'"):
        apply_with_torch_prune(model, {"fc1.running": ok})
    with pytest.raises(LthError, match=r"'fc2.weight' has shape \(300, 784\), the parameter \(100, 300\)"):
        apply_with_torch_prune(model, {"fc1.weight": ok, "fc2.weight": ok})
    assert mask_from_torch_prune(model) == {}
    assert "fc1.weight" in dict(model.named_parameters())
