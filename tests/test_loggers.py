"""The optional loggers (``--log tensorboard,mlflow``): what they write is read back from
TensorBoard's event files and MLflow's store and compared with the run directory, exactly
(TensorBoard keeps float32). Absent packages are simulated through ``sys.modules``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import cli, one_line_error
from conftest import run_search
from lth import TicketConfig, find_ticket
from lth.config import make_config
from lth.errors import LthError
from lth.experiments.ticket_search import resume_ticket
from lth.loggers import check_loggers, flatten, make_loggers
from lth.loggers.base import SUMMARY_KEYS
from lth.store import RunDir

TB_HINT = "TensorBoard logging needs the tensorboard package: pip install 'lth[tensorboard]'"


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch):
    """MLflow's defaults (no tracking URI or experiment from the caller's shell), no telemetry."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def needs_tensorboard():
    pytest.importorskip("tensorboard")
    pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator


def needs_mlflow():
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    return MlflowClient


def expected_scalars(out: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as the run directory has them (metrics.csv and rounds.json per line)."""
    expected: dict[str, dict[int, float]] = {}
    lines = {"ticket": RunDir(out)} | {name: RunDir(out).control(name) for name in RunDir(out).controls()}
    for line, run in lines.items():
        prefix = "" if line == "ticket" else f"{line}/"
        for row in run.metrics():
            for name in ("loss", "accuracy"):
                tag = f"{prefix}round_{row['round']:02d}/{row['split']}/{name}"
                expected.setdefault(tag, {})[row["iteration"]] = row[name]
        for summary in run.rounds():
            for key in SUMMARY_KEYS:
                expected.setdefault(f"{line}/{key}", {})[summary["round"]] = summary[key]
            for layer, density in summary["layers"].items():
                expected.setdefault(f"{line}/layer_density/{layer}", {})[summary["round"]] = density
    return expected


def read_tensorboard(out: Path) -> tuple[dict[str, dict[int, float]], object]:
    EventAccumulator = needs_tensorboard()
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    return scalars, events


def assert_float32_equal(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]]) -> None:
    assert got.keys() == want.keys()
    for tag, points in want.items():
        assert got[tag] == {step: float(np.float32(v)) for step, v in points.items()}, tag


def mlflow_store(runs_root: Path):
    MlflowClient = needs_mlflow()
    return MlflowClient(tracking_uri=f"sqlite:///{(runs_root / 'mlflow.db').resolve().as_posix()}")


def mlflow_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value), ...]} in the order logged."""
    keys = client.get_run(run_id).data.metrics.keys()
    return {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)]
        for key in keys
    }


# ------------------------------------------------------------------ TensorBoard


def test_tensorboard_mirrors_metrics_summaries_and_config(tmp_path):
    needs_tensorboard()
    out = tmp_path / "runs" / "tb"
    result = run_search(out, rounds=2, controls=["reinit"], log=["tensorboard"])
    scalars, events = read_tensorboard(out)
    assert "reinit/round_02/test/accuracy" in scalars and "ticket/early_stop_iteration" in scalars
    assert_float32_equal(scalars, expected_scalars(out))
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.0012" in text and "controls:" in text and "- reinit" in text
    assert result.config.log == ["tensorboard"]
    assert not (out.parent / "mlflow.db").exists()


# ------------------------------------------------------------------ MLflow


def test_mlflow_mirrors_metrics_and_params(tmp_path):
    out = tmp_path / "runs" / "ml"
    needs_mlflow()
    result = run_search(out, rounds=2, controls=["reinit"], log=["mlflow"], name="ml-run")
    client = mlflow_store(out.parent)  # the default store: sqlite:///RUNS_ROOT/mlflow.db
    run_id = (out / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "ml-run"
    assert client.get_experiment(run.info.experiment_id).name == "lth"
    assert run.data.tags["lth.run_dir"] == str(out.resolve())
    assert run.data.params == {k: str(v) for k, v in flatten(result.config.model_dump()).items()}
    assert run.data.params["controls"] == "reinit" and run.data.params["lr"] == str(result.config.lr)
    want = expected_scalars(out)
    histories = mlflow_histories(client, run_id)
    assert histories.keys() == want.keys()
    for key, points in want.items():
        assert histories[key] == sorted(points.items()), key
    assert not (out / "tensorboard").exists()


def test_mlflow_follows_the_tracking_uri_and_experiment_of_the_environment(tmp_path, monkeypatch):
    MlflowClient = needs_mlflow()
    uri = f"sqlite:///{(tmp_path / 'elsewhere.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    out = tmp_path / "runs" / "env"
    run_search(out, rounds=0, log=["mlflow"])
    assert not (out.parent / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert client.get_experiment(run.info.experiment_id).name == "mine"
    assert run.info.run_name == "env" and run.data.metrics["ticket/weights_remaining"] == 1.0


def test_both_loggers_from_the_command_line(capsys, tmp_path, monkeypatch):
    """``--log tensorboard,mlflow`` through the CLI; MLflow prints nothing of its own."""
    needs_tensorboard()
    needs_mlflow()
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    out = tmp_path / "runs" / "cli"
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--log",
        "tensorboard,mlflow",
        "--rounds",
        "0",
        "--iterations",
        "20",
        "--eval-every",
        "10",
        "--device",
        "cpu",
        "--out",
        out,
        "-q",
    )
    assert rc == 0 and err == ""
    scalars, _ = read_tensorboard(out)
    assert_float32_equal(scalars, expected_scalars(out))
    run = mlflow_store(out.parent).get_run((out / "mlflow_run_id").read_text().strip())
    assert run.data.params["log"] == "tensorboard,mlflow" and run.info.status == "FINISHED"


class Crash(Exception):
    pass


def test_a_killed_run_resumes_into_the_same_mlflow_run_and_tensorboard_dir(tmp_path, monkeypatch):
    """Killed after logging round 1 but before its checkpoint: the resumed run retrains round 1
    and does not log it again; the rest goes into the same MLflow run and event directory."""
    needs_mlflow()
    needs_tensorboard()
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    config = TicketConfig(
        model="lenet-300-100",
        dataset="digits",
        iterations=60,
        eval_every=20,
        rounds=2,
        device="cpu",
        controls=["reinit"],
        log=["mlflow", "tensorboard"],
    )
    out = tmp_path / "runs" / "killed"
    calls, original = [], RunDir.write_checkpoint

    def crashing(self, state):
        calls.append(1)
        if len(calls) == 3:  # 1: start, 2: after round 0, 3: after the ticket's round 1
            raise Crash
        original(self, state)

    monkeypatch.setattr(RunDir, "write_checkpoint", crashing)
    with pytest.raises(Crash):
        find_ticket(config, out=out, progress=False)
    monkeypatch.setattr(RunDir, "write_checkpoint", original)
    client = mlflow_store(out.parent)
    run_id = (out / "mlflow_run_id").read_text().strip()
    killed = client.get_run(run_id)
    assert killed.info.status == "FAILED"
    assert "round_01/test/accuracy" in killed.data.metrics  # logged before the kill: kept

    resume_ticket(out, progress=False)
    assert (out / "mlflow_run_id").read_text().strip() == run_id
    assert len(client.search_runs([killed.info.experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    want = expected_scalars(out)
    histories = mlflow_histories(client, run_id)
    assert histories.keys() == want.keys()
    for key, points in want.items():  # round 1 as logged before the kill: equal but for its wall-clock seconds
        if key.endswith("/seconds"):
            assert dict(histories[key]).keys() == points.keys(), key
        else:
            assert dict(histories[key]) == points, key
    for key, points in histories.items():  # every value logged once, round 1's included
        assert len(points) == len(want[key]), key
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    scalars, events = read_tensorboard(out)
    assert_float32_equal(
        {k: v for k, v in scalars.items() if not k.endswith("/seconds")},
        {k: v for k, v in want.items() if not k.endswith("/seconds")},
    )
    for tag in scalars:
        assert len(events.Scalars(tag)) == len(want[tag]), tag


# ------------------------------------------------------------------ mistakes and absent packages


def test_log_names_are_split_deduplicated_and_checked():
    assert TicketConfig(model="m", dataset="d", log="tensorboard, mlflow,tensorboard").log == ["tensorboard", "mlflow"]
    assert TicketConfig(model="m", dataset="d", log="").log == []
    with pytest.raises(LthError, match=r"unknown logger 'wandb'; choose from tensorboard, mlflow"):
        make_config({"model": "m", "dataset": "d", "log": "tensorboard,wandb"})
    with pytest.raises(LthError, match="unknown logger 'wandb'"):
        check_loggers(["wandb"])


def test_unknown_logger_on_the_command_line(capsys, tmp_path):
    rc, out, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--log",
        "wandb",
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
        "-q",
    )
    line = one_line_error(rc, err)
    assert "unknown logger 'wandb'; choose from tensorboard, mlflow" in line
    assert not (tmp_path / "run").exists()


def test_missing_tensorboard_is_one_line_with_the_install_hint(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    calls = []
    monkeypatch.setattr("lth.experiments.ticket_search.shared_dataset", lambda *a, **k: calls.append(1))
    with pytest.raises(LthError) as error:
        run_search(tmp_path / "api", log=["tensorboard"])
    assert str(error.value) == TB_HINT
    rc, out, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--log",
        "tensorboard",
        "--out",
        tmp_path / "cli",
        "--device",
        "cpu",
        "-q",
    )
    assert one_line_error(rc, err) == f"lth: error: {TB_HINT}"
    assert calls == []  # refused before loading data, let alone training
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


@pytest.mark.parametrize(
    "module, package", [("mlflow", "mlflow"), ("sqlalchemy", "sqlalchemy"), ("alembic", "alembic")]
)
def test_missing_mlflow_packages_are_named_with_the_install_hint(capsys, tmp_path, monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(LthError) as error:
        check_loggers(["mlflow"])
    hint = str(error.value)
    assert re.fullmatch(r"MLflow logging needs the [a-z, ]+ packages?: pip install 'lth\[mlflow\]'", hint), hint
    assert package in hint.split(":")[0]
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--log",
        "mlflow",
        "--out",
        tmp_path / "cli",
        "--device",
        "cpu",
        "-q",
    )
    assert one_line_error(rc, err) == f"lth: error: {hint}"
    assert not (tmp_path / "cli").exists()


def test_logging_needs_a_run_directory():
    needs_tensorboard()
    with pytest.raises(LthError, match="needs a run directory"):
        run_search(None, rounds=0, log=["tensorboard"])


def test_no_logger_imports_nothing(tmp_path, monkeypatch):
    """Without --log no backend is touched: with every backend package made unimportable the run works."""
    for module in ("mlflow", "tensorboard", "torch.utils.tensorboard", "sqlalchemy", "alembic"):
        monkeypatch.setitem(sys.modules, module, None)
    assert make_loggers([], None, {}) == []
    result = run_search(tmp_path / "runs" / "plain", rounds=0, iterations=20)
    assert result.config.log == [] and len(result.rounds) == 1
    assert not (tmp_path / "runs" / "plain" / "tensorboard").exists()
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_resumed_run_whose_mlflow_run_is_gone_replays_its_rounds_into_a_new_one(tmp_path, monkeypatch):
    """Round 0 (recorded before the kill) is replayed from the checkpoint; round 1 is retrained and logged."""
    needs_mlflow()
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    config = TicketConfig(
        model="lenet-300-100",
        dataset="digits",
        iterations=40,
        eval_every=20,
        rounds=1,
        device="cpu",
        controls=["reinit"],
        log=["mlflow"],
    )
    out = tmp_path / "runs" / "moved"
    calls, original = [], RunDir.write_checkpoint

    def crashing(self, state):
        calls.append(1)
        if len(calls) == 3:  # after the ticket's round 1, before its control
            raise Crash
        original(self, state)

    monkeypatch.setattr(RunDir, "write_checkpoint", crashing)
    with pytest.raises(Crash):
        find_ticket(config, out=out, progress=False)
    monkeypatch.setattr(RunDir, "write_checkpoint", original)
    client = mlflow_store(out.parent)
    old_id = (out / "mlflow_run_id").read_text().strip()
    client.delete_run(old_id)  # gone, as if deleted in the UI or logged to another store
    resume_ticket(out, progress=False)
    run_id = (out / "mlflow_run_id").read_text().strip()
    assert run_id != old_id and client.get_run(run_id).info.status == "FINISHED"
    want = expected_scalars(out)
    histories = mlflow_histories(client, run_id)
    assert histories.keys() == want.keys()
    for key, points in want.items():
        assert sorted(histories[key]) == sorted(points.items()), key  # round 0 replayed, each point once
