"""The training runs of a :class:`~lth.experiments.lottery_model.LotteryModel`: a round of the
ticket and a control, each recorded in the experiment (row, learning curves, mask).

Each run happens on a forked global RNG seeded from the experiment's seed and a salt of its
own, so results depend only on the seed and the caller's RNG is left alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from lth.config import CONTROL_NAMES
from lth.data.batcher import epoch_seed
from lth.errors import LthError, TrainingDiverged
from lth.experiments.controls import control_generator, prepare_control
from lth.experiments.lottery_model_checks import check_resettable, diverged_in_round, fresh_initialisation
from lth.experiments.lottery_model_store import clone_state, mask_copy, row_copy, state_to
from lth.training import Trainer

if TYPE_CHECKING:
    from lth.experiments.lottery_model import LotteryModel


def require_data(experiment: LotteryModel, what: str) -> Trainer:
    """The experiment's trainer; LthError when it was loaded without data."""
    if experiment._trainer is None:
        raise LthError(f"{what} needs data, and this experiment was loaded without any; pass data to load()")
    return experiment._trainer


@contextlib.contextmanager
def seeded_rng(experiment: LotteryModel, salt: int) -> Iterator[None]:
    """Run on a forked global RNG seeded from (seed, salt): dropout and other random layers are
    reproducible, and the caller's RNG state is left alone. Not inside a vectorised (lockstep)
    training: its models have no random layers, and its threads share the global RNG."""
    if experiment._lockstep:
        yield
        return
    device = experiment._device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(epoch_seed(experiment._settings.seed, salt))
        yield


def train_round(experiment: LotteryModel, trainer: Trainer, start: int, stop: int, capture: bool) -> dict:
    """Train the current round from its start weights (keeping the rewind weights when
    ``capture``), record its row, curves and mask; return the row."""
    round_index, rewind = experiment._round, experiment._settings.rewind_iteration
    experiment._module.load_state_dict(experiment._start_state)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    tic = time.perf_counter()
    try:
        with seeded_rng(experiment, 2 * round_index):
            result = trainer.train(
                experiment._module,
                experiment._mask,
                start=start,
                stop=stop,
                capture=[rewind] if capture else [],
                on_capture=lambda t, m: snapshots.__setitem__(t, clone_state(m.state_dict())),
                description=f"round {round_index}",
                postfix={"kept": f"{experiment._mask.density():.4f}"},
                zero_pruned=False,
            )
    except TrainingDiverged as error:  # the round's row and start weights are untouched: train() may be retried
        raise diverged_in_round(error, "training", round_index) from None
    seconds = time.perf_counter() - tic
    if capture:
        experiment._rewind_state = snapshots[rewind]
    params = dict(experiment._module.named_parameters())
    experiment._w_final = {name: params[name].detach().clone() for name in experiment._groups}
    row = result.row(round_index, experiment._mask, seconds)
    experiment._rows = [r for r in experiment._rows if r["round"] != round_index] + [row]
    for name in experiment._control_rows:  # the controls of a round trained again are trained again
        experiment._control_rows[name] = [r for r in experiment._control_rows[name] if r["round"] != round_index]
        experiment._control_masks.get(name, {}).pop(round_index, None)
    experiment._metrics = [m for m in experiment._metrics if m["round"] != round_index]
    experiment._metrics.extend({"round": round_index, **m} for m in result.metrics)
    experiment._masks[round_index] = mask_copy(experiment._mask)
    experiment._trained = True
    return row_copy(row)


def train_control(experiment: LotteryModel, name: str, trainer: Trainer) -> dict:
    """Train control ``name`` of the current round once, record its row and mask; return the row."""
    model, round_index = experiment._module, experiment._round
    settings = experiment._settings
    rewind_state = experiment._rewind_state
    assert rewind_state is not None  # train_controls checks it (a trained, pruned round)

    def control_state(seed: int) -> dict[str, torch.Tensor]:
        """The reinit control's start: a fresh draw under ``seed`` (the rest at its rewind values)."""
        model.load_state_dict(rewind_state)
        drawn = fresh_initialisation(model, seed, settings.initializer)
        return state_to(drawn.state_dict(), experiment._device)

    ticket_state = clone_state(model.state_dict())
    start, stop = settings.rewind_iteration, experiment._budget
    assert stop is not None  # an experiment with data (hence a trainer) has its budget
    try:
        mask = prepare_control(
            name,
            model,
            experiment._mask,
            rewind_state,
            control_state,
            control_generator(settings.seed, name, round_index),
        )
        mask.apply_(model)
        tic = time.perf_counter()
        # A salt of its own (< 0: the ticket's are >= 0) for the control's dropout and other random layers.
        salt = -1 - (round_index * len(CONTROL_NAMES) + CONTROL_NAMES.index(name))
        with seeded_rng(experiment, salt):
            result = trainer.train(
                model,
                mask,
                start=start,
                stop=stop,
                description=f"{name} control {round_index}",
                postfix={"kept": f"{mask.density():.4f}"},
                zero_pruned=False,
            )
    except TrainingDiverged as error:
        raise diverged_in_round(error, f"training of the {name} control", round_index) from None
    finally:
        model.load_state_dict(ticket_state)  # the model stays the ticket as last trained
    row = result.row(round_index, mask, time.perf_counter() - tic)
    rows = experiment._control_rows.setdefault(name, [])
    experiment._control_rows[name] = [r for r in rows if r["round"] != round_index] + [row]
    experiment._control_masks.setdefault(name, {})[round_index] = mask_copy(mask)
    return row_copy(row)


def train_controls(experiment: LotteryModel, names: Sequence[str]) -> dict[str, dict]:
    """Train the controls ``names`` of the current pruned, trained round; return their rows by name."""
    if not names:
        return {}
    trainer = require_data(experiment, "train_controls()")
    if experiment._round == 0 or not experiment._trained or experiment._rewind_state is None:
        raise LthError(
            "train_controls() needs a pruned round that has been trained; call prune() and train() "
            "first (round 0 is dense: it has no controls)"
        )
    if "reinit" in names and experiment._settings.initializer is None:
        check_resettable(experiment._module, list(experiment._groups))
    return {name: train_control(experiment, name, trainer) for name in names}


def train_missing_controls(experiment: LotteryModel) -> None:
    """Train the controls of the setting that the current (pruned, trained) round lacks."""
    if experiment._round == 0 or not experiment._trained:
        return
    missing = [
        name
        for name in experiment._settings.controls
        if not any(r["round"] == experiment._round for r in experiment._control_rows.get(name, []))
    ]
    if missing:
        experiment.train_controls(missing)
