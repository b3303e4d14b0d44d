"""Instability analysis / linear mode connectivity (``lth stability``): exact facts of the paths,
seeds, resume after a kill, and the refusals of bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth.config import make_config
from lth.data import Batcher
from lth.errors import LthError
from lth.experiments import stability as stability_module
from lth.experiments.stability import StabilitySettings, read_entries, run_stability
from lth.store import RunDir
from lth.training.evaluate import evaluate
from lth.training.interpolation import PathResult, alphas, evaluate_path, interpolate

SMALL = dict(model="lenet-300-100", dataset="digits", iterations=120, eval_every=40, device="cpu")


def analyse(out: Path, rewind=("0", "40"), from_run=None, config=None, **settings):
    config = None if from_run is not None else make_config({**SMALL, **(config or {})})
    values = dict(points=5, path_train_size=300)
    values.update(settings)
    return run_stability(config, StabilitySettings(rewind=rewind, **values), from_run=from_run, out=out, progress=False)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """The dense LeNet-300-100 on digits, k = 0 and 40 of a 120-iteration budget, 3 copies."""
    return analyse(tmp_path_factory.mktemp("stability") / "dense", copies=3)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A ticket search on digits: 2 pruning rounds of 120 iterations."""
    from lth import find_ticket

    config = make_config({**SMALL, "rounds": 2})
    return find_ticket(config, out=tmp_path_factory.mktemp("stability") / "search", progress=False)


def _csv_rows(run: RunDir) -> list[dict]:
    with open(run.path / "stability.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _model(state):
    from lth.models import build_model

    model = build_model("lenet-300-100", (1, 8, 8), 10, seed=0)
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------------- the paths


def test_interpolation_is_exact_at_the_ends_and_constant_between_equal_entries():
    generator = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(50, 7, generator=generator), "n": torch.tensor(3)}
    b = {"w": torch.randn(50, 7, generator=generator), "n": torch.tensor(9)}
    b["w"][:10] = a["w"][:10]  # some entries equal in both
    assert interpolate(a, b, 0.0)["w"].equal(a["w"]) and interpolate(a, b, 1.0)["w"].equal(b["w"])
    for alpha in alphas(31):
        state = interpolate(a, b, alpha)
        assert state["w"][:10].equal(a["w"][:10])
        assert state["n"].item() == 3  # integer buffers come from the first end
    assert alphas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_pruned_weights_are_exactly_zero_at_every_point_of_the_path():
    generator = torch.Generator().manual_seed(1)
    a = {"w": torch.randn(20, 20, generator=generator)}  # non-zero where the mask prunes
    b = {"w": torch.randn(20, 20, generator=generator)}
    mask = {"w": torch.rand(20, 20, generator=generator) > 0.7}
    for alpha in alphas(11):
        state = interpolate(a, b, alpha, mask)
        assert state["w"][~mask["w"]].eq(0).all()
        assert (state["w"][mask["w"]] != 0).all()


def test_identical_networks_have_a_barrier_of_exactly_zero(digits):
    from lth.models import build_model

    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    splits = {"test": (digits.test_x, digits.test_y), "train": (digits.train_x[:200], digits.train_y[:200])}
    result = evaluate_path(model, state, state, None, alphas(7), splits)
    assert result.barrier("test") == 0.0 and result.barrier("train") == 0.0 and result.barrier("test", "loss") == 0.0
    assert len(set(result.error["test"])) == 1
    assert all(model.state_dict()[k].equal(v) for k, v in state.items())  # the model is left as it was


def test_batch_norm_statistics_are_recomputed_on_training_data_at_every_point():
    from torch import nn

    from lth.training.interpolation import recompute_batch_norm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    x = torch.randn(64, 5) * 3 + 1
    model[1].running_mean.fill_(7.0)
    recompute_batch_norm(model, x, batch_size=64)  # one batch: its mean and unbiased variance exactly
    hidden = model[0](x).detach()
    assert torch.allclose(model[1].running_mean, hidden.mean(0), atol=1e-6)
    assert torch.allclose(model[1].running_var, hidden.var(0, unbiased=True), atol=1e-5)
    assert model[1].momentum == 0.1 and model.training
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: (v + 0.5 if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    splits = {"test": (x, torch.zeros(64, dtype=torch.long))}
    reset = evaluate_path(model, a, b, None, [0.0, 0.5, 1.0], splits, batch_norm_data=x)
    kept = evaluate_path(model, a, b, None, [0.0, 0.5, 1.0], splits, batch_norm_data=None)
    assert reset.loss["test"] != kept.loss["test"]  # interpolated statistics differ from recomputed ones
    assert all(model.state_dict()[k].equal(v) for k, v in a.items())  # the model's own state is back


def test_barrier_is_the_maximum_minus_the_mean_of_the_ends():
    path = PathResult([0.0, 0.5, 1.0], {"test": [0.1, 0.4, 0.2]}, {"test": [1.0, 3.0, 2.0]})
    assert path.barrier("test") == pytest.approx(0.4 - 0.15, abs=1e-15)
    assert path.barrier("test", "loss") == 1.5


def test_the_ends_of_each_path_reproduce_each_childs_error_exactly(dense_run, digits):
    run = dense_run.run_dir
    rows = _csv_rows(run)
    for k in (0, 40):
        children = [run.load_weights(f"t00_level00_k{k}_child{c}") for c in range(3)]
        errors = [1.0 - evaluate(_model(state), digits.test_x, digits.test_y)[1].item() for state in children]
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            path = [
                r for r in rows if r["rewind_iteration"] == str(k) and r["pair"] == f"{i}-{j}" and r["split"] == "test"
            ]
            assert len(path) == 5
            assert float(path[0]["error"]) == errors[i] and float(path[-1]["error"]) == errors[j]


def test_entries_hold_the_statistics_of_their_pairs(dense_run):
    entries = read_entries(dense_run.run_dir)
    assert [(e["level"], e["rewind_iteration"], e["pairs"], e["copies"]) for e in entries] == [
        (0, 0, 3, 3),
        (0, 40, 3, 3),
    ]
    rows = _csv_rows(dense_run.run_dir)
    for entry in entries:
        barriers = []
        for pair in ("0-1", "0-2", "1-2"):
            errors = [
                float(r["error"])
                for r in rows
                if r["rewind_iteration"] == str(entry["rewind_iteration"])
                and r["pair"] == pair
                and r["split"] == "test"
            ]
            barriers.append(max(errors) - (errors[0] + errors[-1]) / 2)
        mean = sum(barriers) / 3
        std = (sum((b - mean) ** 2 for b in barriers) / 2) ** 0.5
        assert entry["instability_test"] == pytest.approx(mean, abs=1e-12)
        assert entry["instability_test_std"] == pytest.approx(std, abs=1e-12)
        assert entry["stable"] == (entry["instability_test"] <= 0.02)
        assert entry["weights_remaining"] == 1.0 and len(entry["path"]["alpha"]) == 5
        assert [p["pair"] for p in entry["per_pair"]] == ["0-1", "0-2", "1-2"]


def test_the_childrens_data_orders_differ_and_come_from_the_seed(dense_run, tmp_path):
    entry = read_entries(dense_run.run_dir)[0]
    seeds = [child["seed"] for child in entry["children"]]
    assert len(set(seeds)) == 3
    assert seeds == [stability_module.level_seed(0, "stability-child", c) for c in range(3)]  # the trial's seed
    data = Batcher(torch.arange(600).float()[:, None], torch.zeros(600, dtype=torch.long), 60, seed=seeds[0])
    other = Batcher(torch.arange(600).float()[:, None], torch.zeros(600, dtype=torch.long), 60, seed=seeds[1])
    assert not data.batch(40)[0].equal(other.batch(40)[0])
    run = dense_run.run_dir
    assert not run.load_weights("t00_level00_k0_child0")["fc1.weight"].equal(
        run.load_weights("t00_level00_k0_child1")["fc1.weight"]
    )
    again = analyse(tmp_path / "again", copies=3)  # the same seed: bit for bit the same analysis
    assert (again.run_dir.path / "stability.csv").read_bytes() == (run.path / "stability.csv").read_bytes()
    for name in ("t00_level00_k40_parent", "t00_level00_k40_child2"):
        a, b = run.load_weights(name), again.run_dir.load_weights(name)
        assert all(a[k].equal(b[k]) for k in a)


def test_children_with_one_data_order_are_identical_and_have_no_barrier(tmp_path, monkeypatch):
    monkeypatch.setattr(stability_module._Analysis, "child_seed", lambda self, trial, copy: 5)
    entries = analyse(tmp_path / "same", rewind=("40",)).entries
    assert entries[0]["instability_test"] == 0.0 and entries[0]["instability_train"] == 0.0
    assert entries[0]["loss_barrier_test"] == 0.0


def test_children_trained_side_by_side_match_children_trained_one_by_one(tmp_path):
    """--vectorize 2: the children of one k in one vectorised training (as on a GPU), equal up to rounding."""
    alone = analyse(tmp_path / "alone", rewind=("40",), config={"vectorize": "off"})
    together = analyse(tmp_path / "together", rewind=("40",), config={"vectorize": "2"})
    for c in range(2):
        a = alone.run_dir.load_weights(f"t00_level00_k40_child{c}")
        b = together.run_dir.load_weights(f"t00_level00_k40_child{c}")
        assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # 80 Adam steps: float rounding
    x, y = alone.entries[0], together.entries[0]
    for p, q in zip(x["children"], y["children"]):
        assert abs(p["final_test_loss"] - q["final_test_loss"]) < 1e-5
    assert [c["seed"] for c in x["children"]] == [c["seed"] for c in y["children"]]
    assert abs(x["instability_test"] - y["instability_test"]) <= 2 / 397 + 1e-9  # at most 2 test images


def test_children_trained_in_worker_processes_are_those_trained_here(tmp_path, capsys):
    """--backend process: each child in its own process (one torch thread each here), same results."""
    here = analyse(tmp_path / "here", rewind=("40",))
    rc, _, err = cli(
        capsys,
        "stability",
        "lenet-300-100",
        "digits",
        "--iterations",
        "120",
        "--eval-every",
        "40",
        "--device",
        "cpu",
        "--rewind",
        "40",
        "--points",
        "5",
        "--path-train-size",
        "300",
        "--backend",
        "process",
        "--workers",
        "2",
        "--out",
        tmp_path / "pool",
        "-q",
    )
    assert rc == 0, err
    pool = RunDir(tmp_path / "pool")
    for c in range(2):
        a, b = here.run_dir.load_weights(f"t00_level00_k40_child{c}"), pool.load_weights(f"t00_level00_k40_child{c}")
        assert all(a[k].equal(b[k]) for k in a)
    assert (pool.path / "stability.csv").read_bytes() == (here.run_dir.path / "stability.csv").read_bytes()
    rc, _, err = cli(capsys, "stability", "lenet-300-100", "digits", "--backend", "ray", "--out", tmp_path / "r")
    assert "unknown --backend 'ray' for lth stability; choose local or process" in one_line_error(rc, err)


# ---------------------------------------------------------------------------------- tickets


def test_levels_of_a_ticket_search_are_analysed_under_their_masks(search, tmp_path, monkeypatch):
    seen = []
    import lth.training.interpolation as interpolation

    def recording(a, b, alpha, mask=None):
        state = interpolate(a, b, alpha, mask)
        seen.append((alpha, mask, state))
        return state

    monkeypatch.setattr(interpolation, "interpolate", recording)
    result = analyse(tmp_path / "ticket", rewind=("0",), from_run=search.run_dir.path, levels=(2,))
    trunk_mask = search.run_dir.load_mask(2)
    entry = result.entries[0]
    assert entry["level"] == 2 and entry["weights_remaining"] == trunk_mask.density() < 0.7
    assert len(seen) == 5
    for _alpha, _mask, state in seen:
        for name, m in trunk_mask.items():
            assert state[name][~m].eq(0).all()
    children = [result.run_dir.load_weights(f"t00_level02_k0_child{c}") for c in range(2)]
    for child in children:
        assert all(child[name][~m].eq(0).all() for name, m in trunk_mask.items())
    start = search.run_dir.load_weights("init")  # the level's start: w_0 under its mask
    parent = result.run_dir.load_weights("t00_level02_k0_parent")
    assert all(parent[n].equal(start[n] * trunk_mask[n]) for n in trunk_mask)
    assert RunDir(result.run_dir.path).config()["stability"]["from"] == str(search.run_dir.path.resolve())


def test_cli_json_has_the_documented_keys(search, tmp_path, capsys):
    rc, out, err = cli(
        capsys,
        "stability",
        "--from",
        search.run_dir.path,
        "--levels",
        "0,1",
        "--rewind",
        "40",
        "--points",
        "3",
        "--path-train-size",
        "100",
        "--out",
        tmp_path / "s",
        "--json",
    )
    assert rc == 0, err
    entries = json.loads(out)["stability"]
    assert [e["level"] for e in entries] == [0, 1]
    for entry in entries:
        assert {
            "level",
            "weights_remaining",
            "rewind_iteration",
            "copies",
            "instability_test",
            "instability_train",
            "loss_barrier_test",
            "path",
            "stable",
        } <= set(entry)
        assert set(entry["path"]) >= {"alpha", "test_error", "train_error"} and entry["path"]["alpha"] == [0, 0.5, 1]
    rc, out, _ = cli(capsys, "show", tmp_path / "s")
    assert rc == 0 and "test instability (pp)" in out and "instability analysis of" in out


# ---------------------------------------------------------------------------------- bad input


def _nothing_written(root: Path, out: Path) -> None:
    assert not out.exists()
    assert not root.exists() or [p.name for p in root.iterdir()] in ([], ["lth-index.sqlite"])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--rewind", "0,120"],
            "rewind point '120' = iteration 120 is not before the end of training (budget 120 iterations)",
        ),
        (["--rewind", "0,5000it"], "rewind point '5000it' = iteration 5000 is not before the end of training"),
        (["--copies", "1"], "--copies must be a whole number >= 2 (instability compares pairs of copies), got 1"),
        (["--points", "1"], "--points must be a whole number >= 2"),
        (["--stable-threshold", "-1"], "--stable-threshold must be between 0 and 100 percentage points, got -1.0"),
        (["--rewind", "0,,40"], "cannot read rewind points '0,,40'"),
        (["--levels", "1"], "--levels needs --from RUN"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "stability", "lenet-300-100", "digits", "--iterations", "120", *args, "--out", out)
    assert message in one_line_error(rc, err)
    _nothing_written(tmp_path / "runs", out)


def test_bad_from_runs_are_refused_before_anything_is_written(search, tmp_path, capsys):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    (empty / "config.yaml").write_text((search.run_dir.path / "config.yaml").read_text())
    study = tmp_path / "study"
    study.mkdir()
    from lth.store.study_dir import STUDY_FILE

    (study / STUDY_FILE).write_text("{}")
    out = tmp_path / "out"
    cases = [
        (["--from", empty], "has no finished level with a mask"),
        (["--from", study], "is a study; give one of its trials"),
        (["--from", search.run_dir.path, "--levels", "0,7"], "level 7 is not among the levels of"),
        (["--from", search.run_dir.path, "--levels", "x"], "cannot read levels 'x'"),
        (["--from", tmp_path / "nowhere"], "is not an lth run directory"),
        (["--from", search.run_dir.path, "--lr", "0.1"], "--lr cannot change the recipe of the ticket search"),
        (["lenet-300-100", "digits", "--from", search.run_dir.path], "do not give MODEL DATASET too"),
    ]
    for args, message in cases:
        rc, _, err = cli(capsys, "stability", *args, "--out", out)
        assert message in one_line_error(rc, err), args
        _nothing_written(tmp_path / "runs", out)
    assert sorted(p.name for p in empty.iterdir()) == ["config.yaml"]


def test_a_rewind_point_before_the_searchs_own_is_refused(tmp_path, capsys):
    from lth import find_ticket

    late = find_ticket(make_config({**SMALL, "rounds": 1, "rewind": "20it"}), out=tmp_path / "late", progress=False)
    rc, _, err = cli(capsys, "stability", "--from", late.run_dir.path, "--rewind", "0", "--out", tmp_path / "o")
    assert "rewind point 0 is before level 1's start" in one_line_error(rc, err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(LthError, match="exists; continue it with --resume"):
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "config.yaml").write_text("model: x\n")
        analyse(tmp_path / "o")


# ---------------------------------------------------------------------------------- resume


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    lth = [
        sys.executable,
        "-m",
        "lth",
        "stability",
        "lenet-300-100",
        "digits",
        "--iterations",
        "400",
        "--eval-every",
        "100",
        "--checkpoint-every",
        "25",
        "--rewind",
        "0,50",
        "--points",
        "3",
        "-q",
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_stability(
        make_config({**SMALL, "iterations": 400, "eval_every": 100, "checkpoint_every": 25}),
        StabilitySettings(rewind=("0", "50"), points=3),
        out=reference,
        progress=False,
    )
    process = subprocess.Popen([*lth, "--out", str(killed)], env=_env())
    deadline = time.time() + 300
    while time.time() < deadline:  # kill inside the second child's training of k = 0
        if (killed / "weights" / "t00_level00_k0_child0.pt").is_file() and (killed / "checkpoint.pt").is_file():
            state = torch.load(killed / "checkpoint.pt", weights_only=True)
            if state.get("training") is not None and state["training"]["unit"] == "t0/L0/k0/child1":
                break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert RunDir(killed).status()["status"] == "running"
    done = subprocess.run(
        [sys.executable, "-m", "lth", "resume", str(killed), "-q"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert (killed / "stability.csv").read_bytes() == (reference / "stability.csv").read_bytes()
    a, b = read_entries(RunDir(reference)), read_entries(RunDir(killed))
    for x, y in zip(a, b):
        for child_x, child_y in zip(x["children"], y["children"]):
            child_x.pop("seconds"), child_y.pop("seconds")
    assert a == b
    for path in sorted((reference / "weights").iterdir()):
        x, y = torch.load(path, weights_only=True), torch.load(killed / "weights" / path.name, weights_only=True)
        assert all(x[k].equal(y[k]) for k in x), path.name
    assert RunDir(killed).status()["status"] == "complete" and not (killed / "checkpoint.pt").exists()


def test_several_runs_share_one_instability_figure(dense_run, tmp_path):
    from lth.plots import make_plots
    from lth.plots.stability import instability_figure

    other = analyse(tmp_path / "other", rewind=("40",), points=3)
    figure = instability_figure([dense_run.run_dir, other.run_dir])
    ax = figure.axes[0]
    labels = [c.get_label() for c in ax.containers]
    assert labels == ["dense, level 0: 100% of weights", "other, level 0: 100% of weights"]
    assert [list(c.lines[0].get_xdata()) for c in ax.containers] == [[0, 40], [40]]
    assert list(ax.containers[0].lines[0].get_ydata()) == [100 * e["instability_test"] for e in dense_run.entries]
    written = make_plots([dense_run.run_dir.path, other.run_dir.path], ["stability"], tmp_path / "plots", ["png"])
    assert sorted(p.name for p in written.written) == [
        "instability--dense.png",
        "instability--other.png",
        "instability.png",
        "stability_path--dense.png",
        "stability_path--other.png",
    ]
