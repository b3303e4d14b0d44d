"""Learned supermasks (Zhou et al. bernoulli; Ramanujan et al. edge-popup): gradients, masks, training, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cli_helpers import cli, one_line_error
from lth.models import build_model
from lth.pruning import prunable_parameters
from lth.supermasks.learned import SupermaskNet, scale_factor
from lth.supermasks.train import run_supermask_training, train_supermask
from lth.training.evaluate import evaluate
from lth.training.optim import OptimizerSettings


def tiny_layer() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A 4 -> 3 float64 linear layer with known weights and bias, and a known batch."""
    layer = nn.Linear(4, 3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.25], [-0.75, 1.5, 0.1, -0.3], [1.2, 0.4, -0.6, 0.9]]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5], [-0.5, 0.3, 0.8, -1.2]], dtype=torch.float64)
    return layer, x, torch.tensor([2, 0])


def grad_wrt_effective_weight(layer: nn.Linear, w_eff: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w_eff = w_eff.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(F.linear(x, w_eff, layer.bias.detach()), y)
    return torch.autograd.grad(loss, w_eff)[0]


SCORES = torch.tensor([[0.3, -1.2, 0.8, 0.05], [-0.4, 2.0, -0.1, 0.6], [1.1, -0.7, 0.2, -1.5]], dtype=torch.float64)


def test_bernoulli_straight_through_gradient_is_analytic(monkeypatch):
    layer, x, y = tiny_layer()
    w = layer.weight.detach().clone()
    net = SupermaskNet(layer, "bernoulli", weights="init")
    assert net.names == ["weight"]
    with torch.no_grad():
        net.score("weight").copy_(SCORES)
    m = torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], dtype=torch.float64)
    monkeypatch.setattr(net, "_sample", lambda p, generator=None: m)
    net.train()
    logits = net(x)
    assert torch.equal(logits, F.linear(x, w * m, layer.bias))  # forward uses the sampled mask exactly
    F.cross_entropy(logits, y).backward()
    g = grad_wrt_effective_weight(layer, w * m, x, y)
    p = torch.sigmoid(SCORES)
    torch.testing.assert_close(net.score("weight").grad, g * w * p * (1 - p), rtol=1e-12, atol=1e-15)
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_edge_popup_straight_through_gradient_is_analytic():
    layer, x, y = tiny_layer()
    w = layer.weight.detach().clone()
    net = SupermaskNet(layer, "edge-popup", weights="init", keep=0.5)
    with torch.no_grad():
        net.score("weight").copy_(SCORES)
    # the 6 largest |s|: 2.0, 1.5, 1.2, 1.1, 0.8, 0.7
    m = (SCORES.abs() >= 0.7).double()
    assert int(m.sum()) == 6
    net.train()
    logits = net(x)
    assert torch.equal(logits, F.linear(x, w * m, layer.bias))
    F.cross_entropy(logits, y).backward()
    g = grad_wrt_effective_weight(layer, w * m, x, y)
    grad = net.score("weight").grad
    # straight-through to |s| (the mask is the identity of |s|), then through |.|: g * w * sign(s)
    torch.testing.assert_close(grad, g * w * torch.sign(SCORES), rtol=1e-12, atol=1e-15)
    positive = SCORES > 0
    torch.testing.assert_close(grad[positive], (g * w)[positive], rtol=1e-12, atol=1e-15)


def test_dynamic_scaling_factor_is_numel_over_kept(monkeypatch):
    layer, x, y = tiny_layer()
    layer = layer.float()
    x = x.float()
    w = layer.weight.detach().clone()
    net = SupermaskNet(layer, "bernoulli", weights="init", dynamic_scaling=True)
    m = torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 0], [1, 0, 0, 0]])  # 5 of 12
    assert torch.equal(scale_factor(m), torch.tensor(12 / 5))  # numel / sum(m), exactly (float32)
    assert scale_factor(torch.zeros(3, 4)).item() == 12.0  # guarded: no division by zero
    assert scale_factor(torch.ones(3, 4)).item() == 1.0
    monkeypatch.setattr(net, "_sample", lambda p, generator=None: m)
    net.train()
    expected = w * m * torch.tensor(12 / 5, dtype=torch.float32)
    assert torch.equal(net.effective_weights(net.masks("train"))["weight"], expected)
    assert torch.equal(net(x), F.linear(x, expected, layer.bias))


@pytest.mark.parametrize("model", ["lenet-300-100", "conv-2"])
def test_edge_popup_keeps_exactly_round_keep_numel(model):
    for keep in (0.5, 0.3, 0.07, 0.999, 1.0):
        net = SupermaskNet(build_model(model, (1, 8, 8), 10, seed=0), "edge-popup", keep=keep)
        assert net.names == list(prunable_parameters(net.model))
        for mode in ("train", "expected", "sample"):
            for name, m in net.masks(mode).items():
                assert int(m.sum()) == round(keep * m.numel()), (keep, mode, name)
                assert torch.all((m == 0) | (m == 1))
        mask = net.current_mask()
        for name, m in mask.items():
            assert m.dtype == torch.bool and int(m.sum()) == round(keep * m.numel())
            kept = net.score(name).detach().abs()[m]
            dropped = net.score(name).detach().abs()[~m]
            if dropped.numel() and kept.numel():
                assert kept.min() >= dropped.max()  # the kept ones have the largest |score|


def test_signed_weights():
    model = build_model("lenet-300-100", (1, 8, 8), 10, seed=0)
    w = model.fc1.weight.detach().clone()
    constant = SupermaskNet(build_model("lenet-300-100", (1, 8, 8), 10, seed=0), "bernoulli", weights="signed_constant")
    torch.testing.assert_close(constant.weight("fc1.weight"), torch.sign(w) * w.double().std(correction=0).float())
    kaiming = SupermaskNet(build_model("lenet-300-100", (1, 8, 8), 10, seed=0), "edge-popup")
    assert kaiming.weights_kind == "signed_kaiming_constant"
    torch.testing.assert_close(kaiming.weight("fc1.weight"), torch.sign(w) * (2 / 64) ** 0.5)
    assert kaiming.weight("fc2.weight").abs().unique().tolist() == pytest.approx([(2 / 300) ** 0.5])


@pytest.mark.parametrize("method", ["bernoulli", "edge-popup"])
def test_weights_never_change_only_scores(digits, method):
    net = SupermaskNet(build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0), method)
    assert {name for name, p in net.named_parameters() if p.requires_grad} == {f"scores.{k}" for k in net.scores}
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("scores.")}
    scores = {k: v.detach().clone() for k, v in net.scores.items()}
    lr = 100.0 if method == "bernoulli" else 0.1
    train_supermask(
        net, digits, OptimizerSettings("sgd", lr, 0.9), 64, 15, eval_every=10, progress=False, num_samples=2
    )
    after = net.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), k  # bit-identical
    assert all(not torch.equal(net.scores[k].detach(), s) for k, s in scores.items())


def test_all_ones_mask_equals_the_plain_model(digits):
    plain = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=3)
    reference = evaluate(plain, digits.test_x, digits.test_y)
    net = SupermaskNet(
        build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=3),
        "edge-popup",
        weights="init",
        keep=1.0,
    )
    assert torch.equal(evaluate(net, digits.test_x, digits.test_y), reference)
    result = train_supermask(net, digits, OptimizerSettings("sgd", 0.1, 0.9), 64, 2, eval_every=5, progress=False)
    start = [row for row in result.metrics if row["iteration"] == 0 and row["split"] == "test"][0]
    assert start["accuracy"] == reference[1].item() and start["loss"] == reference[0].item()
    assert result.density == 1.0


def test_bernoulli_training_learns_digits(digits):
    net = SupermaskNet(build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0), "bernoulli")
    result = train_supermask(
        net, digits, OptimizerSettings("sgd", 100.0, 0.9), 250, 300, eval_every=100, progress=False
    )
    print(
        f"bernoulli supermask on digits: expected {result.test_accuracy_expected:.4f}, "
        f"sampled {result.test_accuracy_sampled_mean:.4f} ± {result.test_accuracy_sampled_std:.4f}"
    )
    assert result.test_accuracy_expected > 0.5
    assert result.test_accuracy_sampled_mean > 0.5
    assert len(result.test_accuracy_sampled) == 10 and result.test_accuracy_sampled_std >= 0
    assert 0 < result.density < 1 and set(result.layers) == set(net.names)
    assert result.mask.density() == pytest.approx(result.density)
    assert [r["iteration"] for r in result.metrics if r["split"] == "test"] == [0, 100, 200, 300]


def test_same_seed_same_supermask(digits):
    def run() -> dict:
        net = SupermaskNet(
            build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=1), "bernoulli", seed=1
        )
        result = train_supermask(
            net, digits, OptimizerSettings("sgd", 100.0, 0.9), 100, 10, seed=1, eval_every=5, progress=False
        )
        return {"metrics": result.metrics, "sampled": result.test_accuracy_sampled, "mask": result.mask}

    a, b = run(), run()
    assert a["metrics"] == b["metrics"] and a["sampled"] == b["sampled"]
    assert all(torch.equal(a["mask"][k], b["mask"][k]) for k in a["mask"])


def test_edge_popup_conv2_saves_a_valid_mask(tmp_path):
    run = run_supermask_training(
        "conv-2",
        "digits",
        "edge-popup",
        iterations=20,
        eval_every=10,
        device="cpu",
        out=tmp_path / "run",
        progress=False,
    )
    path = tmp_path / "run" / "mask.pt"
    mask = torch.load(path, weights_only=True)
    shapes = {n: tuple(p.shape) for n, p in build_model("conv-2", (1, 8, 8), 10, seed=0).named_parameters()}
    assert list(mask) == [
        "features.0.weight",
        "features.2.weight",
        "classifier.0.weight",
        "classifier.2.weight",
        "classifier.4.weight",
    ]
    for name, m in mask.items():
        assert m.dtype == torch.bool and tuple(m.shape) == shapes[name]
        assert int(m.sum()) == round(0.5 * m.numel())
    assert run.result.density == 0.5 and run.config["weights"] == "signed_kaiming_constant"
    assert run.config["lr"] == 0.1 and run.config["batch_size"] == 128 and run.config["keep"] == 0.5


# ------------------------------------------------------------------ CLI


FAST = ["--iterations", "20", "--eval-every", "10", "--device", "cpu"]


def test_cli_train_json(capsys, offline_env):
    out = offline_env / "run"
    rc, stdout, err = cli(
        capsys, "supermask", "train", "lenet-300-100", "digits", "--dynamic-scaling", "--out", out, "--json", *FAST
    )
    assert rc == 0, err
    summary = json.loads(stdout)
    assert {
        "method",
        "test_accuracy_sampled_mean",
        "test_accuracy_sampled_std",
        "test_accuracy_expected",
        "density",
        "layers",
    } <= set(summary)
    assert summary["method"] == "bernoulli" and set(summary["layers"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert json.loads((out / "supermask_train.json").read_text())["density"] == summary["density"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["kind"] == "supermask-train" and config["dynamic_scaling"] is True
    assert (config["weights"], config["lr"], config["momentum"], config["batch_size"]) == ("init", 100.0, 0.9, 250)
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    assert (out / "metrics.csv").read_text().startswith("round,iteration,split,loss,accuracy")
    mask = torch.load(out / "mask.pt", weights_only=True)
    assert all(m.dtype == torch.bool for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values()) == summary["density"]


def test_cli_train_epochs_and_text(capsys, offline_env):
    out = offline_env / "run"
    rc, stdout, err = cli(
        capsys,
        "supermask",
        "train",
        "lenet-300-100",
        "digits",
        "--method",
        "edge-popup",
        "--epochs",
        "1",
        "--batch-size",
        "100",
        "--keep",
        "0.3",
        "--device",
        "cpu",
        "--out",
        out,
    )
    assert rc == 0, err
    assert "top-k mask" in stdout and "30.00% of the weights kept" in stdout and f"results in {out}/" in stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["iterations"] == 11 and config["keep"] == 0.3  # 1100 training examples / 100


@pytest.mark.parametrize(
    "flags,fragments",
    [
        (["--method", "magic"], ["'magic'", "bernoulli", "edge-popup"]),
        (["--weights", "ones"], ["'ones'", "init", "signed_constant", "signed_kaiming_constant"]),
        (["--method", "edge-popup", "--keep", "0"], ["keep", "(0, 1]"]),
        (["--method", "edge-popup", "--keep", "1.5"], ["keep", "(0, 1]"]),
        (["--keep", "0.5"], ["edge-popup"]),
        (["--method", "edge-popup", "--score-init", "1"], ["bernoulli"]),
        (["--iterations", "5", "--epochs", "1"], ["either"]),
        (["--iterations", "0"], ["iterations"]),
        (["--optimizer", "rmsprop"], ["'rmsprop'"]),
        (["--lr", "-1"], ["learning rate"]),
        (["--batch-size", "5000"], ["batch size 5000"]),
        (["--device", "tpu"], ["'tpu'"]),
    ],
)
def test_cli_bad_input_is_one_line(capsys, offline_env, flags, fragments):
    out = offline_env / "run"
    rc, stdout, err = cli(capsys, "supermask", "train", "lenet-300-100", "digits", "--out", out, *flags)
    line = one_line_error(rc, err)
    for fragment in fragments:
        assert fragment in line
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(
    "model,dataset,fragment",
    [
        ("lenet-301", "digits", "'lenet-301'"),
        ("lenet-300-100", "emnist", "'emnist'"),
    ],
)
def test_cli_unknown_model_or_dataset(capsys, offline_env, model, dataset, fragment):
    rc, _, err = cli(capsys, "supermask", "train", model, dataset, "--out", offline_env / "run")
    assert fragment in one_line_error(rc, err)
    assert not (offline_env / "run").exists()
