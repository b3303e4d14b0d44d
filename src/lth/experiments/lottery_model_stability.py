"""The instability analysis of a :class:`~lth.experiments.lottery_model.LotteryModel`'s current
ticket (:meth:`LotteryModel.stability`), run on copies: the experiment itself is left untouched."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth.errors import TrainingDiverged
from lth.experiments.branch_kinds import level_seed
from lth.experiments.lottery_model_checks import diverged_in_round, stability_rewind_points
from lth.experiments.lottery_model_store import clone_state
from lth.experiments.lottery_model_training import require_data
from lth.experiments.stability import entries_frame, pair_result, summarise_pairs
from lth.masks import Mask
from lth.training import RoundResult, Trainer, interpolation

if TYPE_CHECKING:
    import pandas as pd

    from lth.experiments.lottery_model import LotteryModel


def analyse_stability(
    experiment: LotteryModel,
    rewind: int | Sequence[int] | None,
    copies: int,
    points: int,
    path_train_size: int,
    stable_threshold: float,
    batch_norm_reset: bool,
    seed: int | None,
) -> pd.DataFrame:
    """The frame :meth:`LotteryModel.stability` returns (see there): one row per rewind point."""
    import pandas as pd

    settings = experiment._settings
    data = experiment._data
    round_index = experiment._round
    require_data(experiment, "stability()")
    assert data is not None and experiment._budget is not None
    budget = experiment._budget
    start = 0 if round_index == 0 else settings.rewind_iteration
    ks = stability_rewind_points(
        rewind, copies, points, path_train_size, stable_threshold, batch_norm_reset, seed, start, budget, round_index
    )
    base = settings.seed if seed is None else int(seed)
    threshold = float(stable_threshold) / 100
    mask = Mask({name: m.detach().clone() for name, m in experiment._mask.items()})
    # train() would reinit to the rewind weights first
    source = experiment._rewind_state if experiment._needs_start else experiment._start_state
    assert source is not None
    start_state = {
        name: (value * mask[name].to(value.dtype) if name in mask else value).detach().clone()
        for name, value in source.items()
    }
    device = experiment._device
    devices = [device.index or 0] if device.type == "cuda" else []

    def trained(
        state: Mapping[str, torch.Tensor],
        data_seed: int,
        rng_seed: int,
        first: int,
        stop: int,
        what: str,
        capture: Sequence[int] = (),
        on_capture: Any = None,
    ) -> tuple[nn.Module, RoundResult]:
        """A copy of the module trained from ``state`` on the model's recipe (forked, seeded global RNG)."""
        net = copy.deepcopy(experiment._module)
        net.load_state_dict(state)
        trainer = Trainer(
            data,
            settings.batch_size,
            settings.optimizer_settings(),
            data_seed,
            settings.eval_every,
            settings.progress,
            acceleration=settings.acceleration(),
        )
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(rng_seed)
                result = trainer.train(
                    net,
                    mask,
                    start=first,
                    stop=stop,
                    capture=capture,
                    on_capture=on_capture,
                    description=f"stability {what}",
                    postfix={"kept": f"{mask.density():.4f}"},
                )
        except TrainingDiverged as error:
            raise diverged_in_round(error, f"training of the stability {what}", round_index) from None
        return net, result

    # The parent: once from the round's start to the last k, keeping its weights at every k.
    parents: dict[int, dict[str, torch.Tensor]] = {start: start_state} if start in ks else {}
    if ks[-1] > start:
        trained(
            start_state,
            base,
            level_seed(base, "stability-dropout-parent", round_index),
            start,
            ks[-1],
            f"parent to k={ks[-1]}",
            capture=[k for k in ks if k > start],
            on_capture=lambda t, m: parents.__setitem__(t, clone_state(m.state_dict())),
        )
    n = data.train_x.shape[0]
    generator = torch.Generator().manual_seed(level_seed(base, "stability-path-train", 0))
    index = torch.randperm(n, generator=generator)[: min(path_train_size, n)].sort().values.to(data.train_x.device)
    splits = {"test": (data.test_x, data.test_y), "train": (data.train_x[index], data.train_y[index])}
    probe = copy.deepcopy(experiment._module)
    bn_data = splits["train"][0] if batch_norm_reset and interpolation.has_batch_norm(probe) else None
    alpha = interpolation.alphas(points)
    entries = []
    for k in ks:
        finals, children = [], []
        for c in range(copies):
            child_seed = level_seed(base, "stability-child", c)
            net, result = trained(
                parents[k],
                child_seed,
                level_seed(base, f"stability-dropout-k{k}", c),
                k,
                budget,
                f"child {c + 1}/{copies} k={k}",
            )
            finals.append(clone_state(net.state_dict()))
            children.append(
                {
                    "copy": c,
                    "seed": child_seed,
                    "final_test_accuracy": result.final_test_accuracy,
                    "final_test_loss": result.final_test_loss,
                }
            )
        pairs = [
            pair_result(i, j, interpolation.evaluate_path(probe, finals[i], finals[j], mask, alpha, splits, bn_data))
            for i in range(copies)
            for j in range(i + 1, copies)
        ]
        entries.append(summarise_pairs(round_index, mask.density(), k, copies, pairs, children, threshold))
    columns = [*entries_frame([]).columns, "stable_threshold", "per_pair", "children"]
    return pd.DataFrame([{key: entry[key] for key in columns} for entry in entries], columns=columns)
