"""LotteryRobust: the same experiment repeated over seeds, summarised with confidence intervals.

Trial ``i`` uses seed ``seed + i`` for everything: its initialisation, its data order and its
random choices. Per round, :meth:`LotteryRobust.summary` gives the mean, median, min, max,
sample std and Student-t 95% CI of every metric over the trials::

    robust = LotteryRobust(my_net, data, trials=5, iterations=2000)
    robust.run("iterative_pruning", rounds=4)
    robust.summary(); robust.plot_accuracy()
    robust.pivot()  # one row per line and round, metrics as columns: fits 80 columns
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from lth.data.user_data import as_bundle, resolve_device
from lth.errors import LthError
from lth.experiments.limits import check_max_runs, check_run_count, check_trials, format_count
from lth.experiments.lottery_model import (
    LotteryModel,
    check_resettable,
    check_setting_names,
    fresh_initialisation,
    make_settings,
)
from lth.experiments.statistics import pivot_summary, summarise_lines, summary_frame
from lth.progress import progress_bar
from lth.training.lockstep import Lockstep
from lth.training.vectorized import check_vectorizable, parse_vectorize

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lth.training import Trainer

ModelSource = nn.Module | Callable[[int], nn.Module]
#: The LotteryModel procedures :meth:`LotteryRobust.run` can repeat.
METHODS = ("iterative_pruning", "one_shot")


def model_lines(model: LotteryModel) -> dict[str, list[dict]]:
    """The lines of per-round rows of one experiment, ticket first: ``{"ticket": model.rows}``
    and any line (control, branch) the model exposes beside it through a ``lines`` mapping or
    method (as :meth:`lth.store.RunDir.lines` does for a run directory)."""
    lines = getattr(model, "lines", None)
    lines = dict(lines() if callable(lines) else lines) if lines is not None else {}
    return {"ticket": model.rows, **{name: rows for name, rows in lines.items() if name != "ticket"}}


def _procedure(trial: LotteryModel, method: str, kwargs: dict[str, Any]) -> Callable[[], Any]:
    """A program of a :class:`Lockstep` run: ``trial.method(**kwargs)``."""
    return lambda: getattr(trial, method)(**kwargs)


class LotteryRobust:
    """``trials`` independent :class:`LotteryModel` experiments on the same data.

    ``model`` is either a module, re-initialised for every trial ``i`` (all of them, trial 0
    included) on a deep copy under seed ``seed + i`` with the ``initializer`` setting or
    ``reset_parameters()`` of every submodule, or a factory ``factory(seed) -> nn.Module``
    called with ``seed + i``. ``settings`` are :class:`LotteryModel` keyword settings.
    ``max_runs``: the most trials allowed (None: :data:`lth.experiments.limits.MAX_RUNS`),
    checked before any trial is built.
    """

    def __init__(
        self,
        model: ModelSource,
        data: Any,
        trials: int = 3,
        seed: int = 0,
        vectorize: int | str = "auto",
        max_runs: int | None = None,
        **settings: Any,
    ) -> None:
        check_trials(trials)
        check_run_count(
            trials,
            check_max_runs(max_runs),
            f"trials={format_count(trials)} gives ",
            "LotteryRobust(..., max_runs={n})",
        )
        check_setting_names(list(settings))
        checked = make_settings(seed=seed, **settings)
        factory: Callable[[int], nn.Module]
        if isinstance(model, nn.Module):
            if checked.initializer is None:
                check_resettable(model, [name for name, _ in model.named_parameters()])

            def fresh(s: int) -> nn.Module:
                return fresh_initialisation(model, s, checked.initializer)

            factory = fresh
        elif callable(model):
            factory = model
        else:
            raise LthError(f"model must be a torch.nn.Module or a factory(seed) -> Module, got {type(model).__name__}")
        bundle = as_bundle(data, resolve_device(checked.device), val_size=checked.val_size, data_dir=checked.data_dir)
        self.seed = seed
        self.progress = checked.progress
        self.vectorize = vectorize
        self.models: list[LotteryModel] = []
        for i in range(trials):
            net = factory(seed + i)
            if not isinstance(net, nn.Module):
                raise LthError(
                    f"the model factory returned a {type(net).__name__} for seed {seed + i}; "
                    "it must return a torch.nn.Module"
                )
            trial = LotteryModel(net, bundle, seed=seed + i, **settings)
            trial._dataset = data if isinstance(data, str) else None
            self.models.append(trial)

    @property
    def trials(self) -> int:
        """The number of trials."""
        return len(self.models)

    def run(self, method: str = "iterative_pruning", **kwargs: Any) -> pd.DataFrame:
        """Call ``method`` (iterative_pruning or one_shot) with ``kwargs`` on every trial; return :meth:`summary`."""
        if method not in METHODS:
            raise LthError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
        try:
            inspect.signature(getattr(LotteryModel, method)).bind(None, **kwargs)
        except TypeError as error:
            raise LthError(f"bad arguments for {method}(): {error}") from None
        group = self._group_size()
        if group <= 1:
            for trial in progress_bar(self.models, desc=method, unit="trial", disable=not self.progress):
                getattr(trial, method)(**kwargs)
            return self.summary()
        for start in range(0, len(self.models), group):  # trials side by side, trainings vectorised
            chunk = self.models[start : start + group]
            lockstep = Lockstep(len(chunk), progress=self.progress)
            originals = [trial._trainer for trial in chunk]
            try:
                for trial, alone in zip(chunk, originals):
                    assert alone is not None
                    # A LockstepTrainer stands in for the trial's Trainer (the same interface).
                    trial._trainer = cast("Callable[..., Trainer]", lockstep.trainer_factory())(
                        alone.data,
                        alone.batcher.batch_size,
                        alone.optimizer,
                        alone.batcher.seed,
                        alone.eval_every,
                        acceleration=alone.acceleration,
                    )
                    trial._lockstep = True
                lockstep.run([_procedure(trial, method, kwargs) for trial in chunk])
            finally:
                for trial, alone in zip(chunk, originals):
                    trial._trainer, trial._lockstep = alone, False
        return self.summary()

    def _group_size(self) -> int:
        """How many trials train side by side: ``vectorize`` = a number, ``auto`` (up to 16, on a GPU) or ``off``."""
        wanted = parse_vectorize(self.vectorize, "vectorize")
        auto = wanted is None
        if wanted == 1 or len(self.models) < 2:
            return 1
        if wanted is None:  # auto: on a GPU only (on a CPU a vectorised step does not beat K steps alone)
            if self.models[0]._device.type != "cuda":
                return 1
            wanted = 16
        first = self.models[0]
        if first._trainer is None or any(m._trainer is None for m in self.models):
            return 1
        try:
            check_vectorizable(first._module)
            if not first._trainer.acceleration.vectorizable:
                raise LthError(
                    f"precision {first._trainer.acceleration.precision} trains networks one at a time; "
                    "use vectorize='off' or 'auto'"
                )
        except LthError:
            if not auto:
                raise
            return 1
        return min(wanted, len(self.models))

    def trial_summaries(self) -> list[list[dict]]:
        """Each trial's per-round rows (as in ``rounds.json``)."""
        return [trial.rows for trial in self.models]

    def trial_lines(self) -> list[dict[str, list[dict]]]:
        """Each trial's lines of per-round rows, by name.

        As :meth:`lth.store.RunDir.lines` gives a run's: ``ticket`` (:meth:`trial_summaries`), and
        the lines a trial exposes beside it through a ``lines`` mapping or method (the controls of
        the ``controls`` setting, :meth:`LotteryModel.lines`; branches).
        """
        return [model_lines(trial) for trial in self.models]

    def summary(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Per line, round and metric over the trials: mean, median, min, max, std (ddof=1), 95% CI.

        A ``line`` column comes first (``ticket``; a control or branch line where every trial has
        it, see :meth:`trial_lines`). Rounds not reached by every trial are left out; see
        :func:`summarise_lines`.
        """
        if not any(self.trial_summaries()):
            raise LthError("no trial has been trained yet; call run() first")
        return summary_frame(summarise_lines(self.trial_lines(), metrics))

    def pivot(self, metrics: Sequence[str] | None = None, value: str = "mean", ci: bool = True) -> pd.DataFrame:
        """The summary as one row per line and round, one column per metric: it reads at 80 columns.

        :meth:`summary` with index (``line``, ``round``) and the metrics under short names:
        ``weights`` (mean fraction remaining), ``test`` and ``test_ci`` (mean test accuracy at early
        stop and its 95% CI half-width), ``test_end`` (final test accuracy), ``es_iter`` (early-stop
        iteration). ``metrics``: others of the summary (names in
        :data:`lth.experiments.statistics.SHORT_NAMES`); ``value``: the statistic shown (mean,
        median, min, max or std); see :func:`~lth.experiments.statistics.pivot_summary`.
        """
        return pivot_summary(self.summary(), metrics, value, ci)

    def plot_accuracy(self, ax: Axes | None = None, metric: str = "test_accuracy_at_early_stop") -> Figure:
        """The mean of ``metric`` against weights remaining, with its 95% CI band, per line.

        A lighter band shows the min-max; the lines are those of :meth:`trial_lines`: the ticket
        solid, controls dashed."""
        from lth.plots import draw_trials_accuracy

        rows = summarise_lines(self.trial_lines(), [metric])
        return draw_trials_accuracy(rows, metric=metric, ax=ax, title=f"mean over {self.trials} trials, 95% CI")
