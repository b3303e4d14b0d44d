"""Supermasks at initialisation: exact cell values, kept counts, transforms, the CLI and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth.actions import init_std
from lth.cli import main
from lth.models import build_model
from lth.supermasks import DEFAULT_KEEPS, SupermaskGrid, evaluate_supermasks
from lth.supermasks.evaluate import ROW_FIELDS
from lth.training.evaluate import evaluate

MODEL = "lenet-300-100"
LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")
SIZES = (64 * 300, 300 * 100, 100 * 10)  # lenet-300-100 on 8x8 digits: 50,200 prunable weights
FAST = ["--iterations", "50", "--device", "cpu"]
GRID = ["--criteria", "lf,lfss", "--keep", "1.0,0.5,0.2", "--weights", "init,signed_constant"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def weights(digits):
    """(w_i, w_f): an untrained lenet-300-100 (seed 0) and, standing in for trained weights, another draw."""
    w_init = build_model(MODEL, digits.input_shape, digits.num_classes, seed=0).state_dict()
    w_final = build_model(MODEL, digits.input_shape, digits.num_classes, seed=1).state_dict()
    return w_init, w_final


@pytest.fixture(scope="module")
def grid(digits, weights):
    return SupermaskGrid(MODEL, digits, *weights, seed=0)


# ------------------------------------------------------------------ the API, exact


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_all_ones_mask_is_the_untrained_network(digits, weights, scope):
    rows = evaluate_supermasks(MODEL, digits, *weights, ["large_final", "snip"], [1.0], ["init"], scope)
    model = build_model(MODEL, digits.input_shape, digits.num_classes, seed=0)
    train_loss, train_acc = evaluate(model, digits.train_x[:10_000], digits.train_y[:10_000]).tolist()
    test_loss, test_acc = evaluate(model, digits.test_x, digits.test_y).tolist()
    assert len(rows) == 2
    for row in rows:
        assert list(row) == list(ROW_FIELDS)
        assert (row["keep"], row["weights"], row["weights_remaining"]) == (1.0, "init", 1.0)
        assert row["train_loss"] == train_loss and row["train_accuracy"] == train_acc
        assert row["test_loss"] == test_loss and row["test_accuracy"] == test_acc


@pytest.mark.parametrize(
    "keep,kept",
    [
        (1.0, (19200, 30000, 1000)),
        (0.8, (15360, 24000, 800)),
        (0.64, (12288, 19200, 640)),
        (0.5, (9600, 15000, 500)),
        (0.1, (1920, 3000, 100)),
        (0.01, (192, 300, 10)),
    ],
)
def test_layerwise_keep_gives_exact_counts_per_layer(grid, keep, kept):
    for criterion in ("large_final", "movement", "random"):
        mask = grid.mask(criterion, keep)
        assert tuple(int(mask[name].sum()) for name in LAYERS) == kept
        assert list(mask) == list(LAYERS)  # biases are never masked


def test_global_keep_and_realised_density(digits, weights, grid):
    assert int(sum(m.sum() for m in grid.mask("large_final", 0.5, "global").values())) == 25100
    rows = evaluate_supermasks(MODEL, digits, *weights, ["lf"], [0.5, 0.1], ["init"], "layerwise")
    assert [r["weights_remaining"] for r in rows] == [25100 / 50200, 5020 / 50200]
    assert [r["criterion"] for r in rows] == ["large_final"] * 2  # aliases resolved


def test_default_keep_ladder():
    assert len(DEFAULT_KEEPS) == 25 and DEFAULT_KEEPS[:3] == [1.0, 0.8, 0.64]
    assert DEFAULT_KEEPS[-1] == pytest.approx(0.8**24) and DEFAULT_KEEPS[-1] < 0.005


def test_large_final_masks_keep_the_largest_and_are_nested(grid, weights):
    _, w_final = weights
    masks = [grid.mask("large_final", keep) for keep in (0.5, 0.2, 0.05)]
    for name in LAYERS:
        size = w_final[name].abs()
        assert size[masks[0][name]].min() >= size[~masks[0][name]].max()
        for big, small in zip(masks, masks[1:]):
            assert not (small[name] & ~big[name]).any()


def test_signed_constant_cell_reconstructs(digits, weights, grid):
    w_init, _ = weights
    mask = grid.mask("large_final_same_sign", 0.2)
    state = grid.state(mask, "signed_constant")
    for name in LAYERS:
        expected = torch.where(mask[name], init_std(w_init[name]) * torch.sign(w_init[name]), 0.0)
        assert torch.equal(state[name], expected)
        assert set(state[name][mask[name]].abs().unique().tolist()) == {init_std(w_init[name]).item()}
    for name in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert torch.equal(state[name], w_init[name])
    model = build_model(MODEL, digits.input_shape, digits.num_classes, seed=5)
    model.load_state_dict(state)
    test_loss, test_acc = evaluate(model, digits.test_x, digits.test_y).tolist()
    (row,) = evaluate_supermasks(MODEL, digits, *weights, ["lfss"], [0.2], ["signed_constant"])
    assert (row["test_loss"], row["test_accuracy"]) == (test_loss, test_acc)


def test_rand_signed_constant_and_reinit(grid, weights):
    w_init, _ = weights
    mask = grid.mask("large_init", 0.5)
    state = grid.state(mask, "rand_signed_constant")
    kept = state["fc1.weight"][mask["fc1.weight"]]
    assert torch.equal(kept.abs(), torch.full_like(kept, init_std(w_init["fc1.weight"]).item()))
    agree = (torch.sign(kept) == torch.sign(w_init["fc1.weight"][mask["fc1.weight"]])).float().mean()
    assert 0.4 < agree < 0.6  # random signs
    fresh = grid.state(mask, "reinit")["fc2.weight"]
    assert (fresh == 0).sum() == 15000 and not torch.equal(fresh, state["fc2.weight"])
    assert torch.equal(grid.state(mask, "reinit")["fc2.weight"], fresh)  # seeded: the same twice


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """A trained-dense supermask run, a find-ticket run, and a supermask run reusing it (--from)."""
    root = tmp_path_factory.mktemp("supermask")
    assert main(["supermask", "eval", MODEL, "digits", *FAST, *GRID, "--out", str(root / "sm"), "--quiet"]) == 0
    assert main(["find-ticket", MODEL, "digits", *FAST, "--rounds", "1", "--out", str(root / "ft"), "--quiet"]) == 0
    return root


def _json_rows(path: Path) -> list[dict]:
    return json.loads((path / "supermask_eval.json").read_text())


def test_cli_writes_rows_plots_and_nested_dense_run(cli_runs):
    run = cli_runs / "sm"
    rows = _json_rows(run)
    assert len(rows) == 12 and all(list(r) == list(ROW_FIELDS) for r in rows)
    assert {(r["criterion"], r["keep"], r["weights"]) for r in rows} == {
        (c, k, w)
        for c in ("large_final", "large_final_same_sign")
        for k in (1.0, 0.5, 0.2)
        for w in ("init", "signed_constant")
    }
    with (run / "supermask_eval.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 12 and list(table[0]) == list(ROW_FIELDS)
    assert [float(t["test_accuracy"]) for t in table] == [r["test_accuracy"] for r in rows]
    for name in ("supermask_accuracy_vs_kept.png", "supermask_heatmap.png"):
        data = (run / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1024
    assert (run / "dense" / "weights" / "init.pt").is_file()
    assert (run / "dense" / "weights" / "final_round_00.pt").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


def test_show_supermask_run(capsys, cli_runs):
    rc, out, err = cli(capsys, "show", cli_runs / "sm", "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert {"config", "supermask_eval"} <= set(shown)
    assert shown["config"]["kind"] == "supermask-eval" and shown["config"]["model"] == MODEL
    assert shown["supermask_eval"] == _json_rows(cli_runs / "sm")
    rc, out, err = cli(capsys, "show", cli_runs / "sm")
    assert rc == 0, err
    assert "large_final_same_sign" in out and "signed_constant" in out
    assert sum(line.startswith("large_final") for line in out.splitlines()) == 12
    rc, out, _ = cli(capsys, "show", cli_runs / "ft", "--json")  # ticket runs unchanged
    assert rc == 0 and "rounds" in json.loads(out) and "supermask_eval" not in json.loads(out)


def test_from_reuses_a_find_ticket_run(capsys, cli_runs):
    rc, out, err = cli(
        capsys, "supermask", "eval", "--from", cli_runs / "ft", *GRID, "--out", cli_runs / "from", "--json"
    )
    assert rc == 0, err
    assert json.loads(out)["supermask_eval"] == _json_rows(cli_runs / "sm")  # the same dense net
    assert _json_rows(cli_runs / "from") == _json_rows(cli_runs / "sm")
    assert not (cli_runs / "from" / "dense").exists()


@pytest.mark.usefixtures("offline_env")
@pytest.mark.parametrize(
    "args,fragments",
    [
        ([MODEL, "digits", *FAST, "--criteria", "lf,biggest"], ["'biggest'", "large_final", "movement", "lfss"]),
        ([MODEL, "digits", *FAST, "--weights", "init,glitter"], ["'glitter'", "init", "signed_constant", "reinit"]),
        ([MODEL, "digits", *FAST, "--keep", "1.0,0"], ["0.0", "(0, 1]"]),
        ([MODEL, "digits", *FAST, "--keep", "1.5"], ["1.5", "(0, 1]"]),
        ([MODEL, "digits", *FAST, "--keep", "half"], ["'half'"]),
        ([MODEL, "digits", *FAST, "--scope", "per-layer"], ["'per-layer'", "layerwise"]),
        ([MODEL, "digits", *FAST, "--weights", "rand_signed_constant", "--keep-sign"], ["rand_signed_constant"]),
        (["lenet-301", "digits", *FAST], ["'lenet-301'", "lenet-300-100"]),
        ([MODEL, "emnist", *FAST], ["'emnist'", "digits"]),
        ([MODEL, "digits", "--iterations", "0"], ["iterations"]),
        ([MODEL, "digits", *FAST, "--batch-size", "100000"], ["batch size"]),
        ([*FAST], ["MODEL", "--from"]),
        (["--from", "no-such-run"], ["'no-such-run'"]),
    ],
)
def test_bad_inputs_fail_in_one_line(capsys, tmp_path, args, fragments):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "supermask", "eval", *args, "--out", out, "--quiet")
    line = one_line_error(rc, err)
    for fragment in fragments:
        assert fragment in line
    assert not out.exists()  # refused before anything was left behind


@pytest.mark.usefixtures("offline_env")
def test_from_needs_a_finished_run(capsys, tmp_path, cli_runs):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((cli_runs / "ft" / "config.yaml").read_text())
    for source, fragment in [
        (unfinished, "weights/init.pt"),
        (tmp_path, "not an lth run"),
        (cli_runs / "sm", "not a ticket run"),
    ]:
        rc, _, err = cli(capsys, "supermask", "eval", "--from", source, "--out", tmp_path / "out", "--quiet")
        assert fragment in one_line_error(rc, err)
    rc, _, err = cli(capsys, "supermask", "eval", "--from", cli_runs / "ft", "--lr", "0.1", "--quiet")
    assert "--lr" in one_line_error(rc, err)
    rc, _, err = cli(capsys, "supermask", "eval", "conv-2", "digits", "--from", cli_runs / "ft", "--quiet")
    assert "conv-2" in one_line_error(rc, err)
    assert not (tmp_path / "out").exists()
