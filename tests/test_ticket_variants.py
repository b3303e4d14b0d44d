"""Ticket-search variants: mask-1/mask-0 actions, controls, one-shot pruning, the choice of w_f."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_search
from lth.cli import main
from lth.criteria import compute_scores
from lth.data import load_dataset
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import layer_rates, prunable_parameters, prune
from lth.store import RunDir
from lth.training import OptimizerSettings, Trainer

LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")


def test_controls_leave_the_ticket_unchanged_and_have_the_ticket_shape(tmp_path):
    plain = run_search(None, seed=3)
    with_controls = run_search(tmp_path / "run", seed=3, controls=["reinit", "random-prune"])
    assert with_controls.rounds == [{**r, "seconds": s["seconds"]} for r, s in zip(plain.rounds, with_controls.rounds)]
    assert all(torch.equal(a[n], b[n]) for a, b in zip(plain.masks, with_controls.masks) for n in a)

    run = RunDir.open(tmp_path / "run")
    controls = run.controls()
    assert sorted(controls) == ["random-prune", "reinit"]
    for rounds in controls.values():
        assert [r["round"] for r in rounds] == [1, 2]
        assert set(rounds[0]) == set(with_controls.rounds[0])
    for r in (1, 2):
        ticket = run.load_mask(r)
        random_mask = run.control("random-prune").load_mask(r)
        reinit_mask = run.control("reinit").load_mask(r)
        for name in LAYERS:
            assert int(random_mask[name].sum()) == int(ticket[name].sum())  # same per-layer sparsity
            assert not torch.equal(random_mask[name], ticket[name])  # but other positions
            assert torch.equal(reinit_mask[name], ticket[name])  # the ticket's own mask


def test_reinit_control_starts_from_fresh_weights(tmp_path):
    result = run_search(tmp_path / "run", rounds=1, controls=["reinit"])
    rows = RunDir(tmp_path / "run").control("reinit").metrics()
    ticket_rows = RunDir(tmp_path / "run").metrics()
    first = lambda rows: [(r["split"], r["loss"]) for r in rows if r["round"] == 1 and r["iteration"] == 0]  # noqa: E731
    assert first(rows) != first(ticket_rows)  # not the rewound weights
    assert result.controls["reinit"][0]["weights_remaining"] == result.rounds[1]["weights_remaining"]


def test_json_output_gains_controls(capsys, tmp_path):
    out = tmp_path / "run"
    rc = main(
        [
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--iterations",
            "20",
            "--eval-every",
            "10",
            "--rounds",
            "1",
            "--controls",
            "reinit,random-prune",
            "--out",
            str(out),
            "--json",
            "--device",
            "cpu",
        ]
    )
    shown = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(shown["controls"]) == {"reinit", "random-prune"}
    assert [r["round"] for r in shown["controls"]["reinit"]] == [1]


def test_one_shot_prunes_once_to_the_fraction_kept(tmp_path):
    result = run_search(None, one_shot=True, keep=0.3, rounds=5)
    assert [r["round"] for r in result.rounds] == [0, 1]
    # every layer keeps exactly n - round(0.7 n): fc1 (8x8 inputs) 19200 -> 5760, fc2 30000 -> 9000, fc3 1000 -> 300
    assert result.rounds[1]["layers"] == {"fc1.weight": 0.3, "fc2.weight": 0.3, "fc3.weight": 0.3}
    assert result.rounds[1]["kept_weights"] == 5760 + 9000 + 300


@pytest.mark.parametrize("mask0", ["freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all", "zero"])
def test_mask0_pruned_weights_stay_at_their_start_values(tmp_path, mask0):
    out = tmp_path / mask0
    run_search(out, rounds=1, mask0=mask0)
    run = RunDir(out)
    init = run.load_weights("init")
    final0 = run.load_weights("final_round_00")
    final1 = run.load_weights("final_round_01")
    mask = run.load_mask(1)
    for name in LAYERS:
        pruned = ~mask[name]
        w_i, w_f = init[name], final0[name]
        shrank = w_i.abs() > w_f.abs()
        if mask0 == "zero":
            expected = torch.zeros_like(w_i)
        elif mask0 == "freeze_init":
            expected = w_i
        else:
            expected = torch.where(shrank, torch.zeros_like(w_i), w_i)
        assert torch.equal(final1[name][pruned], expected[pruned])  # frozen for the whole round


def _expected_first_mask(steps: int, seed: int, lr: float) -> Mask:
    """The round-1 mask large_final gives when w_f is the weights after ``steps`` plain steps."""
    data = load_dataset("digits")
    model = build_model("lenet-300-100", data.input_shape, data.num_classes, seed=seed)
    trainer = Trainer(data, 60, OptimizerSettings("adam", lr), seed=seed, eval_every=20, progress=False)
    trainer.train(model, None, 0, steps)
    params = dict(model.named_parameters())
    groups = prunable_parameters(model)
    w = {n: params[n].detach() for n in groups}
    mask = Mask.ones(w)
    scores = compute_scores("large_final", w, w, mask, torch.Generator().manual_seed(seed))
    return prune(scores, mask, layer_rates(groups, 0.2, 0.1, 0.1), "layerwise", torch.Generator().manual_seed(seed))


def test_w_final_at_a_fixed_iteration_scores_the_weights_of_that_step():
    result = run_search(None, rounds=1, w_final="40it", seed=2)
    expected = _expected_first_mask(40, seed=2, lr=1.2e-3)
    assert all(torch.equal(result.masks[1][n], expected[n]) for n in LAYERS)


def test_w_final_at_early_stop_scores_the_weights_of_minimum_validation_loss():
    result = run_search(None, rounds=1, iterations=200, eval_every=20, lr=1e-2, w_final="early-stop")
    stop = result.rounds[0]["early_stop_iteration"]
    # before the end of training, so the choice of w_f matters (the exact iteration depends on the
    # CPU's floating-point kernels: 140 on some machines, 120 on others)
    assert 0 < stop < 200 and stop % 20 == 0
    expected = _expected_first_mask(stop, seed=0, lr=1e-2)
    assert all(torch.equal(result.masks[1][n], expected[n]) for n in LAYERS)
    at_end = run_search(None, rounds=1, iterations=200, eval_every=20, lr=1e-2)
    assert not all(torch.equal(at_end.masks[1][n], expected[n]) for n in LAYERS)


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--keep", "0.5"], "--one-shot"),
        (["--one-shot"], "--keep"),
        (["--one-shot", "--keep", "0"], "keep"),
        (["--one-shot", "--keep", "1.5"], "keep"),
        (["--controls", "reinit,bogus"], "bogus"),
        (["--mask1", "bogus"], "rewind"),
        (["--mask0", "bogus"], "freeze_init"),
        (["--constant", "0"], "constant"),
        (["--constant", "-1"], "constant"),
        (["--criterion", "bogus"], "large_final"),
        (["--w-final", "5000it"], "w_final"),
    ],
)
def test_bad_variant_options_give_one_line(capsys, tmp_path, flags, fragment):
    rc = main(
        [
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--iterations",
            "20",
            "--quiet",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
            *flags,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lth: error:"), err
    assert fragment in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("criterion", ["snip", "grad", "lilf", "movement", "lfss", "magnitude_increase_diff_sign"])
def test_every_kind_of_criterion_drives_a_search(criterion):
    result = run_search(None, rounds=1, iterations=20, criterion=criterion)
    assert result.rounds[1]["kept_weights"] == 15360 + 24000 + 900  # exact counts whatever the scores


@pytest.fixture
def round_starts(monkeypatch):
    """The fc3 weight at the start of every training the search runs."""
    from lth.training import trainer as trainer_module

    starts: list[torch.Tensor] = []
    original = trainer_module.Trainer.train

    def train(self, model, mask, *args, **kwargs):
        starts.append(dict(model.named_parameters())["fc3.weight"].detach().clone())
        return original(self, model, mask, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "train", train)
    return starts


def _check_start(mask1: str, start: torch.Tensor, init: torch.Tensor, kept: torch.Tensor) -> None:
    values, w_i = start[kept], init[kept]
    size, count = init.numel(), int(kept.sum())
    std = init.std(correction=0)
    if mask1 == "signed_constant":
        assert torch.equal(values, 0.05 * w_i.sign())
    elif mask1 == "rand_signed_constant":
        assert torch.allclose(values.abs(), std.expand_as(values))
        assert 0 < int((values.sign() != w_i.sign()).sum()) < count  # signs are random, not w_i's
    elif mask1 == "signed_reshuffle":
        assert torch.equal(values.abs().sort().values, w_i.abs().sort().values)
        assert torch.equal(values.sign(), w_i.sign())
        assert not torch.equal(values.abs(), w_i.abs())
    elif mask1 == "random_reinit":
        assert bool(torch.isin(values, init.flatten()).all()) and not torch.equal(values, w_i)
    elif mask1 in ("reinit", "signed_reinit"):
        assert not bool(torch.isin(values, init.flatten()).any())
        if mask1 == "signed_reinit":
            assert torch.equal(values.sign(), w_i.sign())
    elif mask1 == "jitter":
        assert abs(float((values - w_i).std()) - 0.1) < 0.01
    elif mask1 == "rewind":  # with --keep-sign --rescale
        assert torch.allclose(values, w_i * size / count)
    assert bool((start[~kept] == 0).all())


@pytest.mark.parametrize(
    "mask1,extra",
    [
        ("reinit", {}),
        ("signed_reinit", {}),
        ("random_reinit", {}),
        ("signed_reshuffle", {}),
        ("signed_constant", {"constant": 0.05}),
        ("rand_signed_constant", {}),
        ("jitter", {"jitter_sd": 0.1}),
        ("rewind", {"keep_sign": True, "rescale": True}),
    ],
)
def test_mask1_actions_set_the_starting_weights(tmp_path, round_starts, mask1, extra):
    out = tmp_path / mask1
    run_search(out, rounds=1, iterations=20, eval_every=20, mask1=mask1, **extra)
    run = RunDir(out)
    init, kept = run.load_weights("init")["fc3.weight"], run.load_mask(1)["fc3.weight"]
    assert len(round_starts) == 2 and torch.equal(round_starts[0], init)
    _check_start(mask1, round_starts[1], init, kept)


def test_init_mask_prunes_from_round_0(tmp_path):
    first = run_search(tmp_path / "a", rounds=1)
    mask_file = tmp_path / "a" / "masks" / "round_01.pt"
    second = run_search(tmp_path / "b", rounds=1, init_mask=str(mask_file))
    assert second.rounds[0]["weights_remaining"] == first.rounds[1]["weights_remaining"]
    assert all(torch.equal(second.masks[0][n], first.masks[1][n]) for n in LAYERS)
    final = RunDir(tmp_path / "b").load_weights("final_round_00")
    assert all(bool((final[n][~second.masks[0][n]] == 0).all()) for n in LAYERS)


def test_init_mask_that_does_not_match_the_model_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    Mask({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}).save(bad)
    unknown = tmp_path / "unknown.pt"
    Mask({"conv9.weight": torch.ones(3, 3, dtype=torch.bool)}).save(unknown)
    for path, fragment in ((bad, "shape"), (unknown, "conv9.weight"), (tmp_path / "missing.pt", "does not exist")):
        rc = main(
            [
                "find-ticket",
                "lenet-300-100",
                "digits",
                "--iterations",
                "20",
                "--quiet",
                "--device",
                "cpu",
                "--init-mask",
                str(path),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and fragment in err[0], err
        assert not (tmp_path / "run").exists()
