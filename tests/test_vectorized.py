"""K networks trained side by side equal each network trained alone (to float rounding):
own initialisation, mask, frozen pruned values, data order and optimizer state."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torch import nn

from lth.data import DataBundle
from lth.errors import LthError
from lth.masks import Mask
from lth.models import build_model
from lth.training import OptimizerSettings, Trainer
from lth.training.lockstep import Lockstep
from lth.training.vectorized import VectorTrainer, check_vectorizable

SEEDS = [0, 1, 2]


def masks_for(models: list[nn.Module], seed: int = 5) -> list[Mask | None]:
    """Random masks (60% kept) on the weights of models 0 and 2; model 1 dense."""
    g = torch.Generator().manual_seed(seed)
    out: list[Mask | None] = []
    for i, model in enumerate(models):
        if i == 1:
            out.append(None)
            continue
        out.append(
            Mask(
                {n: torch.rand(p.shape, generator=g) < 0.6 for n, p in model.named_parameters() if n.endswith("weight")}
            )
        )
    return out


def alone_and_together(data: DataBundle, name: str, settings: OptimizerSettings, steps: int, zero_pruned: bool):
    models = [build_model(name, data.input_shape, data.num_classes, seed=s) for s in SEEDS]
    masks = masks_for(models)
    start_states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    alone = []
    for seed, state, mask in zip(SEEDS, start_states, masks):
        model = build_model(name, data.input_shape, data.num_classes, seed=seed)
        model.load_state_dict(state)
        result = Trainer(data, 30, settings, seed, 10, progress=False).train(
            model, mask, 0, steps, zero_pruned=zero_pruned
        )
        alone.append((result, model))
    together = VectorTrainer(data, 30, settings, SEEDS, 10, progress=False).train(
        models, masks, 0, steps, zero_pruned=zero_pruned
    )
    return alone, together, models, masks, start_states


@pytest.mark.parametrize("name, optimizer", [("lenet-300-100", "adam"), ("lenet-300-100", "sgd"), ("conv-2", "adam")])
def test_vectorised_equals_alone(digits, name, optimizer):
    data = digits
    if name == "conv-2":  # conv nets see images: digits as (1, 8, 8)
        data = dataclasses.replace(
            digits,
            train_x=digits.train_x.view(-1, 1, 8, 8),
            val_x=digits.val_x.view(-1, 1, 8, 8),
            test_x=digits.test_x.view(-1, 1, 8, 8),
            input_shape=(1, 8, 8),
        )
    settings = OptimizerSettings(
        name=optimizer,
        lr=1e-3 if optimizer == "adam" else 0.01,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        weight_decay=1e-4,
    )
    alone, together, models, masks, start = alone_and_together(data, name, settings, steps=60, zero_pruned=False)
    for (result, model), vector_result, vector_model, mask, state in zip(alone, together, models, masks, start):
        a, b = result.metrics, vector_result.metrics
        assert [(r["iteration"], r["split"]) for r in a] == [(r["iteration"], r["split"]) for r in b]
        # float rounding (batched products sum in another order) may flip one borderline image
        one_image = 1 / min(len(data.val_x), len(data.test_x)) + 1e-6  # (accuracies are float32 sums)
        assert max(abs(x["accuracy"] - y["accuracy"]) for x, y in zip(a, b)) <= one_image
        # and training amplifies rounding: close at first, then within a few percent (measured on one
        # CPU for conv-2: 0.02% at iteration 20, 2.5% at 60 for one of three networks, 0 for the others)
        drift = [(x["iteration"], abs(x["loss"] - y["loss"]) / x["loss"]) for x, y in zip(a, b)]
        assert max(d for t, d in drift if t <= 20) <= 1e-3 and max(d for _, d in drift) <= 5e-2
        assert result.early_stop_iteration == vector_result.early_stop_iteration
        for key, value in model.state_dict().items():  # float rounding, amplified by training: within 2%
            difference = float((vector_model.state_dict()[key] - value).norm())  # (or 1e-3 RMS: biases start at 0)
            assert difference <= 0.02 * float(value.norm()) + 1e-3 * value.numel() ** 0.5, key
        if mask is not None:  # mask-0 "freeze": pruned entries keep their non-zero start values exactly
            for key, m in mask.items():
                trained = vector_model.state_dict()[key]
                assert torch.equal(trained[~m], state[key][~m])
                assert bool((state[key][~m] != 0).all())
                assert not torch.equal(trained[m], state[key][m])


def test_zero_pruned_and_best_state(digits):
    settings = OptimizerSettings(name="adam", lr=1e-3)
    models = [build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=s) for s in SEEDS]
    masks = masks_for(models)
    captured: dict[tuple[int, int], dict] = {}
    results = VectorTrainer(digits, 30, settings, SEEDS, 10, progress=False).train(
        models, masks, 0, 40, capture=[20], on_capture=lambda k, t, s: captured.__setitem__((k, t), s), keep_best=True
    )
    for model, mask in zip(models, masks):
        for key, m in (mask or {}).items():
            assert bool((model.state_dict()[key][~m] == 0).all())
    assert set(captured) == {(0, 20), (1, 20), (2, 20)}
    for result in results:
        assert result.best_state is not None and result.early_stop_iteration in (0, 10, 20, 30, 40)


def test_batch_norm_models_are_refused(digits):
    with pytest.raises(LthError, match="without running batch statistics"):
        check_vectorizable(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    trainer = VectorTrainer(digits, 30, OptimizerSettings(name="adam", lr=1e-3), [0, 1], 10, progress=False)
    models = [
        build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
    ]
    with pytest.raises(LthError, match="one architecture"):
        trainer.train(models, [None, None], 0, 5)


def test_lockstep_results_do_not_depend_on_which_program_asks_first(digits):
    """Programs reach their trainings in any order (threads); each network's results must not
    depend on it, even with several threads splitting the batched products by position."""
    settings = OptimizerSettings(name="adam", lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def run(delays: list[float]) -> list[list[dict]]:
            lockstep = Lockstep(3, progress=False)
            factory = lockstep.trainer_factory()

            def program(i: int):
                def go():
                    time.sleep(delays[i])
                    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=i)
                    return factory(digits, 30, settings, i, 20).train(model, None, 0, 40)

                return go

            return [result.metrics for result in lockstep.run([program(i) for i in range(3)])]

        first = run([0.0, 0.1, 0.2])
        assert run([0.2, 0.1, 0.0]) == first  # bit for bit
    finally:
        torch.set_num_threads(threads)
