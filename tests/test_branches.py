"""Branches run off a finished ticket search (`lth branch`): what each kind starts from, exactly;
a retrain with the trunk's own settings reproduces the trunk; a killed branch resumes bit for bit;
bad input is one line, exit 2, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lth
from cli_helpers import cli, one_line_error
from lth import TicketConfig, find_ticket
from lth.data import DATASETS
from lth.errors import LthError
from lth.experiments.branches import BRANCH_KINDS, BranchSpec, branch, level_seed, parse_levels, resume_branch
from lth.models import build_model
from lth.store import RunDir

TRUNK = dict(
    model="lenet-300-100",
    dataset="digits",
    iterations=60,
    eval_every=30,
    rounds=2,
    device="cpu",
    checkpoint_every=20,
    vectorize="off",
)
KINDS = ("random-reinit", "random-prune", "shuffle-mask", "flip-sign", "one-shot", "retrain")


class Crash(Exception):
    pass


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr("lth.plots.plot_run", lambda run: [])
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])


@pytest.fixture(scope="module")
def trunk(tmp_path_factory) -> Path:
    """A finished 3-level search rewinding to iteration 20."""
    out = tmp_path_factory.mktemp("trunk") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        find_ticket(TicketConfig(**TRUNK, rewind="20it"), out=out, progress=False)
    return out


def _copy(trunk: Path, tmp_path: Path) -> Path:
    """A private copy of the trunk (branches write into it)."""
    import shutil

    target = tmp_path / "trunk"
    shutil.copytree(trunk, target, ignore=shutil.ignore_patterns("branches", ".lth-lock"))
    return target


def _weights(run: Path, tag: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights" / f"{tag}.pt", weights_only=True)


def _strip(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


PRUNABLE = ("fc1.weight", "fc2.weight", "fc3.weight")


def test_parse_levels():
    assert parse_levels("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_levels(" 2 , 1-2 ") == (1, 2)
    for bad in ("a", "3-1", "1,,2", "-1"):
        with pytest.raises(LthError):
            parse_levels(bad)


def test_branch_names_follow_kind_and_options():
    assert BranchSpec("retrain").name() == "retrain"
    assert BranchSpec("retrain", overrides={"optimizer": "sgd", "lr": 0.01}).name() == "retrain-lr-0.01-optimizer-sgd"
    assert BranchSpec("random-prune", seed=3, scope="global").name() == "random-prune-global-seed3"
    assert set(KINDS) == set(BRANCH_KINDS.names())


def test_retrain_with_the_trunks_settings_reproduces_the_trunk_bit_for_bit(trunk, tmp_path):
    run = _copy(trunk, tmp_path)
    result = branch(run, "retrain", progress=False)
    out = run / "branches" / "retrain"
    assert result.run_dir.path == out
    assert _strip(RunDir(out).rounds()) == _strip(RunDir(run).rounds())
    assert (out / "metrics.csv").read_bytes() == (run / "metrics.csv").read_bytes()
    for level in (0, 1, 2):
        a, b = _weights(run, f"final_round_{level:02d}"), _weights(out, f"final_round_{level:02d}")
        assert all(torch.equal(a[k], b[k]) for k in a)
        ma, mb = RunDir(run).load_mask(level), RunDir(out).load_mask(level)
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    # beside the ticket: lth show --json, the runs index, and the kind in config.yaml
    assert RunDir(out).config()["kind"] == "branch"
    assert RunDir(out).status()["status"] == "complete" and not (out / "checkpoint.pt").exists()


def test_retrain_reproduces_a_trunk_whose_rounds_do_not_start_from_the_rewind_weights(tmp_path):
    """mask1 signed_constant: the search stores each round's start (weights/start_round_NN.pt)."""
    run = tmp_path / "trunk"
    find_ticket(TicketConfig(**{**TRUNK, "rounds": 1}, mask1="signed_constant"), out=run, progress=False)
    assert (run / "weights" / "start_round_01.pt").is_file() and not (run / "weights" / "start_round_00.pt").exists()
    out = lth.branch(run, "retrain", progress=False).run_dir.path
    assert _strip(RunDir(out).rounds()) == _strip(RunDir(run).rounds())
    start = _weights(out, "start_round_01")
    assert torch.equal(start["fc1.weight"], _weights(run, "start_round_01")["fc1.weight"])
    assert len(set(start["fc1.weight"].abs().unique().tolist()) - {0.0}) == 1  # one constant magnitude


def test_random_prune_and_shuffle_mask_keep_the_per_layer_counts(trunk, tmp_path):
    run = _copy(trunk, tmp_path)
    branch(run, "shuffle-mask", levels="1-2", progress=False)
    branch(run, "random-prune", levels=[2], progress=False)
    branch(run, "random-prune", levels=[2], scope="global", seed=5, progress=False)
    ticket = RunDir(run).load_mask(2)
    rewind = _weights(run, "rewind")
    for name in ("shuffle-mask", "random-prune"):
        out = RunDir(run / "branches" / name)
        mask = out.load_mask(2)
        for key in PRUNABLE:
            assert int(mask[key].sum()) == int(ticket[key].sum())
            assert not torch.equal(mask[key], ticket[key])  # another mask with the same count
        start = _weights(out.path, "start_round_02")
        for key in PRUNABLE:  # the trunk's rewind weights under the new mask, 0 elsewhere
            assert torch.equal(start[key], torch.where(mask[key], rewind[key], torch.zeros_like(rewind[key])))
        assert torch.equal(start["fc1.bias"], rewind["fc1.bias"])
    assert [r["round"] for r in RunDir(run / "branches" / "shuffle-mask").rounds()] == [1, 2]
    glob = RunDir(run / "branches" / "random-prune-global-seed5").load_mask(2)
    assert sum(int(glob[k].sum()) for k in PRUNABLE) == sum(int(ticket[k].sum()) for k in PRUNABLE)
    assert [int(glob[k].sum()) for k in PRUNABLE] != [int(ticket[k].sum()) for k in PRUNABLE]


def test_flip_sign_inverts_exactly_the_kept_starting_weights(trunk, tmp_path):
    run = _copy(trunk, tmp_path)
    branch(run, "flip-sign", levels="0,2", progress=False)
    out = run / "branches" / "flip-sign"
    rewind, init, mask2 = _weights(run, "rewind"), _weights(run, "init"), RunDir(run).load_mask(2)
    start2, start0 = _weights(out, "start_round_02"), _weights(out, "start_round_00")
    for key in PRUNABLE:
        kept = mask2[key]
        assert torch.equal(start2[key][kept], -rewind[key][kept])
        assert torch.equal(start2[key][~kept], torch.zeros(int((~kept).sum())))
        assert torch.equal(start0[key], -init[key])  # level 0 is dense
    assert torch.equal(start2["fc1.bias"], rewind["fc1.bias"])  # biases are not pruned: unchanged
    assert torch.equal(RunDir(out).load_mask(2)["fc1.weight"], mask2["fc1.weight"])


def test_random_reinit_draws_from_the_models_initialiser_with_the_branch_seed(trunk, tmp_path):
    run = _copy(trunk, tmp_path)
    branch(run, "random-reinit", levels="1", seed=11, progress=False)
    out = run / "branches" / "random-reinit-seed11"
    source = DATASETS.get("digits")
    fresh = build_model(
        "lenet-300-100", source.input_shape, source.num_classes, seed=level_seed(11, "random-reinit", 1)
    ).state_dict()
    mask = RunDir(run).load_mask(1)
    start = _weights(out, "start_round_01")
    for key, value in fresh.items():
        expected = torch.where(mask[key], value, torch.zeros_like(value)) if key in mask else value
        assert torch.equal(start[key], expected), key
    assert not torch.equal(start["fc1.weight"], _weights(run, "rewind")["fc1.weight"] * mask["fc1.weight"])


def test_one_shot_at_level_one_is_the_trunks_first_prune(trunk, tmp_path):
    """Pruning the dense w_f once to round 1's counts by |w_f| keeps what round 1 kept (no ties)."""
    run = _copy(trunk, tmp_path)
    branch(run, "one-shot", levels="1-2", progress=False)
    out = RunDir(run / "branches" / "one-shot")
    ticket1, ticket2 = RunDir(run).load_mask(1), RunDir(run).load_mask(2)
    one1, one2 = out.load_mask(1), out.load_mask(2)
    final0 = _weights(run, "final_round_00")
    for key in PRUNABLE:
        assert torch.equal(one1[key], ticket1[key])
        assert int(one2[key].sum()) == int(ticket2[key].sum())
        # level 2: the largest |w_f| of the dense round, nothing else
        kept, dropped = final0[key].abs()[one2[key]], final0[key].abs()[~one2[key]]
        assert kept.min() >= dropped.max()


def test_a_killed_branch_resumes_bit_identically(trunk, tmp_path, monkeypatch):
    reference = branch(_copy(trunk, tmp_path / "ref"), "shuffle-mask", seed=1, progress=False).run_dir.path
    original = RunDir.write_checkpoint
    # level 0 trains 0-60 (checkpoints at 20, 40 and after it), levels 1 and 2 from the rewind point 20
    # (at 40 and after each): 7 checkpoints
    for stop_after in (2, 4, 7):  # inside level 0, inside level 1, after the last level
        written = []

        def crashing(self, state, written=written, stop_after=stop_after):
            original(self, state)
            written.append(state)
            if len(written) == stop_after:
                raise Crash

        run = _copy(trunk, tmp_path / f"kill{stop_after}")
        monkeypatch.setattr(RunDir, "write_checkpoint", crashing)
        with pytest.raises(Crash):
            branch(run, "shuffle-mask", seed=1, progress=False)
        monkeypatch.setattr(RunDir, "write_checkpoint", original)
        assert (written[-1]["training"] is None) == (stop_after == 7)
        out = run / "branches" / "shuffle-mask-seed1"
        assert RunDir(out).status()["status"] == "running"
        resume_branch(out, progress=False)
        assert _strip(RunDir(out).rounds()) == _strip(RunDir(reference).rounds())
        assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
        for path in sorted((reference / "weights").iterdir()):
            a, b = torch.load(path, weights_only=True), torch.load(out / "weights" / path.name, weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a), path.name
        assert RunDir(out).status()["status"] == "complete" and not (out / "checkpoint.pt").exists()


def test_lth_resume_continues_a_branch(trunk, tmp_path, monkeypatch, capsys):
    run = _copy(trunk, tmp_path)
    original = RunDir.write_checkpoint
    calls = []

    def crashing(self, state):
        original(self, state)
        calls.append(1)
        if len(calls) == 3:
            raise Crash

    monkeypatch.setattr(RunDir, "write_checkpoint", crashing)
    with pytest.raises(Crash):
        branch(run, "retrain", progress=False)
    monkeypatch.setattr(RunDir, "write_checkpoint", original)
    out = run / "branches" / "retrain"
    rc, _, err = cli(capsys, "resume", out, "-q")
    assert rc == 0, err
    assert _strip(RunDir(out).rounds()) == _strip(RunDir(run).rounds())


def test_show_and_json_list_the_branches_beside_the_ticket(trunk, tmp_path, capsys):
    run = _copy(trunk, tmp_path)
    rc, out, err = cli(capsys, "branch", run, "retrain", "--levels", "1", "-q")
    assert rc == 0, err
    rc, out, _ = cli(capsys, "show", run)
    assert "branch retrain test acc @ES" in out
    rc, out, _ = cli(capsys, "show", run, "--json")
    shown = json.loads(out)
    assert list(shown["branches"]) == ["retrain"]
    assert [r["round"] for r in shown["branches"]["retrain"]] == [1]
    rc, out, _ = cli(capsys, "runs", "list")
    assert "branch" in out and "retrain" in out


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere", "retrain"], "does not exist"),
        (["{run}", "grow"], "unknown branch kind 'grow'"),
        (["{run}", "retrain", "--levels", "7"], "level 7 is not among the levels"),
        (["{run}", "retrain", "--model", "conv2"], "--model conv2 would change the model"),
        (["{run}", "retrain", "--dataset", "cifar10"], "--dataset cifar10 has inputs of shape"),
        (["{run}", "flip-sign", "--scope", "global"], "--scope applies to"),
        (["{run}/branches/retrain", "retrain"], "is a branch run, not a ticket search"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trunk, tmp_path, capsys, args, message):
    run = _copy(trunk, tmp_path)
    branch(run, "retrain", levels="0", progress=False)
    before = _tree(tmp_path)
    rc, _, err = cli(capsys, "branch", *[a.format(run=run) for a in args])
    assert message in one_line_error(rc, err)
    assert _tree(tmp_path) == before


def test_an_existing_branch_is_refused_unless_overwrite_or_resume(trunk, tmp_path, capsys):
    run = _copy(trunk, tmp_path)
    branch(run, "retrain", levels="1", progress=False)
    rc, _, err = cli(capsys, "branch", run, "retrain", "--levels", "1")
    assert "exists" in one_line_error(rc, err)
    (run / "branches" / "retrain" / "notes.txt").write_text("mine")
    rc, _, err = cli(capsys, "branch", run, "retrain", "--levels", "1", "--overwrite", "-q")
    assert rc == 0, err
    assert (run / "branches" / "retrain" / "notes.txt").read_text() == "mine"  # not lth's: kept


def _fake_mnist(directory: Path, seed: int) -> Path:
    """Small MNIST-format files (IDX, gzip): 5,100 training images (5,000 held out for validation)
    and 100 test images of 28x28."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for prefix, count in (("train", 5100), ("t10k", 100)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = (rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19).astype(np.uint8)
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", count, 28, 28) + images.tobytes())
        )
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", count) + labels.tobytes())
        )
    return directory


def test_retrain_on_another_dataset_of_the_same_shape_transfers_the_ticket(tmp_path, capsys):
    mnist, fashion = _fake_mnist(tmp_path / "mnist", 0), _fake_mnist(tmp_path / "fashion", 1)
    run = tmp_path / "trunk"
    find_ticket(
        TicketConfig(**{**TRUNK, "dataset": "mnist", "rounds": 1}, data_dir=str(mnist)), out=run, progress=False
    )
    rc, _, err = cli(capsys, "branch", run, "retrain", "--dataset", "fashion-mnist", "--data-dir", fashion, "-q")
    assert rc == 0, err
    out = RunDir(run / "branches" / "retrain-dataset-fashion-mnist")
    assert out.config()["dataset"] == "fashion-mnist" and out.config()["model"] == "lenet-300-100"
    assert [r["kept_weights"] for r in out.rounds()] == [r["kept_weights"] for r in RunDir(run).rounds()]
    for level in (0, 1):
        assert torch.equal(out.load_mask(level)["fc1.weight"], RunDir(run).load_mask(level)["fc1.weight"])
    assert _strip(out.rounds()) != _strip(RunDir(run).rounds())  # other data, other accuracies


def test_a_branch_on_a_study_runs_on_every_trial_and_joins_the_summary(tmp_path, capsys):
    study = tmp_path / "study"
    rc, _, err = cli(
        capsys,
        "robust",
        "lenet-300-100",
        "digits",
        "--trials",
        "2",
        "--rounds",
        "1",
        "--iterations",
        "40",
        "--eval-every",
        "20",
        "--device",
        "cpu",
        "--out",
        study,
        "-q",
    )
    assert rc == 0, err
    rc, out, err = cli(capsys, "branch", study, "random-prune", "--seed", "4", "-q")
    assert rc == 0, err
    trials = [RunDir(study / f"trial_{i:02d}" / "branches" / "random-prune-seed4") for i in (0, 1)]
    assert [t.config()["branch"]["seed_used"] for t in trials] == [4, 5]  # trial i: seed + i
    assert not torch.equal(trials[0].load_mask(1)["fc1.weight"], trials[1].load_mask(1)["fc1.weight"])
    rows = [
        r
        for r in json.loads((study / "summary.json").read_text())
        if r["line"] == "branch:random-prune-seed4" and r["metric"] == "test_accuracy_at_early_stop"
    ]
    assert [r["round"] for r in rows] == [0, 1]
    for row in rows:
        values = [
            next(x for x in t.rounds() if x["round"] == row["round"])["test_accuracy_at_early_stop"] for t in trials
        ]
        assert row["trials"] == 2 and row["mean"] == pytest.approx(sum(values) / 2, abs=1e-15)
        assert (row["min"], row["max"]) == (min(values), max(values))
    rc, out, _ = cli(capsys, "show", study)
    assert "branch:random-prune-seed4" in out
    rc, _, err = cli(capsys, "branch", study, "random-prune", "--seed", "4")
    assert "exists" in one_line_error(rc, err)


def test_runs_rm_of_a_trunk_removes_its_branches_and_their_rows(tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("LTH_RUNS_ROOT", str(root))
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--rounds",
        "1",
        "--iterations",
        "40",
        "--eval-every",
        "20",
        "--device",
        "cpu",
        "--name",
        "trunk",
        "-q",
    )
    assert rc == 0, err
    assert cli(capsys, "branch", root / "trunk", "flip-sign", "-q")[0] == 0
    rc, out, _ = cli(capsys, "runs", "list", "--json")
    assert sorted(r["kind"] for r in json.loads(out)) == ["branch", "find-ticket"]
    assert cli(capsys, "runs", "rm", "trunk", "--yes")[0] == 0
    assert not (root / "trunk").exists()
    rc, out, _ = cli(capsys, "runs", "list", "--json")
    assert json.loads(out) == []


def test_a_trunk_without_the_files_a_branch_needs_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "trunk"
    find_ticket(TicketConfig(**{**TRUNK, "rounds": 1}, mask1="signed_constant"), out=run, progress=False)
    (run / "weights" / "start_round_01.pt").unlink()  # as a run made before lth stored round starts
    before = _tree(tmp_path)
    rc, _, err = cli(capsys, "branch", run, "flip-sign")
    assert "did not store the starting weights of round 1" in one_line_error(rc, err)
    assert _tree(tmp_path) == before
    rc, _, err = cli(capsys, "branch", run, "flip-sign", "--levels", "0", "-q")  # level 0 needs only w_0
    assert rc == 0, err
