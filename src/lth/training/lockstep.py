"""Run several training programs (ticket searches) side by side, their trainings vectorised.

Each program runs in its own thread and trains through a :class:`LockstepTrainer` instead of a
:class:`~lth.training.Trainer`. A ``train`` call does not train: it waits until every running
program is waiting too (or has finished), then the coordinator trains the waiting models that
share a recipe and a schedule in one :class:`~lth.training.vectorized.VectorTrainer`, and each
call returns its model's result. Between trainings the programs (pruning, actions, writing
results) run as usual, so a study of K trials keeps the code of one trial, and its K trainings
of each round cost about one vectorised training.

Everything is deterministic: each program's computations do not depend on the others, and the
vectorised training equals training alone up to float rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lth.data import DataBundle
from lth.errors import TrainingDiverged
from lth.masks import Mask
from lth.training.acceleration import DEFAULT, Acceleration
from lth.training.optim import OptimizerSettings
from lth.training.trainer import RoundResult, Trainer, TrainProgress
from lth.training.vectorized import VectorTrainer, same_architecture


@dataclass
class _Request:
    trainer: LockstepTrainer
    model: nn.Module
    mask: Mask | None
    start: int
    stop: int
    capture: tuple[int, ...]
    on_capture: Callable[[int, nn.Module], None] | None
    zero_pruned: bool
    keep_best: bool
    description: str
    program: int = 0  # the index of the program that asked: fixes the order of a group
    result: RoundResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def key(self) -> tuple:
        t = self.trainer
        shapes = tuple((k, tuple(v.shape)) for k, v in self.model.state_dict().items())
        return (
            id(t.data),
            t.batch_size,
            t.optimizer,
            t.eval_every,
            t.acceleration,
            type(self.model),
            shapes,
            self.start,
            self.stop,
            self.capture,
            self.zero_pruned,
            self.keep_best,
        )


class LockstepTrainer:
    """Stands in for :class:`Trainer` inside one program of a :class:`Lockstep` run."""

    def __init__(
        self,
        coordinator: Lockstep,
        data: DataBundle,
        batch_size: int,
        optimizer: OptimizerSettings,
        seed: int,
        eval_every: int = 100,
        progress: bool = True,
        leave: bool = True,
        acceleration: Acceleration = DEFAULT,
    ) -> None:
        self.coordinator = coordinator
        self.data, self.batch_size, self.optimizer, self.seed, self.eval_every = (
            data,
            batch_size,
            optimizer,
            seed,
            eval_every,
        )
        self.acceleration = acceleration
        self.alone = Trainer(data, batch_size, optimizer, seed, eval_every, progress=False, acceleration=acceleration)

    @property
    def batcher(self):  # noqa: ANN201 - the same batches as a lone Trainer with this seed
        return self.alone.batcher

    @property
    def iterations_per_epoch(self) -> int:
        return self.alone.iterations_per_epoch

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
        """As :meth:`Trainer.train`, trained together with the other programs' waiting models.

        No checkpoints are taken inside a vectorised training (``checkpoint_every`` is ignored);
        a ``resume`` of an interrupted lone training continues alone, and so do trainings whose
        acceleration cannot be vectorised (bf16).
        """
        if resume is not None or not self.acceleration.vectorizable:
            return self.coordinator.alone(
                lambda: self.alone.train(
                    model,
                    mask,
                    start,
                    stop,
                    capture,
                    on_capture,
                    description,
                    postfix,
                    zero_pruned,
                    keep_best,
                    checkpoint_every,
                    on_checkpoint,
                    resume,
                )
            )
        request = _Request(
            self, model, mask, start, stop, tuple(sorted(set(capture))), on_capture, zero_pruned, keep_best, description
        )
        return self.coordinator.submit(request)


class Lockstep:
    """Runs programs in threads; trains their waiting models together, at most ``group_size`` at once."""

    def __init__(self, group_size: int, progress: bool = True) -> None:
        self.group_size = max(1, group_size)
        self.progress = progress
        self._lock = threading.Condition()
        self._waiting: list[_Request] = []
        self._alone: list[tuple[Callable[[], RoundResult], list]] = []
        self._running = 0
        self._program = threading.local()  # in each program's thread: its index

    def trainer_factory(self) -> Callable[..., LockstepTrainer]:
        """``factory(data, batch_size, optimizer, seed, eval_every, progress, leave)``, as Trainer's arguments."""
        return lambda *args, **kwargs: LockstepTrainer(self, *args, **kwargs)

    # -- called from program threads ------------------------------------------------
    def submit(self, request: _Request) -> RoundResult:
        request.program = getattr(self._program, "index", 0)
        with self._lock:
            self._waiting.append(request)
            self._lock.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def alone(self, work: Callable[[], RoundResult]) -> RoundResult:
        box: list = []
        event = threading.Event()
        with self._lock:
            self._alone.append((work, [box, event]))
            self._lock.notify_all()
        event.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    # -- the coordinator ----------------------------------------------------------------
    def run(self, programs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run every program (in threads); return their results in order, or raise the first error."""
        results: list[Any] = [None] * len(programs)
        errors: list[BaseException | None] = [None] * len(programs)

        def body(i: int, program: Callable[[], Any]) -> None:
            self._program.index = i
            try:
                results[i] = program()
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                errors[i] = error
            finally:
                with self._lock:
                    self._running -= 1
                    self._lock.notify_all()

        threads = [threading.Thread(target=body, args=(i, p), daemon=True) for i, p in enumerate(programs)]
        with self._lock:
            self._running = len(threads)
        for thread in threads:
            thread.start()
        while True:
            with self._lock:
                # Wait until every live program waits for training (or for a lone training).
                self._lock.wait_for(lambda: self._running == len(self._waiting) + len(self._alone))
                if self._running == 0:
                    break
                waiting, self._waiting = self._waiting, []
                alone, self._alone = self._alone, []
            for work, (box, event) in alone:
                try:
                    box.append(work())
                except BaseException as error:  # noqa: BLE001
                    box.append(error)
                event.set()
            self._train_groups(waiting)
        for thread in threads:
            thread.join()
        for failure in errors:
            if failure is not None:
                raise failure
        return results

    def _train_groups(self, requests: list[_Request]) -> None:
        # In program order, not arrival order: a network's place in the stack can change how
        # the batched products are split between threads, hence their rounding.
        groups: dict[tuple, list[_Request]] = {}
        for request in sorted(requests, key=lambda r: r.program):
            groups.setdefault(request.key(), []).append(request)
        for members in groups.values():
            for start in range(0, len(members), self.group_size):
                self._train(members[start : start + self.group_size])

    def _train(self, group: list[_Request]) -> None:
        first = group[0]
        t = first.trainer
        try:
            if not same_architecture([r.model for r in group]):
                raise AssertionError("grouped models differ")  # the key makes this impossible
            vector = VectorTrainer(
                t.data,
                t.batch_size,
                t.optimizer,
                [r.trainer.seed for r in group],
                t.eval_every,
                progress=self.progress,
                acceleration=t.acceleration,
            )

            def capture(k: int, step: int, state: dict[str, torch.Tensor]) -> None:
                request = group[k]
                if request.on_capture is not None:
                    saved = {name: v.clone() for name, v in request.model.state_dict().items()}
                    request.model.load_state_dict(state)
                    request.on_capture(step, request.model)
                    request.model.load_state_dict(saved)

            label = first.description if len(group) == 1 else f"{first.description} x{len(group)}"
            results = vector.train(
                [r.model for r in group],
                [r.mask for r in group],
                first.start,
                first.stop,
                capture=first.capture,
                on_capture=capture,
                description=label,
                zero_pruned=first.zero_pruned,
                keep_best=first.keep_best,
            )
            for request, result in zip(group, results):
                request.result = result
        except BaseException as error:  # noqa: BLE001 - every waiting program gets it
            if isinstance(error, TrainingDiverged) and error.index is not None and error.index < len(group):
                error.index = group[error.index].program  # the program whose network diverged, not its place here
            for request in group:
                request.error = error
        for request in group:
            request.done.set()
