"""Tests for lth.config: durations, recipe filling, validation and YAML files."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lth.config import TicketConfig, load_config_file, make_config, parse_duration
from lth.errors import LthError
from lth.models import MODELS

LENET = MODELS.get("lenet-300-100").recipe
RESNET = MODELS.get("resnet-20").recipe


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    "text,ipe,budget,expected",
    [
        ("500it", 100, None, 500),
        ("2ep", 100, None, 200),
        ("0.05", 100, 1000, 50),
        ("0", 100, None, 0),
        ("0it", 100, None, 0),
        ("0ep", 100, None, 0),
        (500, 7, None, 500),
        ("500", 7, None, 500),
        ("1", 7, 1000, 1),
        (" 20 it ", 7, None, 20),
        ("1.5ep", 10, None, 15),
        ("0.25", 18, 60, 15),
        ("0.5ep", 18, None, 9),
        ("80ep", 390, None, 31200),
    ],
)
def test_parse_duration(text, ipe, budget, expected):
    assert parse_duration(text, ipe, budget) == expected


@pytest.mark.parametrize("text", ["abc", "", "-5", "5 iterations", "2e3", "1.5it", "10min"])
def test_parse_duration_rejects(text):
    with pytest.raises(LthError):
        parse_duration(text, 100, 1000)


def test_fraction_needs_a_budget():
    with pytest.raises(LthError, match="budget"):
        parse_duration("0.05", 100)


def test_parse_duration_rejects_non_integer_bare_count():
    with pytest.raises(LthError):
        parse_duration("1.5", 100, 1000)


# ------------------------------------------------------------------ recipe filling


def test_with_recipe_fills_everything_unset():
    config = TicketConfig(model="lenet-300-100", dataset="digits").with_recipe(LENET)
    assert (config.optimizer, config.lr, config.batch_size) == ("adam", 1.2e-3, 60)
    assert (config.momentum, config.nesterov, config.weight_decay) == (0.0, False, 0.0)
    assert (config.milestones, config.gamma, config.warmup) == ([], 0.1, "0it")
    assert config.scope == "layerwise"
    assert (config.prune_rate_fc, config.prune_rate_conv, config.prune_rate_output) == (0.2, 0.1, 0.1)
    assert (config.iterations, config.epochs) == (50000, None)
    # untouched defaults
    assert (config.rounds, config.rewind, config.seed, config.criterion) == (15, "0", 0, "large_final")


def test_with_recipe_explicit_values_win():
    config = TicketConfig(
        model="lenet-300-100",
        dataset="digits",
        lr=0.01,
        batch_size=32,
        optimizer="sgd",
        momentum=0.5,
        prune_rate_fc=0.5,
        iterations=123,
        warmup="5it",
        milestones="10it,20it",
    ).with_recipe(LENET)
    assert (config.lr, config.batch_size, config.optimizer, config.momentum) == (0.01, 32, "sgd", 0.5)
    assert (config.prune_rate_fc, config.prune_rate_conv, config.prune_rate_output) == (0.5, 0.1, 0.1)
    assert (config.iterations, config.warmup, config.milestones) == (123, "5it", ["10it", "20it"])


def test_with_recipe_epoch_budget():
    config = TicketConfig(model="resnet-20", dataset="cifar10").with_recipe(RESNET)
    assert (config.iterations, config.epochs) == (None, 160.0)
    assert (config.scope, config.prune_rate, config.optimizer, config.momentum) == ("global", 0.2, "sgd", 0.9)
    assert (config.milestones, config.warmup) == (["80ep", "120ep"], "1ep")
    assert config.budget_iterations(390) == 62400
    explicit = TicketConfig(model="resnet-20", dataset="cifar10", iterations=10).with_recipe(RESNET)
    assert (explicit.iterations, explicit.epochs) == (10, None)


def test_prune_rate_alone_applies_to_all_groups():
    config = TicketConfig(model="lenet-300-100", dataset="digits", prune_rate=0.3).with_recipe(LENET)
    assert (config.prune_rate_fc, config.prune_rate_conv, config.prune_rate_output) == (0.3, 0.3, 0.3)
    assert config.prune_rate == 0.3


def test_prune_rate_fills_only_the_groups_without_their_own_rate():
    config = TicketConfig(model="conv-2", dataset="digits", prune_rate=0.3, prune_rate_fc=0.5)
    resolved = config.with_recipe(MODELS.get("conv-2").recipe)
    assert (resolved.prune_rate_fc, resolved.prune_rate_conv, resolved.prune_rate_output) == (0.5, 0.3, 0.3)


def test_group_rates_with_global_scope_are_refused():
    with pytest.raises(LthError, match="layerwise"):
        TicketConfig(model="lenet-300-100", dataset="digits", scope="global", prune_rate_fc=0.3).with_recipe(LENET)
    # resnet's recipe is global: a group rate without --scope is refused too
    with pytest.raises(LthError, match="layerwise"):
        TicketConfig(model="resnet-20", dataset="cifar10", prune_rate_conv=0.3).with_recipe(RESNET)
    # ... and accepted once the scope is layerwise
    config = TicketConfig(model="resnet-20", dataset="cifar10", scope="layerwise", prune_rate_conv=0.3)
    assert config.with_recipe(RESNET).prune_rate_conv == 0.3


def test_budget_iterations():
    assert TicketConfig(model="m", dataset="d", iterations=77).budget_iterations(18) == 77
    assert TicketConfig(model="m", dataset="d", epochs=2.5).budget_iterations(18) == 45
    assert TicketConfig(model="m", dataset="d", epochs=0.01).budget_iterations(18) == 1
    with pytest.raises(LthError, match="budget"):
        TicketConfig(model="m", dataset="d").budget_iterations(18)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "change,field",
    [
        ({"rounds": -1}, "rounds"),
        ({"prune_rate": 1.0}, "prune_rate"),
        ({"prune_rate_fc": -0.1}, "prune_rate_fc"),
        ({"iterations": 0}, "iterations"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_every": 0}, "eval_every"),
        ({"lr": 0.0}, "lr"),
        ({"epochs": -1.0}, "epochs"),
        ({"scope": "per-layer"}, "scope"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_make_config_rejects_bad_values(change, field):
    with pytest.raises(LthError) as info:
        make_config({"model": "m", "dataset": "d", **change})
    message = str(info.value)
    assert field in message and "\n" not in message


def test_make_config_rejects_iterations_and_epochs():
    with pytest.raises(LthError, match="either iterations or epochs"):
        make_config({"model": "m", "dataset": "d", "iterations": 10, "epochs": 1.0})


def test_make_config_unknown_key_lists_allowed_keys():
    with pytest.raises(LthError) as info:
        make_config({"model": "m", "dataset": "d", "learning_rate": 0.1})
    message = str(info.value)
    assert "'learning_rate'" in message and "lr" in message and "prune_rate_fc" in message


def test_comma_lists_and_string_rewind():
    config = TicketConfig(model="m", dataset="d", ignore_layers="fc1, fc3", milestones="80ep,120ep", rewind=0)
    assert config.ignore_layers == ["fc1", "fc3"]
    assert config.milestones == ["80ep", "120ep"]
    assert config.rewind == "0"


def test_assignment_is_validated():
    config = TicketConfig(model="m", dataset="d")
    with pytest.raises(ValidationError):
        config.rounds = -3


# ------------------------------------------------------------------ YAML files


def test_load_config_file_normalises_dashes(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("prune-rate-fc: 0.3\neval_every: 10\nmilestones: [10it, 20it]\n")
    assert load_config_file(path) == {"prune_rate_fc": 0.3, "eval_every": 10, "milestones": ["10it", "20it"]}


def test_load_config_file_empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config_file(path) == {}


def test_load_config_file_errors(tmp_path):
    with pytest.raises(LthError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1, 2\nseed: 3\n")
    with pytest.raises(LthError, match="not valid YAML"):
        load_config_file(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- rounds\n- seed\n")
    with pytest.raises(LthError, match="mapping"):
        load_config_file(listing)
