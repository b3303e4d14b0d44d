"""Progress output: live bars on a terminal, plain lines (no carriage returns) in logs."""

from __future__ import annotations

import io

import pytest

from lth import progress
from lth.models import build_model
from lth.progress import LogLines, progress_bar
from lth.training import OptimizerSettings, Trainer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_training_logs_one_plain_line_when_not_at_a_terminal(digits, capsys):
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=0)
    Trainer(digits, 30, OptimizerSettings("adam", 1e-3), seed=0, eval_every=20, progress=True).train(
        model, None, 0, 100, description="round 0/3"
    )
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("round 0/3: 100/100 it [") and "val_acc=" in lines[0]


def test_log_lines_while_running_at_most_every_interval_and_writes_between_them(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line at every refresh
    bar = LogLines(total=3, desc="study", unit="run", file=out, mininterval=0)
    for _ in range(3):
        bar.update(1)
        bar.write("one trial done", file=out)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    assert [line.split(" [")[0] for line in text.splitlines()] == [
        "study: 0/3 run",
        "study: 1/3 run",
        "one trial done",
        "study: 2/3 run",
        "one trial done",
        "study: 3/3 run",
        "one trial done",
    ]  # each state once: no repeat after a write or at close

    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)  # a long wait: only the final line
    out = io.StringIO()
    bar = LogLines(total=5, desc="round", unit="it", file=out, mininterval=0)
    bar.update(5)
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("round: 5/5 it [")


@pytest.mark.parametrize("terminal", [True, False])
def test_live_bars_on_a_terminal_only(monkeypatch, terminal):
    monkeypatch.setattr("sys.stderr", Terminal() if terminal else io.StringIO())
    bar = progress_bar(total=2, file=io.StringIO())
    assert isinstance(bar, LogLines) is not terminal
    bar.close()
