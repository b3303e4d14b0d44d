"""Tests for lth.training: masked training, optimizer state, LR schedule, evaluation, early stopping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lth.training.trainer as trainer_module
from lth.errors import LthError
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import prunable_parameters
from lth.training import OptimizerSettings, RoundResult, Trainer, build_optimizer, evaluate, learning_rate
from lth.training.trainer import MaskEnforcer

ADAM_WD = OptimizerSettings("adam", lr=1e-2, weight_decay=1e-2)
SGD_NESTEROV_WD = OptimizerSettings("sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)


def lenet(seed: int = 0) -> nn.Module:
    return build_model("lenet-300-100", (1, 8, 8), 10, seed=seed)


def half_mask(model: nn.Module, seed: int = 0) -> Mask:
    """About half of every prunable weight pruned, at random positions."""
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return Mask(
        {name: torch.rand(params[name].shape, generator=generator) < 0.5 for name in prunable_parameters(model)}
    )


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def captured_optimizers(monkeypatch):
    """Every optimizer the Trainer builds, to inspect its state after training."""
    built: list[torch.optim.Optimizer] = []

    def capture(params, settings, params_without_decay=()):
        optimizer = build_optimizer(params, settings, params_without_decay)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(trainer_module, "build_optimizer", capture)
    return built


# ------------------------------------------------------------------ no resurrection


@pytest.mark.parametrize("settings", [ADAM_WD, SGD_NESTEROV_WD], ids=["adam-wd", "sgd-nesterov-wd"])
def test_pruned_weights_stay_exactly_zero(digits, captured_optimizers, settings):
    model = lenet()
    mask = half_mask(model)
    for name, m in mask.items():
        assert 0.45 < m.float().mean() < 0.55, name
    before = state(model)
    # the pruned positions start non-zero: the trainer itself must zero them
    assert all(bool((before[n][~m] != 0).all()) for n, m in mask.items())

    params = dict(model.named_parameters())
    steps_checked = []

    def check_zero(t, m):  # called after t steps, for every t
        for name, keep in mask.items():
            assert bool((params[name].detach()[~keep] == 0).all()), f"{name} after {t} steps"
        steps_checked.append(t)

    Trainer(digits, batch_size=32, optimizer=settings, seed=0, eval_every=10, progress=False).train(
        model, mask, 0, 30, capture=range(31), on_capture=check_zero
    )
    assert steps_checked == list(range(31))

    for name, m in mask.items():
        w = params[name].detach()
        assert bool((w[~m] == 0).all()), f"{name}: pruned weights came back"
        assert bool((w[m] != before[name][m]).all()), f"{name}: some kept weights did not train"
    # parameters outside the mask (biases) train freely
    assert not torch.equal(params["fc1.bias"].detach(), before["fc1.bias"])

    (optimizer,) = captured_optimizers
    for name, m in mask.items():
        st = optimizer.state[params[name]]
        buffers = ["exp_avg", "exp_avg_sq"] if settings.name == "adam" else ["momentum_buffer"]
        for key in buffers:
            assert bool((st[key][~m] == 0).all()), f"{name}: {key} built up at pruned positions"
            assert bool((st[key][m] != 0).any()), f"{name}: {key} is zero everywhere"


@pytest.mark.parametrize("settings", [ADAM_WD, SGD_NESTEROV_WD], ids=["adam-wd", "sgd-nesterov-wd"])
def test_mask_enforcer_keeps_optimizer_state_zero(settings):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    mask = Mask(
        {
            "0.weight": torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.5,
            "2.weight": torch.tensor([[True, False, True, True, False]] * 3),
        }
    )
    enforcer = MaskEnforcer(model, mask, settings.weight_decay)
    enforcer.zero_pruned()
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert bool((params[name].detach()[~m] == 0).all())
    masked = {id(p) for p in enforcer.params}
    optimizer = build_optimizer([p for p in model.parameters() if id(p) not in masked], settings, enforcer.params)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(12):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        enforcer.mask_grads()
        for name, m in mask.items():
            assert bool((params[name].grad[~m] == 0).all())
        optimizer.step()
        for name, m in mask.items():
            assert bool((params[name].detach()[~m] == 0).all())
            st = optimizer.state[params[name]]
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in st:
                    assert bool((st[key][~m] == 0).all()), key


def test_mask_enforcer_ignores_dense_masks():
    model = nn.Linear(3, 2)
    enforcer = MaskEnforcer(model, Mask({"weight": torch.ones(2, 3, dtype=torch.bool)}))
    assert enforcer.params == []
    assert MaskEnforcer(model, None).params == []


def test_training_without_mask_changes_all_weights(digits):
    model = lenet()
    before = state(model)
    Trainer(digits, 32, ADAM_WD, seed=0, eval_every=10, progress=False).train(model, None, 0, 5)
    assert not torch.equal(model.fc1.weight.detach(), before["fc1.weight"])


# ------------------------------------------------------------------ determinism and capture


def test_same_seed_same_run_bit_for_bit(digits):
    results = []
    for _ in range(2):
        model = lenet()
        result = Trainer(digits, 50, ADAM_WD, seed=3, eval_every=10, progress=False).train(
            model, half_mask(model), 0, 20
        )
        results.append((state(model), result.metrics))
    (s1, m1), (s2, m2) = results
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert m1 == m2
    model = lenet()
    Trainer(digits, 50, ADAM_WD, seed=4, eval_every=10, progress=False).train(model, half_mask(model), 0, 20)
    assert not torch.equal(state(model)["fc1.weight"], s1["fc1.weight"])  # data order follows the seed


def test_capture_sees_the_weights_after_t_steps(digits):
    trainer = Trainer(digits, 40, ADAM_WD, seed=0, eval_every=100, progress=False)
    seen: dict[int, dict[str, torch.Tensor]] = {}
    model = lenet()
    mask = half_mask(model)
    trainer.train(model, mask, 0, 12, capture=[0, 5, 12], on_capture=lambda t, m: seen.setdefault(t, state(m)))
    assert sorted(seen) == [0, 5, 12]
    assert all(torch.equal(seen[12][k], v) for k, v in state(model).items())
    # a separate 5-step run from the same start reaches exactly the captured point
    short = lenet()
    trainer.train(short, mask, 0, 5)
    assert all(torch.equal(seen[5][k], v) for k, v in state(short).items())
    # the capture at 0 already has the mask applied
    for name, m in mask.items():
        assert bool((seen[0][name][~m] == 0).all())


def test_evaluation_points_and_rows(digits):
    trainer = Trainer(digits, 40, ADAM_WD, seed=0, eval_every=10, progress=False)
    result = trainer.train(lenet(), None, 5, 27)
    iterations = {
        split: [r["iteration"] for r in result.metrics if r["split"] == split] for split in ("train", "val", "test")
    }
    assert iterations == {"train": [10, 20, 27], "val": [5, 10, 20, 27], "test": [5, 10, 20, 27]}
    for row in result.metrics:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["loss"] > 0


def test_first_evaluation_is_exact(digits):
    model = lenet()
    trainer = Trainer(digits, 40, ADAM_WD, seed=0, eval_every=10, progress=False)
    with torch.no_grad():
        logits = model(digits.val_x)
        loss = F.cross_entropy(logits, digits.val_y).item()
        acc = (logits.argmax(1) == digits.val_y).float().mean().item()
    result = trainer.train(model, None, 0, 1)
    first = result.metrics[0]
    assert (first["iteration"], first["split"]) == (0, "val")
    assert first["loss"] == pytest.approx(loss, rel=1e-6)
    assert first["accuracy"] == pytest.approx(acc, abs=1e-7)


# ------------------------------------------------------------------ learning rate


def test_learning_rate_warmup_is_linear():
    settings = OptimizerSettings("sgd", lr=0.1, warmup=4)
    lrs = [learning_rate(settings, t) for t in range(6)]
    expected = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(lrs, expected)), lrs


def test_learning_rate_milestones():
    settings = OptimizerSettings("sgd", lr=1.0, milestones=(20, 10), gamma=0.5)
    lrs = [learning_rate(settings, t) for t in range(25)]
    assert lrs[:10] == [1.0] * 10
    assert lrs[10:20] == [0.5] * 10  # the step at iteration 10 already uses the reduced rate
    assert lrs[20:] == [0.25] * 5


def test_learning_rate_warmup_and_milestone_combine():
    settings = OptimizerSettings("sgd", lr=1.0, milestones=(2,), gamma=0.5, warmup=4)
    assert [learning_rate(settings, t) for t in range(5)] == [0.25, 0.5, 0.375, 0.5, 0.5]


def test_learning_rate_gamma_tenth():
    settings = OptimizerSettings("sgd", lr=0.1, milestones=(3, 6), gamma=0.1)
    lrs = [learning_rate(settings, t) for t in (0, 2, 3, 5, 6, 100)]
    expected = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(lrs, expected)), lrs


def test_trainer_uses_the_schedule_at_every_step(digits, monkeypatch):
    settings = OptimizerSettings("sgd", lr=0.05, momentum=0.9, milestones=(7, 9), gamma=0.1, warmup=3)
    trainer = Trainer(digits, 40, settings, seed=0, eval_every=100, progress=False)
    used: list[float] = []
    original_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    trainer.train(lenet(), None, 1, 11)  # starting mid-schedule, as after rewinding
    assert used == [learning_rate(settings, t) for t in range(1, 11)]
    assert math.isclose(used[0], 0.05 * 2 / 3, rel_tol=1e-12)
    assert used[1:6] == [0.05] * 5
    assert all(math.isclose(a, 0.005, rel_tol=1e-12) for a in used[6:8])  # iterations 7, 8
    assert all(math.isclose(a, 0.0005, rel_tol=1e-12) for a in used[8:])  # iterations 9, 10


def test_build_optimizer_settings():
    params = [nn.Parameter(torch.zeros(2))]
    adam = build_optimizer(params, OptimizerSettings("adam", lr=0.3, weight_decay=0.01))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == 0.3 and adam.param_groups[0]["weight_decay"] == 0.01
    sgd = build_optimizer(params, SGD_NESTEROV_WD)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-2)
    with pytest.raises(LthError, match="momentum"):
        build_optimizer(params, OptimizerSettings("sgd", lr=0.1, nesterov=True))
    with pytest.raises(LthError, match="adam or sgd"):
        build_optimizer(params, OptimizerSettings("rmsprop", lr=0.1))


# ------------------------------------------------------------------ evaluation


def test_evaluate_exact_loss_and_accuracy():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -2.0], [1.0, 1.5], [0.5, 0.2], [0.0, 0.0], [4.0, 1.0]])
    y = torch.tensor([0, 1, 2, 0, 2, 1, 0])
    # predictions: 0, 1, 2, 1, 0, 0 (ties go to the first), 0 -> 4 of 7 right
    with torch.no_grad():
        expected_loss = F.cross_entropy(model(x), y).item()
    model.train()
    out = evaluate(model, x, y, batch_size=3)  # 3 + 3 + 1: the mean is over examples, not batches
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(expected_loss, rel=1e-6)
    assert out[1].item() == pytest.approx(4 / 7, abs=1e-7)
    assert model.training  # the mode is restored
    model.eval()
    evaluate(model, x, y)
    assert not model.training


def test_trainer_evaluate_uses_val_and_test(digits):
    model = lenet()
    (val_loss, val_acc), (test_loss, test_acc) = Trainer(digits, 40, ADAM_WD, seed=0, progress=False).evaluate(model)
    with torch.no_grad():
        for x, y, loss, acc in (
            (digits.val_x, digits.val_y, val_loss, val_acc),
            (digits.test_x, digits.test_y, test_loss, test_acc),
        ):
            logits = model(x)
            assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
            assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-7)


# ------------------------------------------------------------------ early stopping


def rows(iteration, val_loss, val_acc, test_loss, test_acc, train=True):
    out = []
    if train:
        out.append({"iteration": iteration, "split": "train", "loss": 0.001, "accuracy": 1.0})
    out += [
        {"iteration": iteration, "split": "val", "loss": val_loss, "accuracy": val_acc},
        {"iteration": iteration, "split": "test", "loss": test_loss, "accuracy": test_acc},
    ]
    return out


def test_round_result_early_stop_is_minimum_val_loss():
    result = RoundResult(
        metrics=[
            *rows(0, 2.3, 0.10, 2.3, 0.11, train=False),
            *rows(100, 0.40, 0.88, 0.45, 0.86),
            *rows(200, 0.30, 0.90, 0.35, 0.89),  # minimum validation loss
            *rows(300, 0.50, 0.93, 0.28, 0.92),  # best accuracies, but not the lowest val loss
            *rows(400, 0.45, 0.91, 0.40, 0.90),
        ]
    )
    result.summarise()
    assert result.early_stop_iteration == 200
    assert result.val_accuracy_at_early_stop == 0.90
    assert result.test_accuracy_at_early_stop == 0.89
    assert result.final_val_accuracy == 0.91
    assert result.final_test_accuracy == 0.90
    assert result.final_test_loss == 0.40


def test_round_result_tie_takes_earliest_iteration():
    result = RoundResult(
        metrics=[
            *rows(0, 1.0, 0.5, 1.0, 0.5, train=False),
            *rows(10, 0.2, 0.8, 0.3, 0.7),
            *rows(20, 0.2, 0.9, 0.3, 0.8),
        ]
    )
    result.summarise()
    assert result.early_stop_iteration == 10
    assert result.test_accuracy_at_early_stop == 0.7


@pytest.mark.parametrize("settings", [ADAM_WD, SGD_NESTEROV_WD], ids=["adam-wd", "sgd-nesterov-wd"])
def test_frozen_nonzero_pruned_weights_are_bit_identical_after_50_steps(digits, settings):
    """Mask-0 'freeze' semantics: pruned entries keep their (non-zero) start values exactly."""
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(5)
    mask = Mask(
        {
            name: torch.rand(params[name].shape, generator=generator) < 0.5
            for name in ("fc1.weight", "fc2.weight", "fc3.weight")
        }
    )
    before = {name: params[name].detach().clone() for name in mask}
    trainer = Trainer(digits, 32, settings, seed=0, eval_every=1000, progress=False)
    trainer.train(model, mask, 0, 50, zero_pruned=False)
    for name, m in mask.items():
        after = params[name].detach()
        assert torch.equal(after[~m], before[name][~m])  # frozen, bit for bit, weight decay and all
        assert bool((after[~m] != 0).any())  # and they really were non-zero
        assert bool((after[m] != before[name][m]).all())  # kept weights all trained
