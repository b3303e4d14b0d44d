"""LotterySession: several experiments on the same network and the same initialisation.

Each experiment is a :class:`LotteryModel` started from the session's current initial
weights, so criteria, actions or rates can be compared on one ``w_0``::

    session = LotterySession(my_net, data, iterations=2000)
    session.new_experiment("magnitude").iterative_pruning(rounds=3)
    session.new_experiment("movement").iterative_pruning(rounds=3, criterion="movement")
    session.summary(); session.plot_accuracy()
    session.pivot()  # the same rows, fewer and shorter columns: fits 80 columns
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth.data.user_data import as_bundle, resolve_device
from lth.errors import LthError
from lth.experiments.limits import check_max_runs
from lth.experiments.lottery_model import (
    ROW_KEYS,
    LotteryModel,
    check_resettable,
    check_setting_names,
    fresh_initialisation,
    make_settings,
)
from lth.store.run_dir import check_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class LotterySession:
    """Experiments sharing one network and initialisation.

    ``model`` is deep-copied (the user's object is untouched); its parameters are the session's
    initialisation. ``data`` is read once (see :func:`lth.data.user_data.as_bundle`) and shared.
    ``settings`` are :class:`LotteryModel` keyword settings, the defaults of every experiment.
    ``max_runs``: the most experiments it may hold (None: :data:`lth.experiments.limits.MAX_RUNS`).
    """

    def __init__(self, model: nn.Module, data: Any, *, max_runs: int | None = None, **settings: Any) -> None:
        self.max_runs = check_max_runs(max_runs)
        checked = make_settings(**settings)  # LthError for an unknown or bad setting, before any work
        if not isinstance(model, nn.Module):
            raise LthError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._settings = dict(settings)
        self._data = as_bundle(
            data, resolve_device(checked.device), val_size=checked.val_size, data_dir=checked.data_dir
        )
        self._dataset = data if isinstance(data, str) else None
        self._network = copy.deepcopy(model).cpu()
        self._original = {k: v.detach().clone() for k, v in self._network.state_dict().items()}
        self._generator = torch.Generator().manual_seed(checked.seed)
        self.experiments: dict[str, LotteryModel] = {}

    @property
    def initial_state(self) -> dict[str, torch.Tensor]:
        """A copy of the initial weights the next experiment starts from."""
        return {k: v.detach().clone() for k, v in self._network.state_dict().items()}

    def new_experiment(self, name: str, **overrides: Any) -> LotteryModel:
        """A new :class:`LotteryModel` named ``name`` from the session's current initial weights.

        ``overrides`` replace the session's settings for this experiment only.
        """
        if not isinstance(name, str) or not name:
            raise LthError(f"an experiment needs a non-empty name, got {name!r}")
        check_name(name, "experiment name")  # save() writes it to path/name
        if name in self.experiments:
            raise LthError(f"experiment {name!r} already exists; existing: {', '.join(self.experiments)}")
        if len(self.experiments) >= self.max_runs:
            raise LthError(
                f"the session already holds {len(self.experiments)} experiments, its limit; "
                "if you mean it, raise the limit with LotterySession(..., max_runs=N)"
            )
        check_setting_names(list(overrides))
        if "val_size" in overrides or "data_dir" in overrides:
            raise LthError("val_size and data_dir are fixed by the session's data; set them when creating the session")
        settings = {**self._settings, **overrides}
        experiment = LotteryModel(self._network, self._data, **settings)
        experiment._dataset = self._dataset
        self.experiments[name] = experiment
        return experiment

    def reset_network(self, random: bool = False) -> None:
        """Set the initial weights of later experiments (existing ones keep theirs).

        ``random=False`` restores the original initialisation; ``random=True`` draws a new one
        (``initializer`` setting, or ``reset_parameters()`` of every submodule) under a seed from
        the session's generator (seeded with the ``seed`` setting), leaving the global RNG alone.
        """
        if not random:
            self._network.load_state_dict(self._original)
            return
        initializer = self._settings.get("initializer")
        if initializer is None:
            check_resettable(self._network, [name for name, _ in self._network.named_parameters()])
        seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        self._network = fresh_initialisation(self._network, seed, initializer)

    def summary(self) -> pd.DataFrame:
        """Every trained experiment's summary in one DataFrame.

        The ``experiment`` and ``line`` columns come first: ``line`` is ``ticket``, or a control or
        branch line an experiment exposes beside it (:func:`~lth.experiments.lottery_robust.model_lines`:
        the controls of the ``controls`` setting, :meth:`LotteryModel.lines`).
        """
        import pandas as pd

        from lth.experiments.lottery_robust import model_lines

        frames = [
            pd.DataFrame(sorted(rows, key=lambda r: r["round"]), columns=list(ROW_KEYS)).assign(
                experiment=name, line=line
            )
            for name, exp in self.experiments.items()
            if exp.rows
            for line, rows in model_lines(exp).items()
            if rows
        ]
        if not frames:
            return pd.DataFrame(columns=["experiment", "line", *ROW_KEYS])
        frame = pd.concat(frames, ignore_index=True)
        return frame[["experiment", "line", *[c for c in frame.columns if c not in ("experiment", "line")]]]

    def pivot(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The summary in a shape that reads at 80 columns: one row per experiment, line and round.

        :meth:`summary` with those as the index and one column per metric under a short name
        (``weights`` = weights remaining, ``test`` = test accuracy at early stop, ``test_end`` =
        final test accuracy, ``es_iter`` = early-stop iteration by default; ``metrics``: others of
        :meth:`summary`'s columns, named as in :data:`lth.experiments.statistics.SHORT_NAMES`).
        Values are the summary's own.
        """
        from lth.experiments.statistics import pivot_metrics, short_name

        frame = self.summary()
        keys = ["experiment", "line", "round"]
        present = [c for c in frame.columns if c not in (*keys, "weights_remaining", "layers")]
        chosen = ["weights_remaining", *pivot_metrics(present, metrics, "LotterySession.summary()")]
        return frame.set_index(keys)[chosen].rename(columns={c: short_name(c) for c in chosen})

    def plot_accuracy(self, ax: Axes | None = None) -> Figure:
        """Test accuracy against weights remaining of every trained experiment, on one axis.

        Every other line an experiment exposes is drawn too, as ``EXPERIMENT: LINE``, dashed (its
        controls)."""
        from lth.experiments.lottery_robust import model_lines
        from lth.plots import draw_accuracy

        lines = {
            name if line == "ticket" else f"{name}: {line}": (line, rows)
            for name, exp in self.experiments.items()
            if exp.rows
            for line, rows in model_lines(exp).items()
            if rows
        }
        return draw_accuracy(
            {label: rows for label, (_, rows) in lines.items()},
            ax=ax,
            title="test accuracy by experiment",
            dashed=[label for label, (line, _) in lines.items() if line != "ticket"],
        )

    def save(self, path: str | Path) -> Path:
        """Save every experiment to ``path/<name>`` (see :meth:`LotteryModel.save`)."""
        path = Path(path)
        for name, exp in self.experiments.items():
            exp.save(path / name)
        return path
