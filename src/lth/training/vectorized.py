"""Training K networks of one architecture in one step (``torch.func.functional_call`` + ``vmap``).

Each network keeps its own initialisation, mask (with frozen pruned values: mask-0 actions),
data order (its own :class:`~lth.data.Batcher` seed) and optimizer state; what they share is
the recipe (optimizer kind, learning-rate schedule, batch size, budget). Parameters are stacked
along a leading K dimension, so a layer's K matrix products run as one batched product and
the optimizer makes one fused pass over K times fewer, larger tensors. Elementwise maths
(Adam, SGD, masking) is identical to training each network alone; the matrix products sum in
another order, so results agree to float rounding (tests check masks and accuracies).

Models whose forward mutates buffers (batch norm in training mode) are not supported: train
them one at a time (:class:`~lth.training.Trainer`). Of the :class:`~lth.training.Acceleration`
options, ``compile`` applies (to the vectorised forward pass); bf16 autocast does not reach inside
``vmap``, so it is refused; channels-last is a lone-training layout and is ignored here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lth.data import Batcher, DataBundle
from lth.data.batcher import crop_flip
from lth.errors import LthError, TrainingDiverged
from lth.masks import Mask
from lth.progress import progress_bar
from lth.training.acceleration import DEFAULT, Acceleration
from lth.training.optim import OptimizerSettings, build_optimizer, learning_rate
from lth.training.trainer import RoundResult, check_finite

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def check_vectorizable(model: nn.Module) -> None:
    """Raise LthError if ``model`` cannot be trained side by side with copies of itself."""
    for name, module in model.named_modules():
        if isinstance(module, _NORMS) and (module.track_running_stats or module.training):
            raise LthError(
                f"vectorised training needs models without running batch statistics; {name or 'the model'} "
                f"is a {type(module).__name__} (use --vectorize off)"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise LthError(
                f"vectorised training needs models without random layers; {name or 'the model'} is a "
                f"{type(module).__name__} (use --vectorize off)"
            )


def parse_vectorize(value: int | str, name: str = "--vectorize") -> int | None:
    """How many networks to train side by side: a number >= 1, ``off`` (1) or ``auto`` (None)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "no", "false"):
            return 1
        if text == "auto":
            return None
        try:
            value = int(text)
        except ValueError:
            raise LthError(f"{name} must be a number of networks, auto or off; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LthError(f"{name} must be a number of networks, auto or off; got {value!r}")
    if value < 1:
        raise LthError(f"{name} must be at least 1, got {value}")
    return value


def same_architecture(models: Sequence[nn.Module]) -> bool:
    """True if every model has the same parameter and buffer names, shapes and dtypes."""

    def signature(m: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(k, tuple(v.shape), v.dtype) for k, v in m.state_dict().items()]

    first = signature(models[0])
    return all(type(m) is type(models[0]) and signature(m) == first for m in models[1:])


class VectorTrainer:
    """Trains K models of one architecture together; one :class:`RoundResult` per model.

    ``seeds`` give each model its data order (the same seed as a lone :class:`Trainer` gives
    the same batches).
    """

    def __init__(
        self,
        data: DataBundle,
        batch_size: int,
        optimizer: OptimizerSettings,
        seeds: Sequence[int],
        eval_every: int = 100,
        progress: bool = True,
        eval_batch_size: int = 2500,
        acceleration: Acceleration = DEFAULT,
    ) -> None:
        if not acceleration.vectorizable:
            raise LthError(f"vectorised training runs in fp32, not {acceleration.precision} (use --vectorize off)")
        self.acceleration = acceleration
        self.data = data
        self.optimizer = optimizer
        self.eval_every = eval_every
        self.progress = progress
        self.eval_batch_size = eval_batch_size
        self.batchers = [Batcher(data.train_x, data.train_y, batch_size, seed=s, augment=data.augment) for s in seeds]

    @property
    def size(self) -> int:
        return len(self.batchers)

    # -- data ------------------------------------------------------------------------
    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, ...) inputs and (K, B) labels: batch ``iteration`` of each model's data order."""
        idx = torch.stack([b.indices(iteration) for b in self.batchers])
        x, y = self.data.train_x[idx], self.data.train_y[idx]
        if self.data.augment:
            offsets, flips = zip(*(b.augmentation(iteration) for b in self.batchers))
            k, bsz = idx.shape
            flat = crop_flip(x.flatten(0, 1), torch.cat(offsets), torch.cat(flips), self.batchers[0].pad)
            x = flat.view(k, bsz, *flat.shape[1:])
        return x, y

    # -- evaluation ------------------------------------------------------------------
    @torch.inference_mode()
    def _evaluate(
        self, forward: Callable, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """(K, 2): mean loss and accuracy of every model on (x, y), the data shared, not copied."""
        k = self.size
        totals = torch.zeros(k, 2, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], self.eval_batch_size):
            xb, yb = x[start : start + self.eval_batch_size], y[start : start + self.eval_batch_size]
            logits = torch.vmap(forward, in_dims=(0, 0, None))(params, buffers, xb)  # (K, n, C)
            target = yb.expand(k, -1)
            losses = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(k, -1)
            totals[:, 0] += losses.sum(1)
            totals[:, 1] += (logits.argmax(2) == target).sum(1)
        return totals / max(1, x.shape[0])

    # -- training --------------------------------------------------------------------
    def train(
        self,
        models: Sequence[nn.Module],
        masks: Sequence[Mask | None],
        start: int,
        stop: int,
        capture: Iterable[int] = (),
        on_capture: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None,
        description: str = "",
        zero_pruned: bool = True,
        keep_best: bool = False,
    ) -> list[RoundResult]:
        """Train ``models[k]`` under ``masks[k]`` from iteration ``start`` to ``stop``; write the
        trained weights back into the models.

        ``on_capture(k, t, state)`` receives model k's state dict after ``t`` steps for each ``t``
        in ``capture``. Otherwise as :meth:`Trainer.train` for each model.
        """
        if len(models) != self.size or len(masks) != self.size:
            raise LthError(f"{len(models)} models and {len(masks)} masks for a trainer of {self.size} data orders")
        template = models[0]
        check_vectorizable(template)
        if not same_architecture(models):
            raise LthError("vectorised training needs models of one architecture (same parameter names and shapes)")
        tic = time.perf_counter()
        k = self.size
        device = self.data.train_x.device
        names = [n for n, _ in template.named_parameters()]
        states = [m.state_dict() for m in models]
        params = {n: torch.stack([s[n].detach() for s in states]).to(device).requires_grad_() for n in names}
        buffers = {n: torch.stack([s[n] for s in states]).to(device) for n, _ in template.named_buffers()}
        masked = {}
        for name in names:
            if any(m is not None and name in m for m in masks):
                stacked = torch.stack(
                    [
                        (
                            m[name]
                            if m is not None and name in m
                            else torch.ones_like(params[name][0], dtype=torch.bool)
                        ).to(device)
                        for m in masks
                    ]
                )
                if not bool(stacked.all()):
                    masked[name] = stacked.to(params[name].dtype)
        if zero_pruned and masked:
            with torch.no_grad():
                for name, m in masked.items():
                    params[name].mul_(m)
        masked_params = [params[n] for n in masked]
        mask_values = list(masked.values())
        optimizer = build_optimizer([p for n, p in params.items() if n not in masked], self.optimizer, masked_params)
        weight_decay = self.optimizer.weight_decay

        def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (x,))

        train_forward = torch.vmap(forward, in_dims=(0, 0, 0))
        if self.acceleration.compile:
            train_forward = torch.compile(train_forward)
        was_training = template.training
        results = [RoundResult() for _ in range(k)]
        running = torch.zeros(k, 2, device=device)
        seen = 0
        best_loss = [float("inf")] * k
        capture = set(capture)
        bar = progress_bar(
            total=stop - start,
            desc=description,
            disable=not self.progress,
            leave=True,
            unit="it",
            dynamic_ncols=True,
            mininterval=0.5,
        )

        def state_of(i: int) -> dict[str, torch.Tensor]:
            return {
                **{n: p[i].detach().clone() for n, p in params.items()},
                **{n: b[i].clone() for n, b in buffers.items()},
            }

        def record(t: int) -> None:
            nonlocal seen
            template.eval()
            both = torch.stack(
                [
                    self._evaluate(forward, params, buffers, self.data.val_x, self.data.val_y),
                    self._evaluate(forward, params, buffers, self.data.test_x, self.data.test_y),
                ],
                dim=1,
            ).tolist()  # (K, 2 splits, 2)
            template.train()
            train = (running / max(1, seen)).tolist() if seen else None
            for i, ((val_loss, val_acc), (test_loss, test_acc)) in enumerate(both):
                rows = [
                    {"iteration": t, "split": "val", "loss": val_loss, "accuracy": val_acc},
                    {"iteration": t, "split": "test", "loss": test_loss, "accuracy": test_acc},
                ]
                if train is not None:
                    rows.insert(0, {"iteration": t, "split": "train", "loss": train[i][0], "accuracy": train[i][1]})
                try:
                    check_finite(rows, t, start, f"network {i + 1} of {k}" if k > 1 else "", i)
                except TrainingDiverged:
                    bar.close()
                    raise
                results[i].metrics.extend(rows)
                if keep_best and (results[i].best_state is None or val_loss < best_loss[i]):
                    best_loss[i] = val_loss
                    results[i].best_state = state_of(i)
            running.zero_()
            seen = 0

        template.train()
        record(start)
        current_lr = None
        for t in range(start, stop):
            if t in capture and on_capture is not None:
                for i in range(k):
                    on_capture(i, t, state_of(i))
            lr = learning_rate(self.optimizer, t)
            if lr != current_lr:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                current_lr = lr
            x, y = self.batch(t)
            logits = train_forward(params, buffers, x)  # (K, B, C)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1)
            loss = losses.mean(1).sum()  # model k's gradient is that of its own mean loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masked_params:
                grads = cast("list[torch.Tensor]", [p.grad for p in masked_params])  # all set by backward()
                torch._foreach_mul_(grads, mask_values)
                if weight_decay:
                    torch._foreach_addcmul_(grads, [p.detach() for p in masked_params], mask_values, value=weight_decay)
            optimizer.step()
            with torch.no_grad():
                running[:, 0].add_(losses.detach().sum(1))
                running[:, 1].add_((logits.argmax(2) == y).sum(1))
            seen += y.shape[1]
            done = t + 1
            if done % self.eval_every == 0 or done == stop:
                record(done)
                bar.update(done - bar.n - start)
        if stop in capture and on_capture is not None:
            for i in range(k):
                on_capture(i, stop, state_of(i))
        bar.close()
        template.train(was_training)
        seconds = time.perf_counter() - tic
        for i, (model, result) in enumerate(zip(models, results)):
            model.load_state_dict(state_of(i))
            result.summarise()
            result.seconds = seconds / k
        return results
