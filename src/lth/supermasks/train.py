"""Training a learned supermask: only the scores move, the weights never change.

Training is :class:`lth.training.Trainer` itself: a :class:`SupermaskNet`'s only trainable
parameters are its scores, so the trainer's optimizer, schedule, batches and metrics apply as
they are.

Evaluations (every ``eval_every`` iterations, at the start and at the end) use the
deterministic mask: the thresholded expected mask ``sigmoid(s) > 0.5`` (bernoulli) or the top-k
mask (edge-popup). The final report adds, for bernoulli, the test accuracy of
``num_samples`` (10) masks sampled from ``Bernoulli(sigmoid(s))`` with a generator seeded by
``seed`` (mean and sample standard deviation), and the learned mask's density.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from lth import jsonio
from lth.atomic import atomic_write_text
from lth.config import MAX_ITERATIONS, check_budget, check_seed
from lth.data import DataBundle
from lth.errors import LthError
from lth.masks import Mask
from lth.store import RunDir
from lth.store.ownership import created_and_locked
from lth.supermasks.learned import SupermaskNet, check_keep, check_method, check_weights
from lth.training import Trainer
from lth.training.evaluate import evaluate
from lth.training.optim import OptimizerSettings, check_settings


@dataclass
class SupermaskResult:
    """What :func:`train_supermask` reports (accuracies on the test split unless named ``val``)."""

    method: str
    iterations: int
    metrics: list[dict] = field(default_factory=list)  # rows: iteration, split, loss, accuracy
    test_accuracy_sampled: list[float] = field(default_factory=list)  # one per sampled mask (bernoulli)
    test_accuracy_sampled_mean: float | None = None  # None for edge-popup (its mask is deterministic)
    test_accuracy_sampled_std: float | None = None
    test_accuracy_expected: float = 0.0  # thresholded expected mask (bernoulli) / top-k mask (edge-popup)
    test_loss_expected: float = 0.0
    val_accuracy_expected: float = 0.0
    density: float = 0.0  # of ``mask``
    layers: dict[str, float] = field(default_factory=dict)
    mask: Mask = field(default_factory=Mask)  # the learned deterministic mask, on the CPU
    seconds: float = 0.0

    def summary(self) -> dict:
        """The JSON summary (``supermask_train.json``)."""
        return {
            "method": self.method,
            "test_accuracy_sampled_mean": self.test_accuracy_sampled_mean,
            "test_accuracy_sampled_std": self.test_accuracy_sampled_std,
            "test_accuracy_expected": self.test_accuracy_expected,
            "density": self.density,
            "layers": self.layers,
            "test_accuracy_sampled": self.test_accuracy_sampled,
            "test_loss_expected": self.test_loss_expected,
            "val_accuracy_expected": self.val_accuracy_expected,
            "iterations": self.iterations,
            "seconds": self.seconds,
        }


def evaluate_sampled(
    net: SupermaskNet, x: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """(count, 2) tensor of (loss, accuracy), each with one sampled mask over the whole split."""
    rows = []
    for _ in range(count):
        with net.fixed_mask(net.masks("sample", generator)):
            rows.append(evaluate(net, x, y))
    return torch.stack(rows)


def train_supermask(
    net: SupermaskNet,
    data: DataBundle,
    settings: OptimizerSettings,
    batch_size: int,
    iterations: int,
    seed: int = 0,
    eval_every: int = 100,
    progress: bool = True,
    num_samples: int = 10,
    description: str = "supermask",
) -> SupermaskResult:
    """Train ``net``'s scores for ``iterations`` steps on ``data``; see the module docstring.

    ``seed`` fixes the batch order and the evaluation samples (the training samples come from
    the net's own generator). ``net`` must already be on the data's device.
    """
    check_settings(settings)
    if iterations < 1:
        raise LthError(f"iterations {iterations} is invalid; it must be >= 1")
    if eval_every < 1:
        raise LthError(f"eval_every {eval_every} is invalid; it must be >= 1")
    started = time.perf_counter()
    trainer = Trainer(data, batch_size, settings, seed, eval_every, progress)
    device = data.train_x.device
    result = SupermaskResult(method=net.method, iterations=iterations)
    # Only the scores are trainable parameters; the masked weights are frozen buffers.
    result.metrics = trainer.train(net, None, 0, iterations, description=description).metrics
    net.eval()

    last = {row["split"]: row for row in result.metrics if row["iteration"] == iterations}
    result.test_accuracy_expected = last["test"]["accuracy"]
    result.test_loss_expected = last["test"]["loss"]
    result.val_accuracy_expected = last["val"]["accuracy"]
    mask = net.current_mask("expected")
    kept = torch.stack([m.sum() for m in mask.values()])
    if net.method == "bernoulli" and num_samples > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
        accuracies = evaluate_sampled(net, data.test_x, data.test_y, num_samples, generator)[:, 1]
        std = accuracies.std() if num_samples > 1 else torch.zeros((), dtype=accuracies.dtype, device=device)
        values = torch.cat([accuracies, accuracies.mean()[None], std[None], kept.to(accuracies)]).tolist()
        result.test_accuracy_sampled = values[:num_samples]
        result.test_accuracy_sampled_mean, result.test_accuracy_sampled_std = values[num_samples : num_samples + 2]
        counts = values[num_samples + 2 :]
    else:
        counts = kept.tolist()
    result.mask = mask.cpu()
    sizes = [m.numel() for m in mask.values()]
    result.layers = {name: c / n for name, c, n in zip(mask, counts, sizes)}
    result.density = sum(counts) / sum(sizes) if sizes else 1.0
    result.seconds = time.perf_counter() - started
    return result


# -- a whole run: defaults, validation, run directory --------------------------------------

DEFAULT_ITERATIONS = 2000  # ~9 epochs of MNIST at batch 250 (Zhou et al.'s batch size)
#: method -> (weights, SGD lr, batch size); momentum 0.9 for both (Zhou et al.; Ramanujan et al.).
METHOD_DEFAULTS: dict[str, tuple[str, float, int]] = {
    "bernoulli": ("init", 100.0, 250),
    "edge-popup": ("signed_kaiming_constant", 0.1, 128),
}
ADAM_LR = 1e-3
SUMMARY_FILE = "supermask_train.json"
MASK_FILE = "mask.pt"


@dataclass
class SupermaskRun:
    """A finished :func:`run_supermask_training`: its resolved config, result and run directory."""

    config: dict
    result: SupermaskResult
    run_dir: RunDir | None


def resolve_settings(
    method: str,
    weights: str | None = None,
    score_init: float | None = None,
    keep: float | None = None,
    optimizer: str = "sgd",
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    iterations: int | None = None,
    epochs: float | None = None,
    eval_every: int = 100,
) -> dict:
    """Fill in the method's defaults and reject impossible values (LthError), before any work."""
    check_method(method)
    default_weights, default_lr, default_batch = METHOD_DEFAULTS[method]
    weights = weights or default_weights
    check_weights(weights)
    if method == "edge-popup":
        keep = 0.5 if keep is None else keep
        check_keep(keep)
        if score_init not in (None, 0.0):
            raise LthError("--score-init applies to --method bernoulli only (edge-popup scores start Kaiming uniform)")
    elif keep is not None:
        raise LthError("--keep applies to --method edge-popup only")
    if not math.isfinite(score_init or 0.0):
        raise LthError(f"score init {score_init!r} is invalid; it must be a finite number")
    if optimizer not in ("sgd", "adam"):
        raise LthError(f"unknown optimizer {optimizer!r}; choose adam or sgd")
    if optimizer == "adam" and momentum is not None:
        raise LthError("--momentum applies to --optimizer sgd only")
    lr = (default_lr if optimizer == "sgd" else ADAM_LR) if lr is None else lr
    if not (math.isfinite(lr) and lr > 0):
        raise LthError(f"learning rate {lr!r} is invalid; it must be > 0")
    momentum = (0.9 if optimizer == "sgd" else 0.0) if momentum is None else momentum
    if not 0.0 <= momentum < 1.0:
        raise LthError(f"momentum {momentum!r} is invalid; it must be in [0, 1)")
    batch_size = default_batch if batch_size is None else batch_size
    if batch_size < 1:
        raise LthError(f"batch size {batch_size} is invalid; it must be >= 1")
    if iterations is not None and epochs is not None:
        raise LthError("give either --iterations or --epochs, not both")
    if iterations is not None and iterations < 1:
        raise LthError(f"iterations {iterations} is invalid; it must be >= 1")
    if iterations is not None and iterations > MAX_ITERATIONS:
        raise LthError(
            f"iterations {iterations} is invalid; it must be at most {MAX_ITERATIONS} (lth.config.MAX_ITERATIONS)"
        )
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise LthError(f"epochs {epochs!r} is invalid; it must be > 0")
    if eval_every < 1:
        raise LthError(f"eval every {eval_every} is invalid; it must be >= 1")
    if iterations is None and epochs is None:
        iterations = DEFAULT_ITERATIONS
    return {
        "method": method,
        "weights": weights,
        "score_init": float(score_init or 0.0),
        "keep": keep,
        "optimizer": optimizer,
        "lr": float(lr),
        "momentum": float(momentum),
        "batch_size": batch_size,
        "iterations": iterations,
        "epochs": epochs,
        "eval_every": eval_every,
    }


def run_supermask_training(
    model: str,
    dataset: str,
    method: str = "bernoulli",
    *,
    weights: str | None = None,
    score_init: float | None = None,
    dynamic_scaling: bool = False,
    keep: float | None = None,
    iterations: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    optimizer: str = "sgd",
    lr: float | None = None,
    momentum: float | None = None,
    seed: int = 0,
    eval_every: int = 100,
    device: str = "auto",
    data_dir: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SupermaskRun:
    """Learn a supermask of ``model`` (built with ``seed``) on ``dataset``; write a run directory
    to ``out`` (None: keep everything in memory).

    The run directory holds ``config.yaml`` (``kind: supermask-train``), ``status.json``,
    ``metrics.csv``, ``supermask_train.json`` (:meth:`SupermaskResult.summary`) and ``mask.pt``
    (the thresholded expected mask / the top-k mask, lth mask format).
    """
    from lth.data import DATASETS, load_dataset
    from lth.experiments import resolve_device
    from lth.models import MODELS, build_model

    check_seed(seed, "--seed")
    config = resolve_settings(
        method, weights, score_init, keep, optimizer, lr, momentum, batch_size, iterations, epochs, eval_every
    )
    MODELS.get(model)
    DATASETS.get(dataset)
    dev = resolve_device(device)
    data = load_dataset(dataset, data_dir=data_dir, device=dev)
    n = data.train_x.shape[0]
    if config["batch_size"] > n:
        raise LthError(
            f"batch size {config['batch_size']} is invalid; it must be between 1 and {n} "
            "(the number of training examples)"
        )
    if config["iterations"] is None:
        budget = max(1, int(round(config["epochs"] * (n // config["batch_size"]))))
        config["iterations"] = budget
        check_budget(budget, f"--epochs {config['epochs']:g}")
    net = SupermaskNet(
        build_model(model, data.input_shape, data.num_classes, seed=seed),
        method,
        config["weights"],
        score_init=config["score_init"],
        keep=config["keep"],
        dynamic_scaling=dynamic_scaling,
        seed=seed,
    ).to(dev)
    config = {
        "kind": "supermask-train",
        "model": model,
        "dataset": dataset,
        **config,
        "dynamic_scaling": dynamic_scaling,
        "seed": seed,
        "device": str(dev),
        "data_dir": data_dir,
    }
    run = None
    started = _now()
    with ExitStack() as held:  # the run directory's lock (one writer per run) while it is written
        if out is not None:
            run = held.enter_context(created_and_locked(out, lambda: RunDir.create(out, overwrite=overwrite)))
            run.write_config(config)
            run.write_status(status="running", started=started, device=str(dev))
        settings = OptimizerSettings(config["optimizer"], config["lr"], config["momentum"])
        result = train_supermask(
            net,
            data,
            settings,
            config["batch_size"],
            config["iterations"],
            seed=seed,
            eval_every=eval_every,
            progress=progress,
            description=f"supermask {method} {model} {dataset}",
        )
        if run is not None:
            run.write_metrics([{"round": 0, **row} for row in result.metrics])
            result.mask.save(run.path / MASK_FILE)
            atomic_write_text(run.path / SUMMARY_FILE, jsonio.dumps(result.summary(), indent=2) + "\n")
            run.write_status(status="complete", started=started, finished=_now(), device=str(dev))
    return SupermaskRun(config, result, run)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
