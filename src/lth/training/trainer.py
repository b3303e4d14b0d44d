"""The masked trainer: one training round of a model under a fixed mask.

It knows nothing of pruning rounds. Data stays on the device; batches come from the
random-access :class:`~lth.data.Batcher`. Pruned weights are frozen exactly: their gradients
are masked before each optimizer step and weight decay is applied to kept weights only (added
to the masked gradient), so their Adam moments and SGD momentum stay exactly 0, their update
is exactly 0, and they keep their starting value (0, or e.g. their initial value for the
``freeze_init`` mask-0 actions) bit for bit with Adam or SGD (tests check this).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lth.data import Batcher, DataBundle
from lth.errors import TrainingDiverged
from lth.masks import Mask
from lth.progress import progress_bar
from lth.training.acceleration import DEFAULT, Acceleration
from lth.training.evaluate import evaluate
from lth.training.optim import OptimizerSettings, build_optimizer, learning_rate


@dataclass
class RoundResult:
    """Metrics of one training run: rows of (iteration, split, loss, accuracy) and the headline numbers."""

    metrics: list[dict] = field(default_factory=list)
    early_stop_iteration: int = 0
    val_accuracy_at_early_stop: float = 0.0
    test_accuracy_at_early_stop: float = 0.0
    final_val_accuracy: float = 0.0
    final_test_accuracy: float = 0.0
    final_test_loss: float = 0.0
    best_state: dict | None = None  # state at the early-stopping evaluation, when asked for
    seconds: float = 0.0  # training time, summed over interruptions

    def row(self, round_index: int, mask: Mask, seconds: float | None = None) -> dict:
        """The per-round summary (as in ``rounds.json``) of this training under ``mask``."""
        return {
            "round": round_index,
            "weights_remaining": mask.density(),
            "kept_weights": mask.kept(),
            "total_weights": mask.size(),
            "layers": mask.layer_density(),
            "early_stop_iteration": self.early_stop_iteration,
            "val_accuracy_at_early_stop": self.val_accuracy_at_early_stop,
            "test_accuracy_at_early_stop": self.test_accuracy_at_early_stop,
            "final_val_accuracy": self.final_val_accuracy,
            "final_test_accuracy": self.final_test_accuracy,
            "final_test_loss": self.final_test_loss,
            "seconds": round(self.seconds if seconds is None else seconds, 3),
        }

    def summarise(self) -> None:
        val = [row for row in self.metrics if row["split"] == "val"]
        test = {row["iteration"]: row for row in self.metrics if row["split"] == "test"}
        best = min(val, key=lambda row: (row["loss"], row["iteration"]))
        self.early_stop_iteration = best["iteration"]
        self.val_accuracy_at_early_stop = best["accuracy"]
        self.test_accuracy_at_early_stop = test[best["iteration"]]["accuracy"]
        self.final_val_accuracy = val[-1]["accuracy"]
        self.final_test_accuracy = test[val[-1]["iteration"]]["accuracy"]
        self.final_test_loss = test[val[-1]["iteration"]]["loss"]


@dataclass
class TrainProgress:
    """Everything needed to continue an interrupted :meth:`Trainer.train` call bit for bit.

    ``as_dict``/``from_dict`` use plain containers and tensors only, so a checkpoint holding
    it loads with ``torch.load(..., weights_only=True)``.
    """

    iteration: int  # steps taken so far (the next step is at this iteration)
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    metrics: list[dict]
    running: torch.Tensor  # (loss sum, correct) since the last evaluation
    seen: int
    best_loss: float
    best_state: dict[str, torch.Tensor] | None
    seconds: float  # training time spent before the interruption

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainProgress:
        return cls(**values)

    def portable(self) -> dict[str, Any]:
        """The fields with every tensor moved to the CPU: what a checkpoint stores (see :meth:`restored`)."""
        return {
            **self.as_dict(),
            "model": _on(self.model, "cpu"),
            "best_state": _on(self.best_state, "cpu"),
            "running": self.running.detach().cpu(),
        }

    @classmethod
    def restored(cls, values: dict[str, Any], device: torch.device | str) -> TrainProgress:
        """The progress stored by :meth:`portable`, its tensors on ``device``."""
        return cls.from_dict(
            {
                **values,
                "model": _on(values["model"], device),
                "best_state": _on(values.get("best_state"), device),
                "running": values["running"].to(device),
            }
        )


def _on(state: dict[str, torch.Tensor] | None, device: torch.device | str) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: v.detach().to(device) for k, v in state.items()}


def check_finite(rows: list[dict], iteration: int, start: int, network: str = "", index: int | None = None) -> None:
    """Raise :class:`~lth.errors.TrainingDiverged` if a loss of this evaluation is NaN or infinite.

    Called where the trainers read their losses anyway (every evaluation): the running training
    loss is summed on the device, so a non-finite loss at any step since the last evaluation
    shows here without a host sync per step.
    """
    for row in rows:
        if not math.isfinite(row["loss"]):
            raise TrainingDiverged(iteration, row["loss"], start, network, index=index)


class MaskEnforcer:
    """Freezes the pruned entries of masked parameters: masks their gradients every step.

    Weight decay of masked parameters is done here (on kept entries only) instead of in the
    optimizer, which would otherwise move frozen non-zero weights.
    """

    def __init__(self, model: nn.Module, mask: Mask | None, weight_decay: float = 0.0) -> None:
        params = dict(model.named_parameters())
        pairs = [
            (params[name], m.to(params[name].device, params[name].dtype))
            for name, m in (mask or {}).items()
            if not bool(m.all())
        ]
        self.params: list[torch.Tensor] = [p for p, _ in pairs]
        self.masks = [m for _, m in pairs]
        self.weight_decay = weight_decay

    def mask_grads(self) -> None:
        if self.params:
            grads = cast("list[torch.Tensor]", [p.grad for p in self.params])  # all set by the backward pass
            torch._foreach_mul_(grads, self.masks)
            if self.weight_decay:
                torch._foreach_addcmul_(grads, [p.detach() for p in self.params], self.masks, value=self.weight_decay)

    @torch.no_grad()
    def zero_pruned(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


class Trainer:
    """Trains a model on a :class:`DataBundle` with a fixed recipe; same seed, same run, bit for bit."""

    def __init__(
        self,
        data: DataBundle,
        batch_size: int,
        optimizer: OptimizerSettings,
        seed: int,
        eval_every: int = 100,
        progress: bool = True,
        leave: bool = True,
        acceleration: Acceleration = DEFAULT,
    ) -> None:
        self.data = data
        self.acceleration = acceleration
        self._forwards: dict[int, tuple[nn.Module, Callable]] = {}  # id(model) -> (model, its forward)
        self.leave = leave  # keep each finished progress bar on screen
        self.optimizer = optimizer
        self.eval_every = eval_every
        self.progress = progress
        self.batcher = Batcher(data.train_x, data.train_y, batch_size, seed=seed, augment=data.augment)

    @property
    def iterations_per_epoch(self) -> int:
        return self.batcher.iterations_per_epoch

    def forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """What runs ``model``'s forward pass under this trainer's acceleration (compiled once per model)."""
        if not self.acceleration.compile:
            return model
        if id(model) not in self._forwards:
            self._forwards[id(model)] = (model, self.acceleration.forward(model))
        return self._forwards[id(model)][1]

    def evaluate(self, model: nn.Module) -> tuple[list[float], list[float]]:
        """(loss, accuracy) on validation and test, with one host sync."""
        forward, a = self.forward(model), self.acceleration
        both = torch.stack(
            [
                evaluate(model, self.data.val_x, self.data.val_y, acceleration=a, forward=forward),
                evaluate(model, self.data.test_x, self.data.test_y, acceleration=a, forward=forward),
            ]
        ).tolist()
        return both[0], both[1]

    def train(
        self,
        model: nn.Module,
        mask: Mask | None,
        start: int,
        stop: int,
        capture: Iterable[int] = (),
        on_capture: Callable[[int, nn.Module], None] | None = None,
        description: str = "",
        postfix: dict | None = None,
        zero_pruned: bool = True,
        keep_best: bool = False,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[TrainProgress], None] | None = None,
        resume: TrainProgress | None = None,
    ) -> RoundResult:
        """Train from iteration ``start`` to ``stop`` with a fresh optimizer.

        ``on_capture(t, model)`` is called when ``t`` steps have been taken, for each ``t`` in ``capture``
        (e.g. to save the rewind point). Evaluations happen at ``start``, every ``eval_every``
        iterations and at ``stop``. Pruned entries are set to 0 first when ``zero_pruned``, else
        they stay frozen at their current values. ``keep_best`` keeps a copy of the parameters at
        the evaluation of minimum validation loss (``result.best_state``).

        Every ``checkpoint_every`` steps (0: never) ``on_checkpoint`` receives a
        :class:`TrainProgress`; passing it back as ``resume`` (with the same arguments otherwise)
        continues the run exactly where it was taken, so the result is bit-identical to an
        uninterrupted call.
        """
        tic = time.perf_counter()
        model.train()
        if resume is not None:
            model.load_state_dict(resume.model)
        acceleration = self.acceleration
        acceleration.prepare(model)
        forward = self.forward(model)
        autocast = acceleration.autocast(self.data.train_x.device)
        enforcer = MaskEnforcer(model, mask, self.optimizer.weight_decay)
        if zero_pruned and resume is None:
            enforcer.zero_pruned()
        masked = {id(p) for p in enforcer.params}
        optimizer = build_optimizer(
            [p for p in model.parameters() if id(p) not in masked], self.optimizer, enforcer.params
        )
        capture = set(capture)
        result = RoundResult()
        device = self.data.train_x.device
        running = torch.zeros(2, device=device)  # loss sum, correct: summed on the device, no sync per step
        seen = 0
        best_loss = float("inf")
        first, spent = start, 0.0
        if resume is not None:
            optimizer.load_state_dict(resume.optimizer)
            result.metrics = list(resume.metrics)
            result.best_state = resume.best_state
            running.copy_(resume.running)
            seen, best_loss, first, spent = resume.seen, resume.best_loss, resume.iteration, resume.seconds
        current_lr = None
        bar = progress_bar(
            total=stop - start,
            initial=first - start,
            desc=description,
            disable=not self.progress,
            leave=self.leave,
            unit="it",
            dynamic_ncols=True,
            mininterval=0.5,
        )

        def record(t: int) -> None:
            nonlocal seen, best_loss
            (val_loss, val_acc), (test_loss, test_acc) = self.evaluate(model)
            rows = [
                {"iteration": t, "split": "val", "loss": val_loss, "accuracy": val_acc},
                {"iteration": t, "split": "test", "loss": test_loss, "accuracy": test_acc},
            ]
            if seen:
                loss_sum, correct = running.tolist()
                rows.insert(0, {"iteration": t, "split": "train", "loss": loss_sum / seen, "accuracy": correct / seen})
            try:
                check_finite(rows, t, start)
            except TrainingDiverged:
                bar.close()
                raise
            running.zero_()
            seen = 0
            result.metrics.extend(rows)
            if keep_best and (result.best_state is None or val_loss < best_loss):
                best_loss = val_loss
                result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix({**(postfix or {}), "loss": f"{rows[0]['loss']:.3f}", "val_acc": f"{val_acc:.4f}"})

        def progress_now(done: int) -> TrainProgress:
            return TrainProgress(
                iteration=done,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                metrics=result.metrics,
                running=running,
                seen=seen,
                best_loss=best_loss,
                best_state=result.best_state,
                seconds=spent + time.perf_counter() - tic,
            )

        if resume is None:
            record(start)
        for t in range(first, stop):
            if t in capture and on_capture is not None:
                on_capture(t, model)
            lr = learning_rate(self.optimizer, t)
            if lr != current_lr:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                current_lr = lr
            x, y = self.batcher.batch(t)
            with autocast:
                logits = forward(acceleration.batch(x))
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            enforcer.mask_grads()
            optimizer.step()
            with torch.no_grad():
                running[0].add_(loss.detach(), alpha=y.shape[0])
                running[1].add_((logits.argmax(1) == y).sum())
            seen += y.shape[0]
            done = t + 1
            if done % self.eval_every == 0 or done == stop:
                record(done)
                bar.update(done - bar.n - start)
            if checkpoint_every and on_checkpoint is not None and done % checkpoint_every == 0 and done != stop:
                on_checkpoint(progress_now(done))
        if stop in capture and on_capture is not None:
            on_capture(stop, model)
        bar.close()
        result.summarise()
        result.seconds = spent + time.perf_counter() - tic
        return result
