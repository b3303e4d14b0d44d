"""TensorBoard: event files in ``RUN_DIR/tensorboard/`` (view with ``tensorboard --logdir RUN_DIR``).

Scalars are tagged as described in :mod:`lth.loggers.base`; the config goes in as the text
``config`` and as hparams (so the HParams dashboard lists the run). A resumed run appends a
new event file to the same directory. The writer is flushed after every round, so a killed
run loses nothing it has recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lth.errors import LthError
from lth.loggers.base import TICKET, flatten, round_scalars

HINT = "TensorBoard logging needs the tensorboard package: pip install 'lth[tensorboard]'"
SUBDIR = "tensorboard"


def require() -> None:
    """Raise LthError with the install hint unless TensorBoard logging can work."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
    except ImportError:
        raise LthError(HINT) from None


class TensorBoardLogger:
    """One ``SummaryWriter`` per (resumed) run, writing to ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        require()
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(run_dir) / SUBDIR
        self.fresh = not any(log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(log_dir))
        if self.fresh:
            self._log_config(config)

    def _log_config(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        text = yaml.safe_dump(dict(config), sort_keys=False)
        self.writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)
        values = {k: v for k, v in flatten(config).items() if isinstance(v, (bool, int, float, str))}
        metrics = {f"{TICKET}/{key}": None for key in ("test_accuracy_at_early_stop", "weights_remaining")}
        file_writer = self.writer.file_writer
        assert file_writer is not None  # a SummaryWriter has one from its creation until closed
        for summary in hparams(values, metrics):
            file_writer.add_summary(summary)
        self.writer.flush()

    def log_round(self, line: str, summary: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> None:
        for tag, value, step in round_scalars(line, summary, metrics):
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self, status: str = "complete") -> None:
        self.writer.close()
