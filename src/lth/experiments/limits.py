"""How big a study may be: runs (experiments x trials) are counted before anything is built.

A study above :data:`MAX_RUNS` runs is refused unless the user raises the limit
(``--max-runs N`` on ``lth robust`` / ``lth session``, ``max_runs:`` in a session file,
``max_runs=N`` for :class:`lth.LotteryRobust` and :class:`lth.LotterySession`): a typo such as
``--trials 100000000`` or a grid of hundreds of thousands of cells then fails in one line at
once instead of filling the memory while the study is being set up.
"""

from __future__ import annotations

import math
from typing import Any

from lth.errors import LthError

#: The default largest number of runs (experiments x trials) of one study.
MAX_RUNS = 10_000


def _positive(value: Any, option: str, meaning: str = "") -> int:
    """``value`` if it is an integer >= 1, else LthError naming ``option`` (a CLI flag or an argument)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = format_count(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)[:80]
        if option.startswith("--"):  # click gave an int
            raise LthError(f"{option} must be at least 1{meaning}, got {shown}")
        raise LthError(f"{option} must be an integer >= 1{meaning}, got {shown}")
    return value


def check_max_runs(value: Any, option: str = "max_runs") -> int:
    """``value`` as a limit of runs (an integer >= 1; None: :data:`MAX_RUNS`); LthError otherwise."""
    return MAX_RUNS if value is None else _positive(value, option, " (the most runs a study may hold)")


def check_trials(value: Any, option: str = "trials") -> int:
    """``value`` as a number of trials (an integer >= 1); LthError otherwise."""
    return _positive(value, option)


def format_count(number: int) -> str:
    """``number`` for a message: as is, or as a power of ten when enormous (str() of an int of
    thousands of digits is slow, and refused by Python above 4,300 digits)."""
    size = abs(number)
    if size < 10**15:
        return str(number)
    exponent = int(math.log10(size))  # a float estimate, made exact
    exponent += (10 ** (exponent + 1) <= size) - (10**exponent > size)
    return f"{'-' if number < 0 else ''}about 10^{exponent}"


def check_run_count(runs: int, limit: int | None, what: str, raise_with: str) -> None:
    """Refuse a study of ``runs`` runs above ``limit`` (None: :data:`MAX_RUNS`).

    ``what`` describes the study ("the session has 64000 experiments x 10 trials = "),
    ``raise_with`` how to raise the limit, with ``{n}`` standing for the count.
    """
    limit = check_max_runs(limit)
    if runs > limit:
        n = str(runs) if runs < 10**15 else "N"
        raise LthError(
            f"{what}{format_count(runs)} runs, above the limit of {limit} runs; "
            f"if you mean it, raise the limit with {raise_with.format(n=n)}"
        )
