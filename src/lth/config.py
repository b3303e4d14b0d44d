"""Typed, validated run configuration: defaults, duration parsing and YAML/CLI merging."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from lth.documents import brief, count_values
from lth.errors import LthError

MAX_CONFIG_VALUES = 100_000  # a config or session file holds far fewer; more is an alias bomb

#: The largest training budget of one round, in iterations: a typo such as ``--iterations
#: 99999999999999999999`` (or ``--epochs 1e12``) is refused at once instead of running for ever.
MAX_ITERATIONS = 10**9
#: The most pruning rounds of one search (at 20% a round, 50 rounds leave 0.001% of the weights).
MAX_ROUNDS = 10_000
#: The seeds ``torch.manual_seed`` accepts: -2^63 to 2^64-1.
SEED_RANGE = (-(2**63), 2**64 - 1)
#: The largest float32 value: a weight magnitude (``constant``, ``jitter_sd``) beyond it is infinite.
FLOAT32_MAX = 3.4028234663852886e38
CONTROL_NAMES = ("reinit", "random-prune")
#: The loggers ``log`` (``--log``) may name; :mod:`lth.loggers` implements them.
LOGGER_NAMES = ("tensorboard", "mlflow")
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]  # prune rates and momentum: [0, 1)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(it|ep)?\s*$")
_T = TypeVar("_T")


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` if ``torch.manual_seed`` accepts it (an integer from -2^63 to 2^64-1); LthError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise LthError(
            f"{name} must be an integer from -2^63 to 2^64-1 (what torch.manual_seed accepts), got {brief(seed)}"
        )
    return seed


def check_budget(iterations: int, what: str) -> int:
    """``iterations`` (a round's budget) if at most :data:`MAX_ITERATIONS`; else LthError naming
    ``what`` gave it (e.g. ``"--epochs 1e+12"``)."""
    if iterations > MAX_ITERATIONS:
        digits = len(str(iterations))
        count = str(iterations) if digits <= 15 else f"about 10^{digits - 1}"
        raise LthError(
            f"{what} is {count} iterations per round; at most {MAX_ITERATIONS} iterations per round "
            "are allowed (lth.config.MAX_ITERATIONS)"
        )
    return iterations


def parse_duration(text: str | int | float, iterations_per_epoch: int, budget: int | None = None) -> int:
    """Turn ``'500it'``, ``'2ep'``, ``500`` or a fraction like ``'0.05'`` (of ``budget``) into iterations."""
    match = _DURATION.match(str(text))
    if not match:
        raise LthError(
            f"cannot read duration {text!r}; write iterations ('500it'), epochs ('2ep') "
            "or a fraction of the budget ('0.05')"
        )
    value, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(value * max(1, iterations_per_epoch)):
        raise LthError(f"duration {brief(text)} is too large; durations must be finite")
    if unit == "ep":
        return int(round(value * iterations_per_epoch))
    if unit == "it" or value >= 1 or value == 0:
        if not value.is_integer():
            raise LthError(f"duration {text!r} is neither a whole number of iterations nor a fraction below 1")
        return int(value)
    if budget is None:
        raise LthError(f"fraction {text!r} needs a training budget to be relative to")
    return int(round(value * budget))


class TicketConfig(BaseModel):
    """Everything that defines a ticket search. ``None`` means: take the model's paper recipe."""

    # allow_inf_nan=False: every float key (lr, momentum, prune rates, epochs...) refuses inf and nan.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    model: str
    dataset: str
    data_dir: str | None = None
    rounds: NonNegativeInt = 15
    prune_rate: Rate | None = None
    prune_rate_fc: Rate | None = None
    prune_rate_conv: Rate | None = None
    prune_rate_output: Rate | None = None
    scope: Literal["layerwise", "global"] | None = None
    ignore_layers: list[str] = []
    prune_biases: bool = False
    criterion: str = "large_final"
    w_final: str = "end"
    mask1: str = "rewind"
    keep_sign: bool = False
    rescale: bool = False
    jitter_sd: NonNegativeFloat = 0.01
    constant: PositiveFloat | None = None
    mask0: str = "zero"
    one_shot: bool = False
    keep: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    controls: list[str] = []
    init_mask: str | None = None
    prune_at_init: str | None = None  # prune at initialisation first: snip | grasp | synflow | magnitude | random
    init_keep: Annotated[float, Field(gt=0.0, le=1.0)] | None = None  # ... keeping this fraction
    init_ablation: Literal["none", "shuffle", "reinit", "invert"] = "none"  # ... with this sanity check
    prune_iterations: PositiveInt | None = None  # ... in this many iterations [synflow 100, others 1]
    score_batches: PositiveInt | None = None  # ... scored on this many training batches [10] (snip, grasp)
    rewind: str = "0"
    iterations: PositiveInt | None = None
    epochs: PositiveFloat | None = None
    batch_size: PositiveInt | None = None
    optimizer: Literal["adam", "sgd"] | None = None
    lr: PositiveFloat | None = None
    momentum: Rate | None = None
    nesterov: bool | None = None
    weight_decay: NonNegativeFloat | None = None
    milestones: list[str] | None = None
    gamma: PositiveFloat | None = None
    warmup: str | None = None
    seed: int = 0
    eval_every: PositiveInt = 100
    checkpoint_every: NonNegativeInt = 1000  # iterations between in-round checkpoints (0: rounds only)
    vectorize: str = "auto"  # auto | off | K: train controls (and a study's trials) side by side, vectorised
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast of forward passes (weights stay fp32)
    compile: bool = False  # torch.compile the forward pass
    channels_last: bool = False  # NHWC layout for conv nets
    log: list[str] = []  # loggers mirroring metrics and config: tensorboard, mlflow (optional extras)
    name: str | None = None

    @field_validator("controls", "log", "milestones", "ignore_layers", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        """Lists may be given as comma-separated strings ("reinit,random-prune")."""
        if isinstance(v, str):
            return [part for part in v.replace(" ", "").split(",") if part]
        return v

    @field_validator("controls")
    @classmethod
    def _known_controls(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in CONTROL_NAMES:
                raise ValueError(f"unknown control {name!r}; choose from {', '.join(CONTROL_NAMES)}")
        return list(dict.fromkeys(v))

    @field_validator("log")
    @classmethod
    def _known_loggers(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in LOGGER_NAMES:
                raise ValueError(f"unknown logger {name!r}; choose from {', '.join(LOGGER_NAMES)}")
        return list(dict.fromkeys(v))

    @field_validator("vectorize", mode="before")
    @classmethod
    def _vectorize(cls, v: Any) -> Any:
        text = str(v).strip().lower()
        if text in ("auto", "off") or (text.isdigit() and int(text) >= 1):
            return text
        raise ValueError("use auto, off or a number of networks >= 1")

    @field_validator("rewind", "warmup", mode="before")
    @classmethod
    def _to_str(cls, v: Any) -> Any:
        return None if v is None else str(v)

    @field_validator("prune_at_init")
    @classmethod
    def _known_method(cls, v: str | None) -> str | None:
        from lth.init_pruning.prune import METHOD_NAMES

        if v is not None and v not in METHOD_NAMES:
            raise ValueError(f"unknown pruning-at-init method {v!r}; choose from {', '.join(METHOD_NAMES)}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        if not SEED_RANGE[0] <= v <= SEED_RANGE[1]:
            raise ValueError("must be an integer from -2^63 to 2^64-1 (what torch.manual_seed accepts)")
        return v

    @field_validator("iterations")
    @classmethod
    def _sane_budget(cls, v: int | None) -> int | None:
        if v is not None and v > MAX_ITERATIONS:
            raise ValueError(f"at most {MAX_ITERATIONS} iterations per round (lth.config.MAX_ITERATIONS)")
        return v

    @field_validator("rounds")
    @classmethod
    def _sane_rounds(cls, v: int) -> int:
        if v > MAX_ROUNDS:
            raise ValueError(f"at most {MAX_ROUNDS} pruning rounds (lth.config.MAX_ROUNDS)")
        return v

    @field_validator("constant", "jitter_sd")
    @classmethod
    def _float32_magnitude(cls, v: float | None) -> float | None:
        if v is not None and v > FLOAT32_MAX:
            raise ValueError(f"must be at most {FLOAT32_MAX!r} (the largest float32 weight)")
        return v

    @model_validator(mode="after")
    def _budget(self) -> TicketConfig:
        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give either iterations or epochs, not both")
        if self.one_shot and self.keep is None:
            raise ValueError("one-shot pruning needs the fraction to keep (--keep F)")
        if self.keep is not None and not self.one_shot:
            raise ValueError("--keep sets the fraction kept by one-shot pruning; add --one-shot")
        self._check_prune_at_init()
        if self.precision != "fp32" and self.vectorize not in ("auto", "off", "1"):
            raise ValueError(f"--precision {self.precision} trains networks one at a time; use --vectorize off or auto")
        return self

    def _check_prune_at_init(self) -> None:
        at_init = {
            "init_keep": self.init_keep,
            "prune_iterations": self.prune_iterations,
            "score_batches": self.score_batches,
            "init_ablation": None if self.init_ablation == "none" else 1,
        }
        if self.prune_at_init is None:
            given = [key for key, value in at_init.items() if value is not None]
            if given:
                raise ValueError(
                    f"--{given[0].replace('_', '-')} applies to pruning at initialisation; add --prune-at-init METHOD"
                )
            return
        if self.init_keep is None:
            raise ValueError("pruning at initialisation needs the fraction to keep (--init-keep F)")
        if self.init_mask is not None:
            raise ValueError("give either --init-mask or --prune-at-init, not both: both set the round-0 mask")
        from lth.init_pruning.prune import needs_data

        if self.score_batches is not None and not needs_data(self.prune_at_init):
            raise ValueError(
                f"--score-batches applies to snip and grasp, which score with data; {self.prune_at_init} needs none"
            )

    def acceleration(self) -> Any:
        """The :class:`~lth.training.Acceleration` these settings ask for."""
        from lth.training.acceleration import Acceleration

        return Acceleration(self.precision, self.compile, self.channels_last)

    def with_recipe(self, recipe: Any) -> TicketConfig:
        """Fill every unset training/pruning field from a model's paper recipe."""
        values = self.model_dump()
        fill = {
            "batch_size": recipe.batch_size,
            "optimizer": recipe.optimizer,
            "lr": recipe.lr,
            "momentum": recipe.momentum,
            "nesterov": recipe.nesterov,
            "weight_decay": recipe.weight_decay,
            "milestones": list(recipe.milestones),
            "gamma": recipe.gamma,
            "warmup": recipe.warmup,
            "scope": recipe.scope,
            "prune_rate": recipe.prune_rate,
        }
        # A group rate equal to the recipe's (or to --prune-rate) is what a config with its recipe
        # already filled in holds (a run's config.yaml, read back on resume): not a user's choice.
        explicit_group_rates = any(
            values[k] is not None and values[k] not in (getattr(recipe, k), values["prune_rate"])
            for k in ("prune_rate_fc", "prune_rate_conv", "prune_rate_output")
        )
        scope = values["scope"] or recipe.scope
        if scope == "global" and explicit_group_rates:
            raise LthError(
                "per-group prune rates (--prune-rate-fc/-conv/-output) apply to --scope layerwise only; "
                "with --scope global give --prune-rate"
            )
        if values["prune_rate"] is not None:
            # --prune-rate applies to every group not given a rate of its own.
            for key in ("prune_rate_fc", "prune_rate_conv", "prune_rate_output"):
                if values[key] is None:
                    values[key] = values["prune_rate"]
        fill.update(
            prune_rate_fc=recipe.prune_rate_fc,
            prune_rate_conv=recipe.prune_rate_conv,
            prune_rate_output=recipe.prune_rate_output,
        )
        for key, default in fill.items():
            if values[key] is None:
                values[key] = default
        if values["one_shot"]:
            # A single prune of the dense net to the fraction kept, in every pruned layer.
            values["rounds"] = 1
            rate = 1.0 - values["keep"]
            for key in ("prune_rate", "prune_rate_fc", "prune_rate_conv", "prune_rate_output"):
                values[key] = rate
        if values["iterations"] is None and values["epochs"] is None:
            amount, unit = _split_budget(recipe.budget)
            values["iterations" if unit == "it" else "epochs"] = int(amount) if unit == "it" else amount
        return TicketConfig(**values)

    def budget_iterations(self, iterations_per_epoch: int) -> int:
        """The training budget of one round, in iterations.

        ``iterations``, or ``epochs`` times ``iterations_per_epoch`` (at least 1); LthError when
        neither is set or the budget is above :data:`MAX_ITERATIONS`.
        """
        if self.iterations is not None:
            return self.iterations
        if self.epochs is None:
            raise LthError("no training budget: give --iterations or --epochs")
        return check_budget(max(1, int(round(self.epochs * iterations_per_epoch))), f"--epochs {self.epochs:g}")


def _split_budget(budget: str) -> tuple[float, str]:
    match = _DURATION.match(budget)
    if not match:
        raise ValueError(f"bad recipe budget {budget!r}")
    return float(match.group(1)), match.group(2) or "it"


def validation_message(error: ValidationError) -> str:
    """One line naming the first bad field, its value and what is allowed."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(TicketConfig.model_fields)
        return f"unknown config key {field!r}; allowed keys: {allowed}"
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across several keys: its message names them
        return message
    return f"bad value {brief(first.get('input'))} for {field}: {message}"  # bounded: the input may be huge


def resolved(value: _T | None, key: str) -> _T:
    """``value``, the setting ``key`` of a config whose model recipe is filled in.

    :meth:`TicketConfig.with_recipe` (hence :func:`lth.experiments.ticket_search.check_config`)
    sets every recipe key (``batch_size``, ``optimizer``, ``lr``, ``scope``, the prune rates...),
    so a resolved config holds no None there: this states that invariant, for readers and for the
    type checker.
    """
    assert value is not None, f"config key {key!r} is unset; fill in the model's recipe first (with_recipe)"
    return value


def make_config(values: dict[str, Any]) -> TicketConfig:
    try:
        return TicketConfig(**values)
    except ValidationError as error:
        raise LthError(validation_message(error)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (safe loader); keys use underscores or dashes."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LthError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise LthError(f"config file {str(path)!r} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise LthError(f"config file {str(path)!r} is not a text (YAML) file") from None
    except OSError as error:
        raise LthError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise LthError(f"config file {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    if data is None:
        return {}
    if count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:  # YAML aliases nested into a "billion laughs"
        raise LthError(
            f"config file {str(path)!r} expands to more than {MAX_CONFIG_VALUES} values through YAML "
            "aliases; write the values out"
        )
    if not isinstance(data, dict):
        raise LthError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}
