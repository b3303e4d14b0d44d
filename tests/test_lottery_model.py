"""Tests for LotteryModel (any nn.Module, the user's own data) and lth.data.user_data.as_bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth import LotteryModel, LthError, Mask
from lth.data.user_data import as_bundle
from lth.experiments.lottery_model import ROW_KEYS, fresh_initialisation

FAST = dict(iterations=60, eval_every=20, device="cpu", progress=False)


class TinyMLP(nn.Module):
    """Unusual layer names on purpose: an ``encoder`` Sequential and a ``head_out`` layer."""

    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.head_out = nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_out(self.encoder(x))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MLP_NAMES = ("encoder.1.weight", "encoder.3.weight", "head_out.weight")
# Layerwise 20%: each round removes round(0.2 * kept) of every layer's kept weights.
# 2048 -> 2048 - round(409.6) = 1638 -> 1638 - round(327.6) = 1310
# 512 -> 512 - round(102.4) = 410 -> 410 - round(82.0) = 328
# 160 -> 160 - 32 = 128 -> 128 - round(25.6) = 102
MLP_KEPT = [
    {"encoder.1.weight": 2048, "encoder.3.weight": 512, "head_out.weight": 160},
    {"encoder.1.weight": 1638, "encoder.3.weight": 410, "head_out.weight": 128},
    {"encoder.1.weight": 1310, "encoder.3.weight": 328, "head_out.weight": 102},
]


def mlp(seed: int = 0, outputs: int = 10) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(outputs)


def cnn(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN()


def kept(mask: Mask) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in mask.items()}


def same_masks(a: Mask, b: Mask) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def timeless(frame):
    return frame.drop(columns=["seconds"])


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def mlp_run(digits):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.iterative_pruning(rounds=2, rate=0.2)
    return ticket


# ------------------------------------------------------------------ the ticket search


def test_iterative_pruning_exact_counts_and_summary(mlp_run):
    assert mlp_run.prunable == list(MLP_NAMES)
    masks = mlp_run.masks
    assert [kept(masks[r]) for r in range(3)] == MLP_KEPT
    assert kept(mlp_run.mask) == MLP_KEPT[2]
    for r in (1, 2):  # pruned weights never come back
        assert all(bool((masks[r][n] <= masks[r - 1][n]).all()) for n in MLP_NAMES)
    summary = mlp_run.summary()
    assert list(summary.columns) == list(ROW_KEYS)
    assert summary.shape == (3, len(ROW_KEYS))
    assert summary["round"].tolist() == [0, 1, 2]
    totals = [sum(k.values()) for k in MLP_KEPT]
    assert summary["kept_weights"].tolist() == totals
    assert summary["total_weights"].tolist() == [2720] * 3
    assert summary["weights_remaining"].tolist() == [t / 2720 for t in totals]
    for r, layers in enumerate(summary["layers"]):
        assert layers == {n: MLP_KEPT[r][n] / masks[r][n].numel() for n in MLP_NAMES}
    for column in ("val_accuracy_at_early_stop", "test_accuracy_at_early_stop", "final_test_accuracy"):
        assert summary[column].between(0.0, 1.0).all()
    assert (summary["final_test_accuracy"] > 0.2).all()  # it learned something in 60 iterations


def test_pruned_weights_are_exactly_zero_after_training(mlp_run):
    params = dict(mlp_run.model.named_parameters())
    for name, m in mlp_run.mask.items():
        assert bool((params[name].detach()[~m] == 0).all())
        assert int((params[name].detach()[m] != 0).sum()) == int(m.sum())


def test_metrics_hold_learning_curves(mlp_run):
    metrics = mlp_run.metrics()
    assert list(metrics.columns) == ["round", "iteration", "split", "loss", "accuracy"]
    assert sorted(set(metrics["round"])) == [0, 1, 2]
    test = metrics[(metrics["round"] == 1) & (metrics["split"] == "test")]
    assert test["iteration"].tolist() == [0, 20, 40, 60]


def test_user_module_is_not_modified(digits):
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ticket = LotteryModel(net, digits, **FAST)
    ticket.iterative_pruning(rounds=1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in ticket.initial_state.items())


def test_cnn_layerwise_and_global(digits):
    layerwise = LotteryModel(cnn(), digits, **FAST)
    layerwise.iterative_pruning(rounds=2, rate=0.2)
    assert layerwise.prunable == ["features.0.weight", "classifier.weight"]
    # conv 36 -> 36 - round(7.2) = 29 -> 29 - round(5.8) = 23; linear 2560 -> 2048 -> 1638
    assert [kept(m) for m in layerwise.masks.values()] == [
        {"features.0.weight": 36, "classifier.weight": 2560},
        {"features.0.weight": 29, "classifier.weight": 2048},
        {"features.0.weight": 23, "classifier.weight": 1638},
    ]
    glob = LotteryModel(cnn(), digits, **FAST)
    glob.iterative_pruning(rounds=2, rate=0.2, scope="global")
    # one threshold over all 2596 weights: 2596 - round(519.2) = 2077 -> 2077 - round(415.4) = 1662
    assert glob.summary()["kept_weights"].tolist() == [2596, 2077, 1662]


def test_rates_per_layer_and_group(digits):
    by_layer = LotteryModel(mlp(), digits, **FAST)
    by_layer.iterative_pruning(rounds=2, rates={"head_out": 0.1})
    by_group = LotteryModel(mlp(), digits, **FAST)
    by_group.iterative_pruning(rounds=2, rates={"output": 0.1})
    for ticket in (by_layer, by_group):
        # 160 -> 160 - 16 = 144 -> 144 - round(14.4) = 130; the others at 20%
        assert kept(ticket.mask) == {**MLP_KEPT[2], "head_out.weight": 130}
    assert same_masks(by_layer.mask, by_group.mask)


def test_prunable_override_prunes_only_those(digits):
    net = mlp()
    ticket = LotteryModel(net, digits, prunable=["encoder.3.weight", "head_out.bias"], **FAST)
    ticket.iterative_pruning(rounds=1)
    assert list(ticket.mask) == ["encoder.3.weight", "head_out.bias"]
    assert kept(ticket.mask) == {"encoder.3.weight": 410, "head_out.bias": 8}
    params = dict(ticket.model.named_parameters())
    assert int((params["encoder.1.weight"] == 0).sum()) == 0  # not pruned, trained freely
    assert int((params["head_out.bias"] == 0).sum()) == 2


def test_one_shot_keeps_the_fraction_of_each_layer(digits):
    ticket = LotteryModel(mlp(), digits, **FAST)
    summary = ticket.one_shot(keep=0.3)
    # round(0.3 * n) kept per layer: 614.4 -> 614, 153.6 -> 154, 48
    assert kept(ticket.mask) == {"encoder.1.weight": 614, "encoder.3.weight": 154, "head_out.weight": 48}
    assert summary["round"].tolist() == [0, 1]
    with pytest.raises(LthError, match="pruned weights never come back") as info:
        ticket.one_shot(keep=0.5)
    one_line(info)


def test_same_seed_same_results_other_seed_differs(digits, mlp_run):
    again = LotteryModel(mlp(), digits, **FAST)
    again.iterative_pruning(rounds=2, rate=0.2)
    assert timeless(again.summary()).equals(timeless(mlp_run.summary()))
    assert again.metrics().equals(mlp_run.metrics())
    assert all(same_masks(again.masks[r], mlp_run.masks[r]) for r in range(3))
    other = LotteryModel(mlp(), digits, **{**FAST, "seed": 1})
    other.iterative_pruning(rounds=1)
    assert not same_masks(other.masks[1], mlp_run.masks[1])


def test_step_by_step_equals_iterative_pruning(digits, mlp_run):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.train()
    for _ in range(2):
        ticket.prune("large_final", rate=0.2)
        ticket.reinit("rewind", "zero")
        ticket.train()
    assert timeless(ticket.summary()).equals(timeless(mlp_run.summary()))


def test_late_rewinding_restarts_from_iteration_k(digits):
    k = 10
    ticket = LotteryModel(mlp(), digits, rewind_iteration=k, **FAST)
    ticket.train()
    ticket.prune(rate=0.5)
    ticket.reinit(mask0="freeze_init")  # pruned weights frozen at their value at iteration k
    ticket.train()
    metrics = ticket.metrics()
    assert metrics[metrics["round"] == 1]["iteration"].min() == k
    reference = LotteryModel(mlp(), digits, **{**FAST, "iterations": k})
    reference.train()  # the same first k steps
    w_k = dict(reference.model.named_parameters())
    params = dict(ticket.model.named_parameters())
    for name, m in ticket.mask.items():
        assert torch.equal(params[name].detach()[~m], w_k[name].detach()[~m])


def test_mask_actions_and_criteria_run(digits):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.train()
    ticket.prune("snip", rate=0.5)
    ticket.reinit("signed_reinit")
    ticket.train()
    ticket.prune("large_final_same_sign", keep=0.2, scope="global")
    ticket.reinit("constant", "freeze_init_zero_all", rescale=True)
    row = ticket.train()
    assert row["round"] == 2 and row["kept_weights"] == round(0.2 * 2720)


def test_reinit_draws_fresh_weights_without_touching_the_global_rng(digits):
    net = mlp()
    state = torch.random.get_rng_state()
    fresh = fresh_initialisation(net, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(fresh.head_out.weight, net.head_out.weight)
    assert torch.equal(fresh_initialisation(net, seed=5).head_out.weight, fresh.head_out.weight)
    glorot = fresh_initialisation(net, seed=5, initializer="glorot_normal")
    assert float(glorot.head_out.bias.detach().abs().sum()) == 0.0  # lth's initialisers zero the biases


def test_budget_in_epochs(digits):
    ticket = LotteryModel(mlp(), digits, epochs=2, eval_every=10, device="cpu", progress=False)
    ticket.train()
    # digits: 1,100 training examples after the 300 held out, batch 60 -> 18 iterations per epoch
    assert ticket.metrics()["iteration"].max() == 36


def test_plots_return_figures(mlp_run):
    fig = mlp_run.plot_accuracy()
    assert fig.axes and fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].lines) == 2
    fig = mlp_run.plot_learning_curves()
    assert len(fig.axes[0].lines) == 3


# ------------------------------------------------------------------ save / load


def test_save_load_round_trip_and_further_rounds(digits, tmp_path):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.iterative_pruning(rounds=1)
    ticket.save(tmp_path / "exp")
    loaded = LotteryModel.load(tmp_path / "exp", TinyMLP())
    assert loaded.summary().equals(ticket.summary())
    assert loaded.metrics().equals(ticket.metrics())
    assert same_masks(loaded.mask, ticket.mask)
    assert all(same_masks(loaded.masks[r], ticket.masks[r]) for r in (0, 1))
    states = loaded.model.state_dict(), ticket.model.state_dict()
    assert list(states[0]) == list(states[1]) and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    with pytest.raises(LthError, match="needs data") as info:
        loaded.train()
    one_line(info)
    resumed = LotteryModel.load(tmp_path / "exp", TinyMLP(), digits)
    resumed.iterative_pruning(rounds=1)
    ticket.iterative_pruning(rounds=1)
    assert timeless(resumed.summary()).equals(timeless(ticket.summary()))
    assert same_masks(resumed.mask, ticket.mask)
    with pytest.raises(LthError, match="does not match the saved experiment"):
        LotteryModel.load(tmp_path / "exp", TinyCNN())
    with pytest.raises(LthError, match="not a saved LotteryModel"):
        LotteryModel.load(tmp_path / "nothing", TinyMLP())


def test_save_removes_only_its_own_stale_masks(digits, tmp_path):
    """Saving a 1-round experiment over its own 2-round save removes the gone round's mask; saving
    into a directory lth did not write keeps the files there, whatever their names."""
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.iterative_pruning(rounds=2)
    ticket.save(tmp_path / "exp")
    assert sorted(p.name for p in (tmp_path / "exp" / "masks").iterdir()) == [
        "current.pt",
        "round_00.pt",
        "round_01.pt",
        "round_02.pt",
    ]
    shorter = LotteryModel(mlp(), digits, **FAST)
    shorter.iterative_pruning(rounds=1)
    shorter.save(tmp_path / "exp")
    assert sorted(p.name for p in (tmp_path / "exp" / "masks").iterdir()) == [
        "current.pt",
        "round_00.pt",
        "round_01.pt",
    ]

    mine = tmp_path / "mine"
    (mine / "masks").mkdir(parents=True)
    (mine / "masks" / "round_07.pt").write_bytes(b"the user's file")
    shorter.save(mine)
    assert (mine / "masks" / "round_07.pt").read_bytes() == b"the user's file"


# ------------------------------------------------------------------ the user's data


def splits_of(d):
    return (d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)


def loaders_of(d, batch_size=128):
    return tuple(DataLoader(TensorDataset(x, y), batch_size=batch_size) for x, y in splits_of(d))


def test_tensors_and_loaders_give_the_same_experiment(digits, mlp_run):
    for data in (splits_of(digits), loaders_of(digits)):
        bundle = as_bundle(data, "cpu")
        assert torch.equal(bundle.train_x, digits.train_x) and torch.equal(bundle.test_y, digits.test_y)
        assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10 and not bundle.augment
    ticket = LotteryModel(mlp(), loaders_of(digits), **FAST)
    ticket.iterative_pruning(rounds=2)
    assert timeless(ticket.summary()).equals(timeless(mlp_run.summary()))


def test_validation_is_held_out_when_missing(digits):
    x, y = digits.train_x.flatten(1).numpy(), digits.train_y.numpy().astype(np.int32)[:, None]
    bundle = as_bundle(((x, y), (digits.test_x.flatten(1), digits.test_y)), "cpu")
    assert bundle.input_shape == (64,)
    assert (len(bundle.train_y), len(bundle.val_y)) == (990, 110)  # 10% of 1,100
    rows = torch.cat([bundle.train_x, bundle.val_x])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, torch.from_numpy(x).tolist()))
    assert bundle.train_y.dtype == torch.int64 and bundle.train_y.dim() == 1
    again = as_bundle(((x, y), (digits.test_x.flatten(1), digits.test_y)), "cpu", val_size=100)
    assert len(again.val_y) == 100
    loaded = as_bundle(
        (
            DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=64),
            [(digits.test_x.flatten(1), digits.test_y)],
        ),
        "cpu",
    )
    assert torch.equal(loaded.val_x, bundle.val_x)


def test_the_model_may_have_more_outputs_than_classes(digits):
    x = digits.train_x[:200]
    y = digits.train_y[:200] % 3
    ticket = LotteryModel(mlp(), ((x, y), (x[:50], y[:50])), **{**FAST, "batch_size": 20, "iterations": 20})
    assert ticket.data.num_classes == 3
    assert ticket.train()["round"] == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            ((torch.zeros(5, 3), torch.zeros(4, dtype=torch.long)), (torch.zeros(2, 3), torch.zeros(2))),
            "x_train has 5 examples but y_train has 4",
        ),
        (
            ((torch.zeros(5, 3), torch.tensor([0, 1, -1, 0, 1])), (torch.zeros(2, 3), torch.zeros(2))),
            "negative label -1",
        ),
        (
            ((torch.zeros(5, 3), torch.tensor([0.0, 1.5, 1, 0, 1])), (torch.zeros(2, 3), torch.zeros(2))),
            "non-integer labels",
        ),
        (((torch.zeros(5, 3), torch.zeros(5, 2)), (torch.zeros(2, 3), torch.zeros(2))), "not one-hot"),
        (((torch.zeros(5, 3), torch.zeros(5)), (torch.zeros(0, 3), torch.zeros(0))), "test split is empty"),
        (((torch.zeros(5, 3), torch.zeros(5)), (torch.zeros(2, 4), torch.zeros(2))), "different shapes"),
        ((torch.zeros(5, 3), torch.zeros(5)), "a test split is missing"),
        (torch.zeros(5, 3), "cannot use data of type Tensor"),
        ([(torch.zeros(5, 3), torch.zeros(5))] * 4, "with 4 elements"),
        (((torch.zeros(5, 3), torch.zeros(5)), torch.zeros(2, 3)), "each split must be an (x, y) pair"),
        (((torch.zeros(5, 3), torch.zeros(5)), [{"x": 1}]), "must yield (x, y) pairs"),
        (((torch.zeros(5, 3), torch.zeros(5)), []), "yielded no batches"),
        ("no-such-dataset", "unknown dataset 'no-such-dataset'"),
    ],
)
def test_bad_data_raises_one_clear_line(data, message):
    with pytest.raises(LthError) as info:
        as_bundle(data, "cpu")
    assert message in one_line(info)


def test_val_size_checks():
    data = ((torch.zeros(5, 3), torch.zeros(5)), (torch.zeros(2, 3), torch.zeros(2)))
    with pytest.raises(LthError, match="val_size 5 is invalid for 5 training examples"):
        as_bundle(data, "cpu", val_size=5)
    with pytest.raises(LthError, match="its own validation split"):
        as_bundle((data[0], data[0], data[1]), "cpu", val_size=2)


# ------------------------------------------------------------------ user mistakes


def test_labels_beyond_the_model_outputs(digits):
    y = digits.train_y.clone()
    y[:5] = 11
    with pytest.raises(LthError) as info:
        LotteryModel(mlp(), ((digits.train_x, y), (digits.test_x, digits.test_y)), **FAST)
    assert one_line(info) == "labels go up to 11 but the model outputs 10 classes; it needs at least 12 outputs"


def test_model_that_does_not_fit_the_inputs(digits):
    with pytest.raises(LthError, match=r"fails on a batch of the data's inputs shaped \(2, 1, 8, 8\)") as info:
        LotteryModel(nn.Linear(3, 10), digits, **FAST)
    one_line(info)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            dict(prunable=["encoder.9.weight"]),
            "unknown prunable parameter 'encoder.9.weight'; the model's parameters are: encoder.1.weight",
        ),
        (dict(ignore_layers=["decoder"]), "cannot ignore unknown layer 'decoder'"),
        (dict(prunable=["head_out.weight"], ignore_layers=["encoder.1"]), "not both"),
        (dict(iterations=10, epochs=1.0), "either iterations or epochs"),
        (dict(rewind_iteration=60), "rewind_iteration 60 is not before the end of training"),
        (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(batch_size=5000), "batch size 5000 is invalid"),
        (dict(initializer="uniform"), "unknown initializer 'uniform'"),
    ],
)
def test_bad_settings(digits, settings, message):
    with pytest.raises(LthError) as info:
        LotteryModel(mlp(), digits, **{**FAST, **settings})
    assert message in one_line(info)


def test_bad_calls(digits, mlp_run):
    ticket = LotteryModel(mlp(), digits, **FAST)
    with pytest.raises(LthError, match=r"prune\(\) needs a trained network") as info:
        ticket.prune()
    one_line(info)
    with pytest.raises(LthError, match=r"reinit\(\) needs the weights of a trained round"):
        ticket.reinit()
    with pytest.raises(LthError, match="give keep .* or rate/rates .*, not both") as info:
        ticket.prune(rate=0.2, keep=0.5)
    one_line(info)
    with pytest.raises(LthError, match="unknown criterion 'biggest'; choose one of: large_final") as info:
        ticket.prune("biggest")
    one_line(info)
    with pytest.raises(LthError, match="unknown criterion 'biggest'"):
        ticket.iterative_pruning(criterion="biggest")
    with pytest.raises(LthError, match="unknown scope 'local'"):
        ticket.iterative_pruning(scope="local")
    with pytest.raises(LthError, match="unknown mask-1 action 'rewound'"):
        ticket.iterative_pruning(mask1="rewound")
    with pytest.raises(LthError, match=r"prune rate for 'encoder.1.weight' must be a fraction in \[0, 1\), got 1.5"):
        ticket.iterative_pruning(rate=1.5)
    with pytest.raises(LthError, match="rates key 'decoder' is neither"):
        ticket.iterative_pruning(rates={"decoder": 0.1})
    with pytest.raises(LthError, match="global pruning needs one rate"):
        ticket.iterative_pruning(scope="global", rates={"output": 0.1})
    assert ticket.summary().empty  # nothing was trained by the refused calls
    with pytest.raises(LthError, match="model must be a torch.nn.Module"):
        LotteryModel("lenet", digits, **FAST)


class ScaledHead(nn.Module):
    """A parameter owned by a module without reset_parameters()."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyMLP()
        self.scale = nn.Parameter(torch.ones(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale


def test_reinit_needs_a_way_to_draw_fresh_weights(digits):
    ticket = LotteryModel(ScaledHead(), digits, prunable=["scale", "body.head_out.weight"], **FAST)
    ticket.train()
    ticket.prune(rate=0.5)
    with pytest.raises(LthError, match="parameter 'scale' belongs to the root module") as info:
        ticket.reinit("reinit")
    one_line(info)
    ticket.reinit("rewind")  # the others need no initialiser


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_random_layers_are_reproducible_and_leave_the_global_rng_alone(digits):
    torch.manual_seed(0)
    net = DropoutNet()
    runs = []
    for _ in range(2):
        torch.manual_seed(len(runs))  # a different global RNG state each time
        state = torch.random.get_rng_state()
        ticket = LotteryModel(net, digits, **FAST)
        ticket.iterative_pruning(rounds=1, criterion="snip")
        assert torch.equal(torch.random.get_rng_state(), state)
        runs.append(ticket)
    assert timeless(runs[0].summary()).equals(timeless(runs[1].summary()))
    assert same_masks(runs[0].mask, runs[1].mask)
