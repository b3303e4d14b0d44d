"""A shared dense trunk (issue 14): experiments that differ only in pruning train round 0 once per trial.

Every check compares against the same work done without sharing (``--no-share-trunk``), bit for
bit: round 0 taken from the store must leave every result file exactly as training it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import cli
from lth.config import make_config
from lth.experiments.dense_trunk import EXCLUDED, DenseStore, dense_trunk_key
from lth.store.study_dir import StudyDir
from lth.training import Trainer

BASE = {
    "model": "lenet-300-100",
    "dataset": "digits",
    "rounds": 2,
    "iterations": 60,
    "eval_every": 30,
    "device": "cpu",
    "checkpoint_every": 30,
    "rewind": "10it",
    "w_final": "early-stop",
}
SESSION = {"name": "trunk", "base": BASE, "grid": {"criterion": ["large_final", "random", "movement"]}, "trials": 2}


class Crash(Exception):
    pass


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    monkeypatch.setattr("lth.plots.plot_study", lambda study: [])
    monkeypatch.setattr("lth.supermasks.evaluate.plot_supermask_run", lambda run: [])


class RoundZero:
    """Counts the real round-0 trainings (Trainer.train calls of round 0)."""

    def __init__(self) -> None:
        self.calls = 0

    def install(self, mp: pytest.MonkeyPatch) -> RoundZero:
        original = Trainer.train

        def train(trainer, model, mask, start, stop, *args, **kwargs):
            if kwargs.get("description", "").startswith("round 0/"):
                self.calls += 1
            return original(trainer, model, mask, start, stop, *args, **kwargs)

        mp.setattr(Trainer, "train", train)
        return self


def _spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**SESSION, **changes}))
    return path


def _session(capsys, spec: Path, out: Path, *flags) -> tuple[str, int]:
    with pytest.MonkeyPatch.context() as mp:
        counter = RoundZero().install(mp)
        rc, stdout, err = cli(capsys, "session", spec, "--out", out, "--vectorize", "off", *flags)
    assert rc == 0, err
    return stdout, counter.calls


def _same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same_tensors(a[key], b[key], f"{where}[{key}]")
    else:
        assert a == b, where


def assert_same_results(a: Path, b: Path) -> None:
    """Every result file of the two run (or study) directories is the same, bit for bit: tensors
    by torch.equal, JSON by ==, the rest byte for byte (wall-clock seconds, status and logs aside)."""

    def names(root: Path) -> list[str]:
        study = (root / "study.yaml").is_file()  # its dense/ is the store, there only when shared
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and not (study and p.relative_to(root).parts[0] == "dense")
        )

    files = names(a)
    assert files == names(b)
    compared = 0
    for name in files:
        fa, fb = a / name, b / name
        base = fa.name
        if base in ("status.json", "trial.log", "study.yaml", ".lth-dir.json", ".lth-lock", "logged.json"):
            continue
        if base.endswith(".pt"):
            _same_tensors(torch.load(fa, weights_only=True), torch.load(fb, weights_only=True), name)
        elif base == "rounds.json":
            strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
            assert strip(json.loads(fa.read_text())) == strip(json.loads(fb.read_text())), name
        elif base.endswith(".json"):
            assert json.loads(fa.read_text()) == json.loads(fb.read_text()), name
        else:
            assert fa.read_bytes() == fb.read_bytes(), name
        compared += 1
    assert compared > 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The session of 3 criteria x 2 trials without sharing."""
    out = tmp_path_factory.mktemp("trunk") / "alone"
    spec = _spec(out.parent / "session.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        mp.setattr("lth.plots.plot_study", lambda study: [])
        counter = RoundZero().install(mp)
        from lth.cli import main

        assert main(["session", str(spec), "--out", str(out), "--vectorize", "off", "-q", "--no-share-trunk"]) == 0
    assert counter.calls == 6
    status = StudyDir(out).status()
    assert (status["share_trunk"], status["dense_trained"], status["dense_reused"]) == (False, 6, 0)
    assert not (out / "dense").exists()
    return out


def test_a_session_trains_round_0_once_per_trial(tmp_path, capsys, reference):
    stdout, calls = _session(capsys, _spec(tmp_path / "session.yaml"), tmp_path / "shared")
    assert calls == 2
    assert "round 0 (dense): trained 2, reused 4" in stdout
    status = StudyDir(tmp_path / "shared").status()
    assert (status["share_trunk"], status["dense_trained"], status["dense_reused"]) == (True, 2, 4)
    assert len(list((tmp_path / "shared" / "dense").glob("*.pt"))) == 2  # one per seed
    assert_same_results(reference, tmp_path / "shared")
    logs = (tmp_path / "shared" / "01-random" / "trial_01" / "trial.log").read_text()
    assert "reused from the shared dense trunk" in logs
    from lth.store.ownership import remove_owned

    assert remove_owned(tmp_path / "shared") == [] and not (tmp_path / "shared").exists()  # dense/ is lth's too


def test_share_trunk_false_in_the_session_file(tmp_path, capsys):
    spec = _spec(
        tmp_path / "s.yaml",
        share_trunk=False,
        grid={"criterion": ["large_final", "random"]},
        trials=1,
        base={**BASE, "rounds": 1},
    )
    stdout, calls = _session(capsys, spec, tmp_path / "out")
    assert calls == 2 and "round 0 (dense): trained 2, reused 0 (not shared)" in stdout
    assert not (tmp_path / "out" / "dense").exists()
    assert "share_trunk" in yaml.safe_load(spec.read_text())


def test_experiments_differing_in_training_do_not_share(tmp_path, capsys):
    spec = _spec(
        tmp_path / "s.yaml",
        grid={"lr": [0.001, 0.002], "criterion": ["large_final", "random"]},
        trials=1,
        base={**BASE, "rounds": 1},
    )
    stdout, calls = _session(capsys, spec, tmp_path / "out")
    assert calls == 2 and "round 0 (dense): trained 2, reused 2" in stdout


def test_robust_trials_differ_in_seed_and_store_nothing(tmp_path, capsys):
    rc, _, err = cli(
        capsys,
        "robust",
        "lenet-300-100",
        "digits",
        "--trials",
        "2",
        "--rounds",
        "0",
        "--iterations",
        "30",
        "--eval-every",
        "30",
        "--device",
        "cpu",
        "-q",
        "--out",
        tmp_path / "robust",
    )
    assert rc == 0, err
    status = StudyDir(tmp_path / "robust").status()
    assert (status["dense_trained"], status["dense_reused"]) == (2, 0)
    assert not list((tmp_path / "robust").glob("dense/*.pt"))


def test_the_key_holds_every_training_field_and_no_pruning_field(digits):
    from lth.config import TicketConfig
    from lth.models import MODELS

    assert EXCLUDED <= set(TicketConfig.model_fields)
    base = make_config(BASE).with_recipe(MODELS.get("lenet-300-100").recipe)
    key = dense_trunk_key(base)
    same = {
        "criterion": "movement",
        "mask1": "signed_constant",
        "mask0": "freeze_init",
        "keep_sign": True,
        "rescale": True,
        "jitter_sd": 0.5,
        "constant": 2.0,
        "prune_rate": 0.5,
        "scope": "global",
        "rounds": 7,
        "controls": ["reinit"],
        "name": "x",
        "log": ["tensorboard"],
        "checkpoint_every": 5,
        "vectorize": "off",
        "prune_biases": True,
        "ignore_layers": ["fc1"],
    }
    for field, value in same.items():
        assert dense_trunk_key(base.model_copy(update={field: value})) == key, field
    different = {
        "lr": 0.002,
        "seed": 1,
        "rewind": "20it",
        "w_final": "end",
        "iterations": 61,
        "batch_size": 30,
        "optimizer": "sgd",
        "weight_decay": 1e-4,
        "eval_every": 20,
        "dataset": "mnist",
        "precision": "bf16",
        "model": "lenet-5",
    }
    for field, value in different.items():
        assert dense_trunk_key(base.model_copy(update={field: value})) != key, field
    mask = {"fc1.weight": torch.ones(3, 2, dtype=torch.bool)}
    assert dense_trunk_key(base, mask=mask) == key  # an all-ones --init-mask is a dense start
    mask["fc1.weight"][0, 0] = False
    assert dense_trunk_key(base, mask=mask) != key
    import dataclasses

    with_data = dense_trunk_key(base, data=digits)
    changed = digits.train_x.clone()
    changed[0, 0, 0, 0] += 1
    assert with_data != key and dense_trunk_key(base, data=dataclasses.replace(digits, train_x=changed)) != with_data


def test_a_damaged_entry_is_ignored_with_a_warning_and_retrained(tmp_path, capsys):
    from lth.experiments.ticket_search import find_ticket

    store = DenseStore(tmp_path / "dense")
    config = make_config({**BASE, "rounds": 1})
    with pytest.MonkeyPatch.context() as mp:
        counter = RoundZero().install(mp)
        first = find_ticket(config, out=tmp_path / "a", progress=False, dense_store=store)
        (entry,) = store.path.glob("*.pt")
        good = entry.read_bytes()
        entry.write_bytes(good[: len(good) // 2])  # cut short
        second = find_ticket(
            config.model_copy(update={"criterion": "random"}), out=tmp_path / "b", progress=False, dense_store=store
        )
        err = capsys.readouterr().err
        assert "lth: warning: ignoring the damaged stored dense training" in err and len(err.strip().splitlines()) == 1
        assert (first.dense, second.dense, counter.calls) == ("trained", "trained", 2)
        assert entry.read_bytes() != good[: len(good) // 2]  # written again, whole
        third = find_ticket(
            config.model_copy(update={"criterion": "movement"}), out=tmp_path / "c", progress=False, dense_store=store
        )
        assert third.dense == "reused" and counter.calls == 2
        data = torch.load(entry, weights_only=True)  # a whole file, but not this model's tensors
        data["model"] = {k: v[:1] for k, v in data["model"].items()}
        torch.save(data, entry)
        fourth = find_ticket(config, out=tmp_path / "d", progress=False, dense_store=store)
        assert fourth.dense == "trained" and counter.calls == 3
        assert "of another shape or type" in capsys.readouterr().err
    assert_same_results(tmp_path / "a", tmp_path / "d")
    find_ticket(config.model_copy(update={"criterion": "movement"}), out=tmp_path / "e", progress=False)
    assert_same_results(tmp_path / "c", tmp_path / "e")


def test_a_killed_shared_session_resumes_bit_identical(tmp_path, capsys, reference):
    """Killed in the middle of the first round-0 training (nothing stored yet), then again at the
    round-1 boundary of a trial that reused its round 0; each resume ends as the reference."""
    from lth.experiments import ticket_search
    from lth.experiments.session_spec import load_session_spec
    from lth.experiments.study import continue_study, run_study

    spec, out = load_session_spec(_spec(tmp_path / "session.yaml")), tmp_path / "killed"
    original = ticket_search._Search.checkpoint
    kills = []

    def killing(when):
        def checkpoint(search, training=None):
            original(search, training)
            if not kills and when(search, training):
                kills.append(search.run.path)
                raise Crash()

        return checkpoint

    with pytest.MonkeyPatch.context() as mp:
        counter = RoundZero().install(mp)
        mp.setattr(
            ticket_search._Search,
            "checkpoint",
            killing(lambda s, t: s.round == 0 and t is not None and t.iteration == 30),
        )
        with pytest.raises(Crash):
            run_study(
                "session", spec.experiments(), out, spec.model_dump(), name="trunk", progress=False, vectorize="off"
            )
        assert kills == [out / "00-large_final" / "trial_00"] and not list((out / "dense").glob("*.pt"))
        kills.clear()
        mp.setattr(
            ticket_search._Search,
            "checkpoint",
            killing(lambda s, t: s.run.path.parent.name == "01-random" and s.round == 1 and s.stage == "start"),
        )
        with pytest.raises(Crash):
            continue_study(out, progress=False)
        assert kills == [out / "01-random" / "trial_00"]
        mp.setattr(ticket_search._Search, "checkpoint", original)
        result = continue_study(out, progress=False)
    assert counter.calls == 3  # the first training, its resumed rest, and seed 1's
    status = StudyDir(out).status()
    assert status["status"] == "complete" and (status["dense_trained"], status["dense_reused"]) == (2, 3)
    assert (result.dense_trained, result.dense_reused) == (0, 3)  # 01-random/trial_01, 02-movement's two
    assert_same_results(reference, out)


# ------------------------------------------------------------------ supermask eval

FAST = ["--iterations", "60", "--eval-every", "30", "--device", "cpu", "--name", "sm"]


def _eval(capsys, out: Path, *args) -> tuple[str, str, int]:
    with pytest.MonkeyPatch.context() as mp:
        counter = RoundZero().install(mp)
        rc, stdout, err = cli(capsys, "supermask", "eval", "lenet-300-100", "digits", *FAST, *args, "--out", out)
    assert rc == 0, err
    return stdout, err, counter.calls


def test_supermask_evals_reuse_the_dense_training(tmp_path, capsys, monkeypatch):
    from lth.store.run_dir import runs_root

    grid_a = ["--criteria", "lf", "--keep", "1.0,0.5", "--weights", "init"]
    grid_b = ["--criteria", "random,lf", "--keep", "0.2", "--weights", "init,signed_constant"]
    stdout, err, calls = _eval(capsys, tmp_path / "a", *grid_a)
    assert calls == 1 and "dense training (w_f): trained" in stdout
    (entry,) = (runs_root() / ".lth-dense").glob("*.pt")
    stdout, err, calls = _eval(capsys, tmp_path / "b", *grid_b)
    assert calls == 0 and "dense training (w_f): reused" in stdout
    assert json.loads((tmp_path / "b" / "status.json").read_text())["dense"] == "reused"
    stdout, err, calls = _eval(capsys, tmp_path / "c", *grid_b, "--no-share-trunk")
    assert calls == 1 and json.loads((tmp_path / "c" / "status.json").read_text())["dense"] == "trained"
    assert_same_results(tmp_path / "c" / "dense", tmp_path / "b" / "dense")
    for name in ("supermask_eval.json", "supermask_eval.csv"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    _, _, calls = _eval(capsys, tmp_path / "d", *grid_a, "--lr", "0.002")  # another dense recipe
    assert calls == 1 and len(list(entry.parent.glob("*.pt"))) == 2
    entry.write_bytes(b"not a torch file")
    stdout, err, calls = _eval(capsys, tmp_path / "e", *grid_b)
    assert calls == 1 and "dense training (w_f): trained" in stdout
    assert "lth: warning: ignoring the damaged stored dense training" in err
    assert_same_results(tmp_path / "c" / "dense", tmp_path / "e" / "dense")
    assert (tmp_path / "e" / "supermask_eval.json").read_bytes() == (
        tmp_path / "c" / "supermask_eval.json"
    ).read_bytes()
