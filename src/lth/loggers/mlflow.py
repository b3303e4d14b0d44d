"""MLflow: one MLflow run per lth run, in experiment ``lth`` (or ``$MLFLOW_EXPERIMENT_NAME``).

Where it goes: wherever ``$MLFLOW_TRACKING_URI`` says when it is set (MLflow's own default
behaviour); else the SQLite store ``sqlite:///RUNS_ROOT/mlflow.db`` in the runs root
(``$LTH_RUNS_ROOT``, else ``runs/``; the same for runs written elsewhere with ``--out``): view it with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``. SQLite is MLflow 3's default kind of
store; its old ``./mlruns`` file store is refused unless ``MLFLOW_ALLOW_FILE_STORE`` is set.

The MLflow run is named after the lth run, tagged ``lth.run_dir``, holds the flattened config
as params and the metrics under the keys of :mod:`lth.loggers.base`, with the same steps.
Its id is kept in ``RUN_DIR/mlflow_run_id``: a resumed lth run goes on logging into the same
MLflow run (or, if that run is not in the store, into a new one that gets every round
recorded so far).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lth.atomic import atomic_write_text
from lth.errors import LthError
from lth.loggers.base import flatten, round_scalars

EXPERIMENT = "lth"
RUN_ID_FILE = "mlflow_run_id"
STORE_FILE = "mlflow.db"
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_STATUS = {"complete": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_PARAM_BATCH = 100  # ... and of params


def require() -> None:
    """Raise LthError with the install hint unless MLflow logging can work here."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    needs_sql = not uri or uri.split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES
    missing = []
    for module, package in (("mlflow.tracking", "mlflow"), ("sqlalchemy", "sqlalchemy"), ("alembic", "alembic")):
        if package != "mlflow" and not needs_sql:
            continue
        try:
            with _quiet():
                __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        what = f"the {missing[0]} package" if len(missing) == 1 else f"the {', '.join(missing)} packages"
        raise LthError(f"MLflow logging needs {what}: pip install 'lth[mlflow]'")


def tracking_uri(run_dir: Path) -> str | None:
    """None (MLflow's default) when ``$MLFLOW_TRACKING_URI`` is set, else the SQLite store in the runs
    root (beside the results index, wherever the run itself is written)."""
    from lth.store.run_dir import runs_root

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    root = runs_root().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + (root / STORE_FILE).as_posix()


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide MLflow's and Alembic's INFO lines on creating a store and SQLAlchemy's deprecation notes."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class MlflowLogger:
    """Mirrors one lth run into one MLflow run (see the module docstring for where)."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        require()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        uri = tracking_uri(run_dir)
        shown = uri or os.environ.get("MLFLOW_TRACKING_URI")
        id_file = run_dir / RUN_ID_FILE
        try:
            with _quiet():
                self.client = client = MlflowClient(tracking_uri=uri)
                self.run_id = id_file.read_text().strip() if id_file.is_file() else ""
                self.fresh = not self.run_id or not self._exists(self.run_id)
                if self.fresh:
                    experiment = self._experiment_id(os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)
                    name = config.get("name") or run_dir.name
                    run = client.create_run(experiment, run_name=name, tags={"lth.run_dir": str(run_dir.resolve())})
                    self.run_id = run.info.run_id
                    atomic_write_text(id_file, self.run_id + "\n")
                    self._log_params(config)
                else:
                    client.update_run(self.run_id, status="RUNNING")
        except MlflowException as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LthError(f"cannot log to the MLflow store {shown!r}: {first}") from None

    def _exists(self, run_id: str) -> bool:
        """Whether the store holds this run, not deleted (else a resumed lth run starts a new one)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in flatten(config).items()]
        for start in range(0, len(params), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + _PARAM_BATCH])

    def log_round(self, line: str, summary: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(tag, value, now, step) for tag, value, step in round_scalars(line, summary, metrics)]
        for start in range(0, len(batch), _BATCH):
            self.client.log_batch(self.run_id, metrics=batch[start : start + _BATCH])

    def close(self, status: str = "complete") -> None:
        self.client.set_terminated(self.run_id, status=_STATUS.get(status, "FAILED"))
