"""The YAML description of a session: base config x grid of variations x trials.

Example::

    name: criteria-vs-actions
    base: {model: lenet-300-100, dataset: digits, rounds: 3, iterations: 300}
    grid:
      criterion: [large_final, movement]
      mask1: [rewind, signed_constant]
    trials: 2

expands to 2 x 2 = 4 experiments of 2 trials each (trial i runs with seed ``base.seed + i``).
The runs (experiments x trials) are counted before anything is built; more than
:data:`lth.experiments.limits.MAX_RUNS` are refused unless ``max_runs: N`` (or ``--max-runs N``)
raises the limit. Experiments that differ only in pruning share round 0 (the dense training)
of each trial unless ``share_trunk: false`` (or ``--no-share-trunk``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lth.config import TicketConfig, load_config_file, make_config
from lth.documents import brief
from lth.errors import LthError
from lth.experiments.limits import check_run_count, format_count


@dataclass(frozen=True)
class Experiment:
    """One cell of the grid: its label, directory name and per-trial configs."""

    name: str  # e.g. "criterion=large_final, mask1=rewind"
    slug: str  # directory name, e.g. "00-large_final-rewind"
    settings: dict[str, Any]  # the grid values of this cell
    trials: tuple[TicketConfig, ...]


class SessionSpec(BaseModel):
    """A validated session file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    base: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    trials: int = Field(default=1, ge=1)
    max_runs: int | None = Field(default=None, ge=1, strict=True)  # None: lth.experiments.limits.MAX_RUNS
    #: Experiments whose round 0 is the same dense training (only pruning differs) train it once
    #: per trial (lth.experiments.dense_trunk); false: every trial trains its own.
    share_trunk: bool = Field(default=True, strict=True)

    def count(self) -> int:
        """The number of runs (grid cells x trials), in O(number of grid keys)."""
        return math.prod(len(values) for values in self.grid.values()) * self.trials

    def experiments(self, max_runs: int | None = None) -> list[Experiment]:
        """Every grid cell with its trials' configs, all validated before anything runs.

        The runs are counted first: above ``max_runs`` (None: the file's ``max_runs``, else
        :data:`~lth.experiments.limits.MAX_RUNS`) LthError, before any config is built.
        """
        allowed = TicketConfig.model_fields
        for where, given in (("base", self.base), ("grid", self.grid)):
            for key in given:
                if key not in allowed:
                    raise LthError(
                        f"unknown config key {key!r} in the session's {where}; allowed keys: {', '.join(allowed)}"
                    )
        if not self.grid:
            raise LthError(
                "the session's grid is empty; give at least one key with a list of values "
                "(for repeated trials of one config use `lth robust`)"
            )
        for key, choices in self.grid.items():
            if not choices:
                raise LthError(f"grid key {key!r} has no values; give a non-empty list")
            if key in self.base:
                raise LthError(f"{key!r} is both in the base and in the grid; keep it in one place")
        for key in ("model", "dataset"):
            if key not in self.base and key not in self.grid:
                raise LthError(f"the session's base needs {key!r}")
        cells = math.prod(len(values) for values in self.grid.values())
        check_run_count(
            cells * self.trials,
            self.max_runs if max_runs is None else max_runs,
            f"the session has {format_count(cells)} experiments x {format_count(self.trials)} trials = ",
            "--max-runs {n} (or max_runs: {n} in the session file)",
        )
        keys = list(self.grid)
        experiments = []
        for index, values in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            settings = dict(zip(keys, values))
            name = ", ".join(f"{k}={_text(v)}" for k, v in settings.items())
            slug = "-".join([f"{index:02d}"] + [_slug(v) for v in values])
            configs = []
            base_seed = self.base.get("seed", 0)
            for trial in range(self.trials):
                values_ = {**self.base, **settings, "seed": base_seed + trial}
                values_.setdefault("name", f"{self.name or 'session'}/{slug}/trial_{trial:02d}")
                configs.append(_config(values_, name))
            experiments.append(Experiment(name, slug, settings, tuple(configs)))
        return experiments


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _slug(value: Any) -> str:
    text = _text(value)
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)[:40] or "x"


def _config(values: dict[str, Any], experiment: str) -> TicketConfig:
    from lth.experiments.ticket_search import check_config

    try:
        config = make_config(values)
        check_config(config)
        return config
    except LthError as error:
        raise LthError(f"experiment {experiment!r}: {error}") from None


def load_session_spec(path: str | Path) -> SessionSpec:
    """Read and validate a session YAML file (safe loader); dashes in keys become underscores."""
    data = load_config_file(path)
    for key in ("base", "grid"):
        if isinstance(data.get(key), dict):
            data[key] = {str(k).replace("-", "_"): v for k, v in data[key].items()}
    if isinstance(data.get("grid"), dict):
        for key, values in data["grid"].items():
            if not isinstance(values, list):
                raise LthError(f"grid key {key!r} must hold a list of values, got {brief(values)}")
    try:
        return SessionSpec(**data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise LthError(
                f"unknown session key {field!r}; allowed: name, base, grid, trials, max_runs, share_trunk"
            ) from None
        raise LthError(
            f"bad value {brief(first.get('input'))} for session key {field}: "
            f"{first['msg'].removeprefix('Value error, ')}"
        ) from None
