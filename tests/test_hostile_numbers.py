"""Hostile numbers and a full disk (issue 13, items 5 and 9).

Non-finite values, seeds beyond 64 bits and absurd budgets are refused in one line before
anything is written; a warmup longer than the budget and a layer pruned empty are warned
about; a diverging training stops naming the round and keeps the earlier rounds; no JSON lth
writes holds NaN or Infinity; a full disk ends in one line, leaves the previous checkpoint
valid and the run resumable, bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_helpers import cli, one_line_error
from lth import LotteryModel, LotteryRobust, LotterySession, LthError, TicketConfig
from lth.config import make_config, parse_duration
from lth.jsonio import dumps
from lth.store import RunDir

BASE = ["--iterations", 30, "--rounds", 0, "--eval-every", 10, "--device", "cpu", "-q"]
FAST = dict(iterations=30, eval_every=10, device="cpu", progress=False)


def find(capsys, out: Path, *args):
    """``lth find-ticket lenet-300-100 digits ARGS --out OUT`` (BASE flags first, ARGS override them)."""
    return cli(capsys, "find-ticket", "lenet-300-100", "digits", *BASE, *args, "--out", out)


def strict_json(text: str):
    """Parse ``text`` as standard JSON: NaN and Infinity are refused."""

    def refuse(word: str):
        raise AssertionError(f"non-standard JSON constant {word}")

    return json.loads(text, parse_constant=refuse)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])


# ------------------------------------------------------------------ non-finite values, CLI

NON_FINITE = [
    (["--lr", "inf"], "bad value inf for lr: Input should be a finite number"),
    (["--lr", "nan"], "bad value nan for lr: Input should be a finite number"),
    (["--weight-decay", "inf"], "bad value inf for weight_decay: Input should be a finite number"),
    (["--gamma", "inf"], "bad value inf for gamma: Input should be a finite number"),
    (["--momentum", "nan", "--optimizer", "sgd"], "bad value nan for momentum: Input should be a finite number"),
    (["--jitter-sd", "inf", "--mask1", "jitter"], "bad value inf for jitter_sd: Input should be a finite number"),
    (["--constant", "inf", "--mask1", "constant"], "bad value inf for constant: Input should be a finite number"),
    (["--prune-rate", "nan"], "bad value nan for prune_rate: Input should be a finite number"),
    (["--prune-rate-fc", "-inf"], "bad value -inf for prune_rate_fc: Input should be a finite number"),
    (["--keep", "nan", "--one-shot"], "bad value nan for keep: Input should be a finite number"),
    (["--epochs", "inf", "--iterations", None], "bad value inf for epochs: Input should be a finite number"),
    (
        ["--constant", "1e308", "--rescale", "--mask1", "constant"],
        "bad value 1e+308 for constant: must be at most 3.4028234663852886e+38 (the largest float32 weight)",
    ),
    (
        ["--jitter-sd", "1e39", "--mask1", "jitter"],
        "bad value 1e+39 for jitter_sd: must be at most 3.4028234663852886e+38 (the largest float32 weight)",
    ),
    (
        ["--seed", "99999999999999999999999"],
        "bad value 99999999999999999999999 for seed: must be an integer from -2^63 to 2^64-1 (what torch.manual_seed "
        "accepts)",
    ),
    (["--seed", str(-(2**63) - 1)], f"bad value {-(2**63) - 1} for seed: must be an integer from -2^63 to 2^64-1"),
    (
        ["--iterations", "99999999999999999999"],
        "bad value 99999999999999999999 for iterations: at most 1000000000 iterations per round",
    ),
    (
        ["--rounds", "99999999999999999999"],
        "bad value 99999999999999999999 for rounds: at most 10000 pruning rounds (lth.config.MAX_ROUNDS)",
    ),
    (
        ["--epochs", "1e12", "--iterations", None],
        "--epochs 1e+12 is 18000000000000 iterations per round; at most 1000000000 iterations per round are allowed",
    ),
    (["--rewind", "1" + "0" * 400 + "ep"], "is too large; durations must be finite"),
]


def _argv(args: list) -> list:
    """BASE with ARGS applied: ``[flag, None]`` removes the flag from BASE."""
    base = list(BASE)
    extra = []
    i = 0
    while i < len(args):
        if i + 1 < len(args) and args[i + 1] is None:
            j = base.index(args[i])
            del base[j : j + 2]
            i += 2
            continue
        extra.append(args[i])
        i += 1
    return base + extra


@pytest.mark.parametrize("args, message", NON_FINITE, ids=[" ".join(map(str, a))[:40] for a, _ in NON_FINITE])
def test_cli_refuses_hostile_numbers(capsys, tmp_path, args, message):
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *_argv(args), "--out", out)
    assert message in one_line_error(rc, err)
    assert not out.exists()


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("lr", ".inf", "bad value inf for lr: Input should be a finite number"),
        ("weight_decay", ".nan", "bad value nan for weight_decay: Input should be a finite number"),
        ("seed", "99999999999999999999999", "bad value 99999999999999999999999 for seed"),
        ("iterations", "99999999999999999999", "at most 1000000000 iterations per round"),
        ("prune-rate", ".nan", "bad value nan for prune_rate: Input should be a finite number"),
    ],
)
def test_yaml_config_refuses_hostile_numbers(capsys, tmp_path, key, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(f"{key}: {text}\n")
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", "--config", config, "--out", out)
    assert message in one_line_error(rc, err)
    assert not out.exists()


def test_python_config_refuses_non_finite_values(tmp_path):
    with pytest.raises(LthError, match="bad value inf for lr: Input should be a finite number"):
        make_config(dict(model="lenet-300-100", dataset="digits", lr=float("inf")))
    config = TicketConfig(model="lenet-300-100", dataset="digits")
    with pytest.raises(Exception, match="finite number"):
        config.gamma = float("nan")  # validate_assignment: the refusal holds after construction too


def test_parse_duration_refuses_overflowing_durations():
    with pytest.raises(LthError, match="is too large; durations must be finite"):
        parse_duration("1" + "0" * 400, 10)
    assert parse_duration("2ep", 10) == 20


def test_extreme_seeds_within_range_run(capsys, tmp_path):
    """Both ends of torch's seed range work, with controls (whose seeds derive from the run's)."""
    for seed in (2**64 - 1, -(2**63)):
        out = tmp_path / f"run{seed}"
        rc, _, err = find(
            capsys,
            out,
            "--seed",
            seed,
            "--rounds",
            1,
            "--iterations",
            10,
            "--controls",
            "reinit,random-prune",
            "--vectorize",
            "off",
        )
        assert rc == 0, err
        assert RunDir(out).status()["status"] == "complete"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["supermask", "train", "lenet-300-100", "digits", "--iterations", 20, "--seed", "99999999999999999999999"],
            "--seed must be an integer from -2^63 to 2^64-1 (what torch.manual_seed accepts), "
            "got 99999999999999999999999",
        ),
        (
            ["supermask", "train", "lenet-300-100", "digits", "--iterations", "99999999999999999999"],
            "iterations 99999999999999999999 is invalid; it must be at most 1000000000",
        ),
        (
            ["supermask", "train", "lenet-300-100", "digits", "--epochs", "1e300"],
            "--epochs 1e+300 is about 10^300 iterations per round; at most 1000000000 iterations per round are allowed",
        ),
        (["supermask", "train", "lenet-300-100", "digits", "--lr", "inf"], "learning rate inf is invalid"),
        (
            ["supermask", "eval", "lenet-300-100", "digits", "--seed", "99999999999999999999999"],
            "bad value 99999999999999999999999 for seed",
        ),
        (
            ["robust", "lenet-300-100", "digits", "--iterations", 20, "--rounds", 0, "--lr", "inf"],
            "bad value inf for lr: Input should be a finite number",
        ),
        (
            [
                "robust",
                "lenet-300-100",
                "digits",
                "--iterations",
                20,
                "--rounds",
                0,
                "--trials",
                2,
                "--seed",
                2**64 - 1,
            ],
            "bad value 18446744073709551616 for seed: must be an integer from -2^63 to 2^64-1",
        ),
        (
            [
                "robust",
                "lenet-300-100",
                "digits",
                "--iterations",
                20,
                "--rounds",
                0,
                "--backend",
                "ray",
                "--cpus-per-trial",
                "nan",
            ],
            "--cpus-per-trial must be a finite number >= 0, got nan",
        ),
    ],
)
def test_other_commands_refuse_hostile_numbers(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, *args, "--device", "cpu", "-q", "--out", out)
    assert message in one_line_error(rc, err)
    assert not out.exists()


def test_mask_command_refuses_a_seed_beyond_64_bits(capsys, tmp_path):
    torch.save(mlp().state_dict(), tmp_path / "w.pt")
    rc, _, err = cli(
        capsys,
        "mask",
        "--init",
        tmp_path / "w.pt",
        "--final",
        tmp_path / "w.pt",
        "--keep",
        0.5,
        "--seed",
        2**64,
        "--out",
        tmp_path / "m.pt",
    )
    assert "--seed must be an integer from -2^63 to 2^64-1" in one_line_error(rc, err)
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------------ the Python API


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("lr", float("inf"), "lr must be a positive number, got inf"),
        ("weight_decay", float("inf"), "weight_decay must be >= 0, got inf"),
        ("gamma", float("inf"), "gamma must be a positive number, got inf"),
        ("momentum", float("nan"), "momentum must be in [0, 1), got nan"),
        ("epochs", float("inf"), "epochs must be a number > 0, got inf"),
        ("seed", 10**23, "seed must be an integer from -2^63 to 2^64-1 (what torch.manual_seed accepts), got 10"),
        ("iterations", 10**20, "iterations must be an integer from 1 to 1000000000, got 100000000000000000000"),
    ],
)
def test_api_refuses_hostile_settings(digits, setting, value, message):
    settings = {**FAST, setting: value}
    if setting == "epochs":
        settings.pop("iterations")
    for make in (
        lambda: LotteryModel(mlp(), digits, **settings),
        lambda: LotteryRobust(mlp(), digits, trials=2, **settings),
        lambda: LotterySession(mlp(), digits, **settings),
    ):
        with pytest.raises(LthError) as caught:
            make()
        assert message in str(caught.value)


def test_api_refuses_budget_over_the_maximum(digits):
    with pytest.raises(LthError, match="epochs=1e\\+12 is .* iterations per round; at most 1000000000 iterations"):
        LotteryModel(mlp(), digits, epochs=1e12, eval_every=10, device="cpu", progress=False)
    ticket = LotteryModel(mlp(), digits, **FAST)
    with pytest.raises(LthError, match="and at most 1000000000, got 100000000000000000000"):
        ticket.train(iterations=10**20)
    with pytest.raises(LthError, match="rounds must be an integer from 0 to 10000, got 100000000000000000000"):
        ticket.iterative_pruning(rounds=10**20)


def test_api_refuses_non_finite_pruning_values(digits):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.train()
    for kwargs, message in (
        (dict(rate=float("nan")), "must be a fraction in [0, 1), got nan"),
        (dict(keep=float("nan")), "keep must be a fraction in (0, 1], got nan"),
    ):
        with pytest.raises(LthError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            ticket.prune(**kwargs)
    ticket.prune(rate=0.2)
    for kwargs, message in (
        (dict(mask1="jitter", jitter_sd=float("inf")), "jitter sd must be a finite number, got inf"),
        (dict(mask1="constant", constant=float("inf")), "constant must be a finite number"),
    ):
        with pytest.raises(LthError, match=message):
            ticket.reinit(**kwargs)
    with pytest.raises(LthError, match="mask-1 action 'constant' gives non-finite start weights"):
        ticket.reinit(mask1="constant", constant=3e38, rescale=True)


# ------------------------------------------------------------------ warnings


def test_warmup_longer_than_budget_warns(capsys, tmp_path):
    rc, _, err = find(capsys, tmp_path / "run", "--warmup", "100it")
    assert rc == 0, err
    assert err.strip().splitlines() == [
        "lth: warning: --warmup 100it (100 iterations) is longer than the training budget (30 iterations); "
        "the learning rate never reaches --lr"
    ]


def test_api_warmup_longer_than_budget_warns(digits, capsys):
    LotteryModel(mlp(), digits, warmup=100, **FAST)
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "lth: warning: warmup 100 iterations is longer than the training budget (30 iterations); "
        "the learning rate never reaches lr"
    ]


def test_layer_pruned_empty_warns_once(capsys, tmp_path):
    # At 99% per round, fc3 (1000 weights): 1000 -> 10 -> 0 in round 2; fc1 (19200): -> 192 -> 2 -> 0 and
    # fc2 (30000): -> 300 -> 3 -> 0 in round 3. Round 4 empties nothing more: no warning.
    rc, _, err = find(capsys, tmp_path / "run", "--prune-rate", "0.99", "--rounds", 4, "--iterations", 10)
    assert rc == 0, err
    assert err.strip().splitlines() == [
        "lth: warning: pruning for round 2 leaves no weight in fc3.weight; the network cannot learn through it "
        "(lower --prune-rate or --rounds)",
        "lth: warning: pruning for round 3 leaves no weight in fc1.weight, fc2.weight; the network cannot learn "
        "through them (no weight is left in any pruned layer; lower --prune-rate or --rounds)",
    ]


def test_api_layer_pruned_empty_warns(digits, capsys):
    ticket = LotteryModel(mlp(), digits, **FAST)
    ticket.train()
    capsys.readouterr()
    ticket.prune(rates={"3": 0.9999})  # the output layer: 320 -> 0
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "lth: warning: pruning for round 1 leaves no weight in 3.weight; the network cannot learn through it "
        "(lower the prune rate)"
    ]


# ------------------------------------------------------------------ divergence


def test_divergence_stops_with_one_line_and_records_it(capsys, tmp_path):
    out = tmp_path / "run"
    rc, _, err = find(capsys, out, "--lr", "1e30")
    line = one_line_error(rc, err)
    assert line.startswith("lth: error: training diverged in round 0 at iteration 10 (loss ")
    assert line.endswith("; lower --lr")
    status = RunDir(out).status()
    assert status["status"] == "diverged"
    assert status["error"] == line.removeprefix("lth: error: ")
    assert not list(out.rglob("*.tmp"))


def test_divergence_in_a_later_round_keeps_earlier_rounds(capsys, tmp_path):
    """Round 1 starts from +-1e30 weights: its loss is non-finite before any step; round 0 stays on disk."""
    out = tmp_path / "run"
    rc, _, err = find(capsys, out, "--rounds", 2, "--mask1", "constant", "--constant", "1e30")
    line = one_line_error(rc, err)
    assert line.startswith("lth: error: training diverged in round 1 at iteration 0 (loss ")
    assert f"; the rounds before it are kept in {out}; " in line
    assert line.endswith("the network's starting weights already give a non-finite loss")
    run = RunDir(out)
    assert [r["round"] for r in run.rounds()] == [0]
    assert run.status()["status"] == "diverged"
    for text in (out / "rounds.json").read_text(), (out / "status.json").read_text():
        strict_json(text)


def test_divergence_side_by_side_names_the_network(capsys, tmp_path):
    """Round 1 trains the ticket and its reinit control in one vectorised training: the message names the
    network (the ticket: its +-1e30 start weights; the reinit control starts from fresh, finite weights)."""
    out = tmp_path / "run"
    rc, _, err = find(
        capsys,
        out,
        "--rounds",
        1,
        "--mask1",
        "constant",
        "--constant",
        "1e30",
        "--controls",
        "reinit",
        "--vectorize",
        2,
    )
    line = one_line_error(rc, err)
    assert line.startswith("lth: error: training of the ticket diverged in round 1 at iteration 0 (loss "), line
    assert RunDir(out).status()["status"] == "diverged"


def test_divergence_of_the_api_names_the_round(digits):
    ticket = LotteryModel(mlp(), digits, lr=1e30, **FAST)
    with pytest.raises(LthError, match=r"training diverged in round 0 at iteration 10 \(loss (nan|inf)\); lower lr"):
        ticket.train()
    assert ticket.rows == []


def test_vectorised_training_detects_divergence(digits):
    from lth.errors import TrainingDiverged
    from lth.training import OptimizerSettings
    from lth.training.vectorized import VectorTrainer

    trainer = VectorTrainer(digits, 60, OptimizerSettings("adam", 1e30), [0, 1], eval_every=10, progress=False)
    with pytest.raises(
        TrainingDiverged, match=r"training of network 1 of 2 diverged at iteration 10 \(loss (nan|inf)\)"
    ):
        trainer.train([mlp(), mlp()], [None, None], start=0, stop=30)


def test_lockstep_names_the_program_whose_network_diverged(digits):
    """Program 0 trains alone (keep_best), programs 1 and 2 together: program 2 (+-1e30 weights)
    diverges at its place 1 in the group, and the error names program 2."""
    from lth.errors import TrainingDiverged
    from lth.training import OptimizerSettings
    from lth.training.lockstep import Lockstep

    lockstep = Lockstep(3, progress=False)
    factory = lockstep.trainer_factory()

    def program(i: int):
        def run():
            model = mlp()
            if i == 2:
                with torch.no_grad():
                    model[1].weight.fill_(1e30)
                    model[3].weight.fill_(1e30)
            return factory(digits, 60, OptimizerSettings("adam", 1e-3), i, 10, progress=False).train(
                model, None, 0, 20, keep_best=i == 0
            )

        return run

    with pytest.raises(TrainingDiverged, match="training of network 2 of 2 diverged at iteration 0") as caught:
        lockstep.run([program(i) for i in range(3)])
    assert caught.value.index == 2


# ------------------------------------------------------------------ JSON


def test_jsonio_writes_null_for_non_finite_values():
    text = dumps({"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), 2)], "c": {"d": float("nan")}})
    assert strict_json(text) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None}}
    assert strict_json(dumps([object()], default=lambda o: float("nan"))) == [None]


def test_run_files_hold_no_nan(tmp_path):
    from lth.store.study_dir import StudyDir

    run = RunDir.create(tmp_path / "run")
    row = dict(
        round=0,
        weights_remaining=1.0,
        early_stop_iteration=0,
        val_accuracy_at_early_stop=0.5,
        test_accuracy_at_early_stop=0.5,
        final_test_accuracy=0.5,
        final_test_loss=float("nan"),
    )
    run.write_rounds([row])
    run.write_status(status="running", loss=float("inf"))
    for name in ("rounds.json", "status.json"):
        strict_json((tmp_path / "run" / name).read_text())
    assert run.rounds()[0]["final_test_loss"] is None
    study = StudyDir(tmp_path / "study")
    study.path.mkdir()
    study.write_summary([{"experiment": "e", "mean": float("nan")}])
    strict_json((study.path / "summary.json").read_text())


# ------------------------------------------------------------------ a full disk


class DiskFull:
    """Injects ENOSPC into the writes of lth's atomic files whose name matches, from the ``after``-th on.

    ``lth.atomic`` writes through ``tempfile.mkstemp`` + ``os.fdopen``: the handle of a matching
    temp file fails on write once ``after`` earlier matching files were written. ``times`` caps
    how many files fail (None: all). ``target_bytes`` records the target's bytes at the moment
    of the first failure (to check that the previous file stays untouched).
    """

    def __init__(self, monkeypatch, name: str, after: int = 0, times: int | None = 1) -> None:
        import lth.atomic

        self.name, self.after, self.times = name, after, times
        self.seen, self.failed, self.target_bytes = 0, 0, None
        self.files: dict[int, Path] = {}
        real_mkstemp, real_fdopen = lth.atomic.tempfile.mkstemp, lth.atomic.os.fdopen
        disk = self

        def mkstemp(*args, **kwargs):
            fd, tmp = real_mkstemp(*args, **kwargs)
            disk.files[fd] = Path(tmp)
            return fd, tmp

        class Handle:
            def __init__(self, handle, target: Path) -> None:
                self.handle, self.target = handle, target

            def write(self, data):
                if disk.target_bytes is None and self.target.is_file():
                    disk.target_bytes = self.target.read_bytes()
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, item):
                return getattr(self.handle, item)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            tmp = disk.files.pop(fd, None)
            if tmp is None:
                return handle
            target = tmp.parent / tmp.name[1:].rsplit(".", 2)[0]  # .NAME.XXXX.tmp -> NAME
            if target.name != disk.name:
                return handle
            disk.seen += 1
            if disk.seen > disk.after and (disk.times is None or disk.failed < disk.times):
                disk.failed += 1
                return Handle(handle, target)
            return handle

        monkeypatch.setattr(lth.atomic.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(lth.atomic.os, "fdopen", fdopen)


def test_atomic_writes_turn_enospc_into_one_line(monkeypatch, tmp_path):
    from lth.atomic import atomic_torch_save, atomic_write_text

    target = tmp_path / "file.txt"
    target.write_text("old")
    DiskFull(monkeypatch, "file.txt", times=None)
    with pytest.raises(LthError, match=f"^no space left on device while writing {target}$"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.ones(3)}, weights)
    DiskFull(monkeypatch, "w.pt", times=None)
    with pytest.raises(LthError, match=f"^no space left on device while writing {weights}$"):
        atomic_torch_save({"x": torch.zeros(1000)}, weights)
    assert torch.equal(torch.load(weights, weights_only=True)["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "w.pt"]  # no temp file left


def test_torch_runtime_error_with_enospc_cause_is_recognised(monkeypatch, tmp_path):
    """A real full disk makes torch raise RuntimeError('... inline_container ...') over the OSError."""
    from lth.atomic import atomic_torch_save

    def failing_save(obj, handle):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from error

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(LthError, match="^no space left on device while writing"):
        atomic_torch_save({}, tmp_path / "x.pt")

    def other_error(obj, handle):
        raise RuntimeError("some other torch failure")

    monkeypatch.setattr(torch, "save", other_error)
    with pytest.raises(RuntimeError, match="some other torch failure"):
        atomic_torch_save({}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


RESUMABLE = [
    "--rounds",
    2,
    "--iterations",
    40,
    "--checkpoint-every",
    15,
    "--controls",
    "reinit",
    "--vectorize",
    "off",
    "--rewind",
    "5it",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        from lth.cli import main

        assert (
            main(["find-ticket", "lenet-300-100", "digits", *map(str, BASE), *map(str, RESUMABLE), "--out", str(out)])
            == 0
        )
    return out


def _same_results(a: Path, b: Path) -> None:
    for sub in ("", "controls/reinit"):
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
        assert strip(RunDir(a / sub).rounds()) == strip(RunDir(b / sub).rounds())
        assert (a / sub / "metrics.csv").read_bytes() == (b / sub / "metrics.csv").read_bytes()
    for path in sorted((a / "weights").iterdir()):
        wa, wb = torch.load(path, weights_only=True), torch.load(b / "weights" / path.name, weights_only=True)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), path.name


def test_disk_full_during_checkpoint_then_resume(capsys, monkeypatch, tmp_path, uninterrupted):
    out = tmp_path / "run"
    disk = DiskFull(monkeypatch, "checkpoint.pt", after=3)
    rc, _, err = find(capsys, out, *RESUMABLE)
    assert one_line_error(rc, err) == f"lth: error: no space left on device while writing {out / 'checkpoint.pt'}"
    assert disk.failed == 1
    status = RunDir(out).status()
    assert status["status"] == "failed" and status["error"].startswith("no space left on device")
    assert (out / "checkpoint.pt").read_bytes() == disk.target_bytes  # the previous checkpoint, untouched
    torch.load(out / "checkpoint.pt", weights_only=True)
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    rc, _, err = cli(capsys, "resume", out, "-q")
    assert rc == 0, err
    _same_results(uninterrupted, out)
    assert RunDir(out).status()["status"] == "complete"


def test_disk_full_everywhere_leaves_the_run_resumable(capsys, monkeypatch, tmp_path, uninterrupted):
    """When not even status.json can be written, the status stays as it was and resume still works."""
    out = tmp_path / "run"
    DiskFull(monkeypatch, "checkpoint.pt", after=2)
    DiskFull(monkeypatch, "status.json", after=1, times=None)  # the first (running) status is written
    rc, _, err = find(capsys, out, *RESUMABLE)
    assert one_line_error(rc, err) == f"lth: error: no space left on device while writing {out / 'checkpoint.pt'}"
    assert RunDir(out).status()["status"] == "running"
    monkeypatch.undo()
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    rc, _, err = cli(capsys, "resume", out, "-q")
    assert rc == 0, err
    _same_results(uninterrupted, out)


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, timeout=20
    )
    return done.returncode == 0


@pytest.mark.parametrize("size, file", [("128k", "weights/init.pt"), ("640k", "checkpoint.pt")])
def test_real_full_disk_on_a_small_tmpfs(capsys, tmp_path, uninterrupted, size, file):
    """On a small tmpfs the run stops in one line (at init.pt, 200 KB, before any checkpoint; or
    at the first checkpoint inside round 0, about 900 KB); remounted larger, it resumes bit for bit."""
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk, size):
        pytest.skip("needs root and a mountable tmpfs")
    try:
        out = disk / "run"
        rc, _, err = find(capsys, out, *RESUMABLE)
        assert one_line_error(rc, err) == f"lth: error: no space left on device while writing {out / file}"
        assert RunDir(out).status()["status"] == "failed"
        assert not list(out.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True, timeout=20)
        rc, _, err = cli(capsys, "resume", out, "-q")
        assert rc == 0, err
        _same_results(uninterrupted, out)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=20)
