"""Speed options (bf16 autocast, torch.compile, channels-last): they do what they say, keep masks
exact, and are refused where they cannot apply."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cli_helpers import cli, one_line_error
from lth.config import TicketConfig
from lth.errors import LthError
from lth.experiments.study import vector_size
from lth.masks import Mask
from lth.models import build_model
from lth.training import Acceleration, OptimizerSettings, Trainer
from lth.training.lockstep import Lockstep
from lth.training.vectorized import VectorTrainer

ADAM = OptimizerSettings(name="adam", lr=1e-3)


def images(digits):
    """Digits as (1, 8, 8) images, for the conv nets."""
    return dataclasses.replace(
        digits,
        train_x=digits.train_x.view(-1, 1, 8, 8),
        val_x=digits.val_x.view(-1, 1, 8, 8),
        test_x=digits.test_x.view(-1, 1, 8, 8),
        input_shape=(1, 8, 8),
    )


def half_mask(model: nn.Module, seed: int = 3) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask(
        {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    )


def train(data, name: str, acceleration: Acceleration, steps: int = 60, mask: bool = True, hook=None):
    model = build_model(name, data.input_shape, data.num_classes, seed=0)
    m = half_mask(model) if mask else None
    if hook is not None:
        first = next(mod for mod in model.modules() if isinstance(mod, (nn.Linear, nn.Conv2d)))
        first.register_forward_hook(hook)
    result = Trainer(data, 30, ADAM, seed=0, eval_every=20, progress=False, acceleration=acceleration).train(
        model, m, 0, steps
    )
    return result, model, m


def assert_close_metrics(a, b, accuracy: float, loss: float) -> None:
    assert [(r["iteration"], r["split"]) for r in a.metrics] == [(r["iteration"], r["split"]) for r in b.metrics]
    assert max(abs(x["accuracy"] - y["accuracy"]) for x, y in zip(a.metrics, b.metrics)) <= accuracy
    assert max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a.metrics, b.metrics)) <= loss


def test_bf16_runs_the_forward_pass_in_bf16_and_keeps_fp32_weights_and_exact_masks(digits):
    seen: list[tuple[torch.dtype, bool]] = []
    hook = lambda module, inputs, output: seen.append((output.dtype, module.training))  # noqa: E731
    fp32, _, _ = train(digits, "lenet-300-100", Acceleration())
    bf16, model, mask = train(digits, "lenet-300-100", Acceleration(precision="bf16"), hook=hook)
    assert {dtype for dtype, _ in seen} == {torch.bfloat16}
    assert {training for _, training in seen} == {True, False}  # training steps and evaluations both
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, m in mask.items():
        assert int((model.state_dict()[name][~m] != 0).sum()) == 0
    assert fp32.metrics != bf16.metrics  # really another precision ...
    assert_close_metrics(fp32, bf16, accuracy=0.05, loss=0.1)  # ... that learns the same


def test_channels_last_uses_nhwc_and_equals_the_default_layout(digits):
    data = images(digits)
    layouts: list[tuple[bool, bool]] = []

    def hook(module, inputs, output):  # the second convolution sees 32 channels: the layout is visible
        if module.in_channels > 1:
            layouts.append((inputs[0].is_contiguous(memory_format=torch.channels_last), inputs[0].is_contiguous()))

    def train_watched(acceleration):
        model = build_model("conv-2", data.input_shape, data.num_classes, seed=0)
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.register_forward_hook(hook)
        mask = half_mask(model)
        result = Trainer(data, 30, ADAM, seed=0, eval_every=20, progress=False, acceleration=acceleration).train(
            model, mask, 0, 60
        )
        return result, model, mask

    plain, plain_model, _ = train_watched(Acceleration())
    assert layouts and set(layouts) == {(False, True)}
    layouts.clear()
    nhwc, model, mask = train_watched(Acceleration(channels_last=True))
    assert layouts and set(layouts) == {(True, False)}
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    # NHWC kernels sum in another order: over 60 Adam steps the metrics agree to 0.5% in loss, and
    # at most one borderline image of the 300 validation ones flips (seen on some CPUs)
    assert_close_metrics(plain, nhwc, accuracy=1 / 300 + 1e-9, loss=5e-3)
    for name, m in mask.items():
        assert int((model.state_dict()[name][~m] != 0).sum()) == 0
        # the same weights up to the drift of rounding over 60 Adam steps (a few single weights move
        # by an Adam step or two where a gradient's sign flips): within 2% as a whole (0.4% measured;
        # a wrong layout would differ by about 100%)
        a, b = model.state_dict()[name], plain_model.state_dict()[name]
        assert float((a - b).norm() / b.norm()) < 0.02


def test_channels_last_leaves_models_without_convolutions_alone(digits):
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
    before = [p.stride() for p in model.parameters()]
    Acceleration(channels_last=True).prepare(model)
    assert [p.stride() for p in model.parameters()] == before


def test_vectorised_training_refuses_bf16_and_lockstep_trains_it_alone(digits):
    bf16 = Acceleration(precision="bf16")
    with pytest.raises(LthError, match="vectorised training runs in fp32, not bf16"):
        VectorTrainer(digits, 30, ADAM, [0, 1], 10, progress=False, acceleration=bf16)
    alone = [train(digits, "lenet-300-100", bf16, steps=40, mask=False)[0] for _ in range(2)]
    lockstep = Lockstep(2, progress=False)
    factory = lockstep.trainer_factory()

    def program():
        model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
        return factory(digits, 30, ADAM, 0, 20, acceleration=bf16).train(model, None, 0, 40)

    together = lockstep.run([program, program])
    assert [r.metrics for r in together] == [r.metrics for r in alone]  # the lone bf16 code path, bit for bit


def test_precision_settings_are_checked(capsys):
    with pytest.raises(LthError, match="unknown precision 'fp16'; choose from fp32, bf16"):
        Acceleration(precision="fp16")
    base = {"model": "lenet-300-100", "dataset": "digits", "precision": "bf16"}
    assert vector_size("auto", [TicketConfig(**base)] * 4) == 1
    with pytest.raises(LthError, match="--precision bf16 trains networks one at a time"):
        vector_size(4, [TicketConfig(**base)] * 4)
    line = one_line_error(*cli(capsys, "find-ticket", "lenet-300-100", "digits", "--precision", "fp16")[::2])
    assert "'fp16'" in line and "fp32" in line and "bf16" in line
    line = one_line_error(
        *cli(capsys, "find-ticket", "lenet-300-100", "digits", "--precision", "bf16", "--vectorize", "4")[::2]
    )
    assert line == "lth: error: --precision bf16 trains networks one at a time; use --vectorize off or auto"


def test_find_ticket_records_and_resumes_with_the_speed_options(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "conv-2",
        "digits",
        "--rounds",
        "1",
        "--iterations",
        "40",
        "--eval-every",
        "20",
        "--channels-last",
        "--precision",
        "bf16",
        "--out",
        out,
        "-q",
    )
    assert rc == 0, err
    from lth.store import RunDir

    config = RunDir(out).config()
    assert (config["precision"], config["channels_last"], config["compile"]) == ("bf16", True, False)


@pytest.mark.slow
def test_compiled_training_equals_eager_and_compiles_once_per_model(digits):
    from torch._dynamo.utils import counters

    eager, eager_model, _ = train(digits, "lenet-300-100", Acceleration(), steps=40)
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
    mask = half_mask(model)
    trainer = Trainer(digits, 30, ADAM, seed=0, eval_every=20, progress=False, acceleration=Acceleration(compile=True))
    counters.clear()
    compiled = trainer.train(model, mask, 0, 40)
    frames = counters["stats"]["unique_graphs"]
    assert frames >= 1
    trainer.train(model, mask, 0, 10)  # a second round of the same model: no new compilation
    assert counters["stats"]["unique_graphs"] == frames
    assert_close_metrics(eager, compiled, accuracy=1e-4, loss=1e-3)
    for name, m in mask.items():
        assert int((model.state_dict()[name][~m] != 0).sum()) == 0
    assert set(model.state_dict()) == set(eager_model.state_dict())  # the compiled wrapper is not a submodule


@pytest.mark.slow
def test_compiled_vectorised_training_equals_eager(digits):
    settings = [0, 1]
    results = []
    for acceleration in (Acceleration(), Acceleration(compile=True)):
        models = [build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=s) for s in settings]
        trainer = VectorTrainer(digits, 30, ADAM, settings, 20, progress=False, acceleration=acceleration)
        results.append(trainer.train(models, [half_mask(m) for m in models], 0, 40))
    for eager, compiled in zip(*results):
        assert_close_metrics(eager, compiled, accuracy=1e-4, loss=1e-3)


def test_lottery_model_takes_the_speed_options(digits):
    from lth import LotteryModel, LotteryRobust

    net = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
    ticket = LotteryModel(net, digits, iterations=20, eval_every=10, progress=False, precision="bf16")
    assert ticket._trainer.acceleration == Acceleration(precision="bf16")
    ticket.train()
    with pytest.raises(LthError, match="unknown precision 'fp16'"):
        LotteryModel(net, digits, iterations=20, precision="fp16")
    with pytest.raises(LthError, match="compile must be True or False, got 'yes'"):
        LotteryModel(net, digits, iterations=20, compile="yes")
    with pytest.raises(LthError, match="precision bf16 trains networks one at a time"):
        LotteryRobust(net, digits, trials=2, iterations=20, progress=False, precision="bf16", vectorize=2).run(
            "iterative_pruning", rounds=1
        )
