"""Optional loggers that mirror a run's config and metrics to TensorBoard and/or MLflow.

``TicketConfig.log`` (``--log tensorboard,mlflow``) names them. Each backend imports its
package only when asked for, so ``import lth`` never needs them and a run without loggers
costs nothing. A missing package is reported (with the ``pip install 'lth[...]'`` hint) when
the search is built, before any training.

A round is logged when it is recorded in the run directory, so rounds logged before a kill
are kept; a resumed run reopens its loggers. If the kill falls between logging a round and
the next checkpoint, the resumed run retrains and logs that round again: the same values at
the same steps (MLflow then holds each of those points twice; harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.config import LOGGER_NAMES
from lth.errors import LthError
from lth.loggers.base import TICKET, Logger, flatten, round_scalars

if TYPE_CHECKING:
    from lth.store import RunDir

__all__ = [
    "LOGGER_NAMES",
    "TICKET",
    "Logger",
    "check_loggers",
    "close_loggers",
    "flatten",
    "make_loggers",
    "round_scalars",
]


def _backend(name: str) -> tuple[Callable[[], None], Callable[[Path, Mapping[str, Any]], Logger]]:
    """(availability check, constructor) of one backend; imports only that backend's module."""
    if name == "tensorboard":
        from lth.loggers import tensorboard

        return tensorboard.require, tensorboard.TensorBoardLogger
    if name == "mlflow":
        from lth.loggers import mlflow

        return mlflow.require, mlflow.MlflowLogger
    raise LthError(f"unknown logger {name!r}; choose from {', '.join(LOGGER_NAMES)}")


def check_loggers(names: Iterable[str]) -> None:
    """Raise LthError for an unknown name or a backend whose package is not installed."""
    for name in names:
        _backend(name)[0]()


def make_loggers(names: Iterable[str], run_dir: RunDir | Path | None, config: Mapping[str, Any]) -> list[Logger]:
    """Open the named loggers for the run in ``run_dir`` (a new run, or a resumed one).

    ``config`` is the run's resolved config (a dict); a fresh logger records it at once.
    Nothing is imported and ``[]`` is returned when ``names`` is empty.
    """
    names = list(names)
    if not names:
        return []
    if run_dir is None:
        raise LthError(f"logging to {' and '.join(names)} needs a run directory; give the search an output directory")
    check_loggers(names)
    path = Path(run_dir)
    opened: list[Logger] = []
    try:
        for name in names:
            opened.append(_backend(name)[1](path, config))
    except BaseException:
        close_loggers(opened, "failed")
        raise
    return opened


def close_loggers(loggers: Iterable[Logger], status: str = "complete") -> None:
    """Close every logger; on a failed or killed run, errors while closing are ignored."""
    for logger in loggers:
        if status == "complete":
            logger.close(status)
            continue
        try:
            logger.close(status)
        except Exception:  # noqa: BLE001  (never hide the error that ended the run)
            pass
