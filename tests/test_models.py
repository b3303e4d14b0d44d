"""Tests for lth.models: registry, recipes, initialisers, architectures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.errors import LthError
from lth.models import (
    INITIALIZERS,
    MODELS,
    ModelSpec,
    Recipe,
    build_model,
    initialize,
    register_model,
)

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)

ALL = [
    "lenet-300-100",
    "lenet-5",
    "conv-2",
    "conv-4",
    "conv-6",
    "vgg-11",
    "vgg-13",
    "vgg-16",
    "vgg-19",
    "resnet-20",
    "resnet-32",
    "resnet-56",
]


def natural_shape(name: str) -> tuple[int, int, int]:
    return MNIST if name.startswith("lenet") else CIFAR


def weight_count(model: nn.Module, kinds: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- registry


def test_all_models_registered() -> None:
    assert set(ALL) <= set(MODELS.names())
    for name in ALL:
        spec = MODELS.get(name)
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.family == name.split("-")[0]
        assert isinstance(spec.recipe, Recipe)


def test_unknown_model_lists_names() -> None:
    with pytest.raises(LthError, match="unknown model 'nope'.*lenet-300-100.*resnet-20"):
        build_model("nope", MNIST, 10, seed=0)


@pytest.mark.parametrize("name", ALL)
def test_output_shape_on_natural_input(name: str) -> None:
    shape = natural_shape(name)
    model = build_model(name, shape, 10, seed=0)
    assert model.training
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("name", ["lenet-300-100", "conv-2"])
def test_digits_shape(name: str) -> None:
    model = build_model(name, DIGITS, 10, seed=0)
    assert model(torch.randn(4, *DIGITS)).shape == (4, 10)


@pytest.mark.parametrize("name", ["lenet-5", "vgg-11"])
def test_model_that_does_not_fit(name: str) -> None:
    with pytest.raises(LthError) as info:
        build_model(name, DIGITS, 10, seed=0)
    message = str(info.value)
    assert repr(name) in message and "(1, 8, 8)" in message
    assert "does not fit" in message and "\n" not in message


@pytest.mark.parametrize("shape", [(1, 8), (0, 8, 8), (1, 8, 8, 8), "abc"])
def test_bad_input_shape(shape: object) -> None:
    with pytest.raises(LthError, match="lenet-300-100"):
        build_model("lenet-300-100", shape, 10, seed=0)  # type: ignore[arg-type]


def test_bad_num_classes() -> None:
    with pytest.raises(LthError, match="num_classes"):
        build_model("conv-2", CIFAR, 0, seed=0)


def test_dry_run_failure_becomes_lth_error() -> None:
    recipe = MODELS.get("lenet-300-100").recipe

    @register_model("_test-broken", "test", "ignores the input shape", recipe)
    def broken(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(5, num_classes))

    try:
        with pytest.raises(LthError, match=r"model '_test-broken' does not fit input shape \(1, 28, 28\)"):
            build_model("_test-broken", MNIST, 10, seed=0)
    finally:
        MODELS._entries.pop("_test-broken")


def test_last_linear_is_output_layer() -> None:
    for name in ALL:
        model = build_model(name, natural_shape(name), 7, seed=0)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert linears[-1].out_features == 7


# ---------------------------------------------------------------- parameter counts


def test_lenet_300_100_counts() -> None:
    model = build_model("lenet-300-100", MNIST, 10, seed=0)
    assert weight_count(model) == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert n_params(model) - weight_count(model) == 300 + 100 + 10
    assert [n for n, _ in model.named_parameters()][0] == "fc1.weight"


def test_lenet_5_counts() -> None:
    model = build_model("lenet-5", MNIST, 10, seed=0)
    expected = 1 * 6 * 25 + 6 * 16 * 25 + 16 * 5 * 5 * 120 + 120 * 84 + 84 * 10
    assert weight_count(model) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conv-2", 3 * 64 * 9 + 64 * 64 * 9 + 16 * 16 * 64 * 256 + 256 * 256 + 256 * 10),
        (
            "conv-4",
            3 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 128 * 128 * 9 + 8 * 8 * 128 * 256 + 256 * 256 + 256 * 10,
        ),
        (
            "conv-6",
            3 * 64 * 9
            + 64 * 64 * 9
            + 64 * 128 * 9
            + 128 * 128 * 9
            + 128 * 256 * 9
            + 256 * 256 * 9
            + 4 * 4 * 256 * 256
            + 256 * 256
            + 256 * 10,
        ),
    ],
)
def test_conv_weight_counts(name: str, expected: int) -> None:
    model = build_model(name, CIFAR, 10, seed=0)
    assert weight_count(model) == expected
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())


def resnet_params(depth: int, num_classes: int = 10) -> int:
    """Hand count: convs have no bias, each BN has 2 params per channel."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    in_c = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += in_c * width * 9 + 2 * width + width * width * 9 + 2 * width
            if in_c != width:
                total += in_c * width + 2 * width  # 1x1 projection + BN
            in_c = width
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("depth, approx", [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6)])
def test_resnet_counts(depth: int, approx: float) -> None:
    model = build_model(f"resnet-{depth}", CIFAR, 10, seed=0)
    assert n_params(model) == resnet_params(depth)
    assert abs(n_params(model) - approx) / approx < 0.03
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == depth - 1


def test_vgg_16_count() -> None:
    model = build_model("vgg-16", CIFAR, 10, seed=0)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs, in_c = 0, 3
    for w in widths:
        convs += in_c * w * 9 + 2 * w
        in_c = w
    assert n_params(model) == convs + 512 * 10 + 10
    assert abs(n_params(model) - 14.7e6) / 14.7e6 < 0.01
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13


@pytest.mark.parametrize("depth, convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_vgg_depths(depth: int, convs: int) -> None:
    model = MODELS.get(f"vgg-{depth}").build(CIFAR, 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


# ---------------------------------------------------------------- seeding / init


@pytest.mark.parametrize("name", ["lenet-300-100", "conv-2", "resnet-20"])
def test_same_seed_bit_identical(name: str) -> None:
    shape = natural_shape(name)
    a = build_model(name, shape, 10, seed=7)
    torch.manual_seed(123)  # global RNG state must not matter
    b = build_model(name, shape, 10, seed=7)
    c = build_model(name, shape, 10, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if k.endswith("weight"))


def test_build_does_not_touch_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model("conv-2", CIFAR, 10, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_glorot_std() -> None:
    layer = nn.Linear(784, 300)
    initialize(layer, "glorot_normal", generator_seed=0)
    expected = math.sqrt(2 / (784 + 300))
    assert abs(layer.weight.std().item() - expected) / expected < 0.02
    assert torch.all(layer.bias == 0)


def test_kaiming_std_uses_fan_in() -> None:
    conv = nn.Conv2d(64, 128, 3)
    initialize(conv, "kaiming_normal", generator_seed=0)
    expected = math.sqrt(2 / (64 * 9))
    assert abs(conv.weight.std().item() - expected) / expected < 0.02
    assert torch.all(conv.bias == 0)


def test_batchnorm_initialised_to_identity() -> None:
    model = build_model("resnet-20", CIFAR, 10, seed=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_initialize_seeded_is_pure() -> None:
    a, b = nn.Linear(20, 10), nn.Linear(20, 10)
    initialize(a, "kaiming_normal", generator_seed=3)
    torch.rand(5)
    initialize(b, "kaiming_normal", generator_seed=3)
    assert torch.equal(a.weight, b.weight)


def test_unknown_initializer() -> None:
    assert set(INITIALIZERS.names()) >= {"glorot_normal", "kaiming_normal"}
    with pytest.raises(LthError, match="unknown initializer 'orthogonal'"):
        initialize(nn.Linear(2, 2), "orthogonal")


# ---------------------------------------------------------------- recipes


def test_paper_recipes() -> None:
    r = MODELS.get("lenet-300-100").recipe
    assert (r.optimizer, r.lr, r.batch_size, r.budget) == ("adam", 1.2e-3, 60, "50000it")
    assert (r.scope, r.prune_rate_fc, r.prune_rate_output, r.initializer) == (
        "layerwise",
        0.2,
        0.1,
        "glorot_normal",
    )
    r = MODELS.get("lenet-5").recipe
    assert (r.prune_rate_conv, r.prune_rate_fc, r.prune_rate_output) == (0.1, 0.2, 0.1)
    expected = {"conv-2": (2e-4, "20000it", 0.1), "conv-4": (3e-4, "25000it", 0.1), "conv-6": (3e-4, "30000it", 0.15)}
    for name, (lr, budget, conv_rate) in expected.items():
        r = MODELS.get(name).recipe
        assert (r.optimizer, r.lr, r.batch_size, r.budget) == ("adam", lr, 60, budget)
        assert (r.prune_rate_conv, r.prune_rate_fc, r.prune_rate_output) == (conv_rate, 0.2, 0.1)
        assert r.initializer == "glorot_normal"
    for name, warmup in [("vgg-16", "10000it"), ("resnet-20", "1ep")]:
        r = MODELS.get(name).recipe
        assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.batch_size) == (
            "sgd",
            0.1,
            0.9,
            1e-4,
            128,
        )
        assert (r.budget, r.milestones, r.gamma, r.warmup) == ("160ep", ("80ep", "120ep"), 0.1, warmup)
        assert (r.scope, r.prune_rate, r.prune_rate_fc, r.prune_rate_conv, r.prune_rate_output) == (
            "global",
            0.2,
            0.2,
            0.2,
            0.2,
        )
        assert r.initializer == "kaiming_normal"


def test_recipe_as_dict_round_trip() -> None:
    r = MODELS.get("resnet-56").recipe
    d = r.as_dict()
    assert d["milestones"] == ["80ep", "120ep"] and d["initializer"] == "kaiming_normal"
    assert Recipe(**d) == r


@pytest.mark.parametrize(
    "change, word",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"scope": "local"}, "scope"),
        ({"initializer": "zeros"}, "initializer"),
        ({"budget": "10 epochs"}, "budget"),
        ({"milestones": ("80",)}, "milestone"),
        ({"prune_rate": 1.5}, "prune_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_recipe_validation(change: dict, word: str) -> None:
    base = dict(optimizer="adam", lr=1e-3, batch_size=10, budget="1ep", initializer="glorot_normal")
    with pytest.raises(LthError, match=word):
        Recipe(**{**base, **change})
