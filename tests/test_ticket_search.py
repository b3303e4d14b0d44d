"""Tests for lth.find_ticket on digits: determinism, rewinding, the run directory, global pruning."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from lth import LthError, TicketConfig, find_ticket
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import layer_rates, prunable_parameters, prune
from lth.store import RunDir
from lth.training import OptimizerSettings, Trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRUNED = ("fc1.weight", "fc2.weight", "fc3.weight")
# digits: 8x8 inputs -> fc1 64x300, fc2 300x100, fc3 100x10
SIZES = {"fc1.weight": 64 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
# the lenet recipe prunes 20% of fc and 10% of the output layer per round
KEPT_LAYERWISE = [
    {"fc1.weight": 19200, "fc2.weight": 30000, "fc3.weight": 1000},
    {"fc1.weight": 15360, "fc2.weight": 24000, "fc3.weight": 900},
    {"fc1.weight": 12288, "fc2.weight": 19200, "fc3.weight": 810},
]


def masks_of(run: RunDir, rounds: int) -> list[Mask]:
    return [run.load_mask(r) for r in range(rounds + 1)]


def equal_masks(a: Mask, b: Mask) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def equal_states(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def trainer_for(run: RunDir, data) -> Trainer:
    """A Trainer with exactly the resolved settings the search wrote to config.yaml."""
    c = run.config()
    budget = c["iterations"]
    assert c["milestones"] == [] and c["warmup"] in ("0", "0it")
    settings = OptimizerSettings(
        name=c["optimizer"],
        lr=c["lr"],
        momentum=c["momentum"],
        nesterov=c["nesterov"],
        weight_decay=c["weight_decay"],
        milestones=(),
        gamma=c["gamma"],
        warmup=0,
    )
    assert budget == 60
    return Trainer(data, c["batch_size"], settings, c["seed"], c["eval_every"], progress=False)


def fresh_lenet(seed: int) -> torch.nn.Module:
    return build_model("lenet-300-100", (1, 8, 8), 10, seed=seed)


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def without_seconds(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


# ------------------------------------------------------------------ determinism


def test_same_seed_bit_identical(search_seed0, search_seed0_again):
    a, b = search_seed0.run_dir, search_seed0_again.run_dir
    for ma, mb in zip(masks_of(a, 2), masks_of(b, 2)):
        assert equal_masks(ma, mb)
    assert (a.path / "metrics.csv").read_text() == (b.path / "metrics.csv").read_text()
    assert without_seconds(a.rounds()) == without_seconds(b.rounds())
    for r in range(3):
        assert equal_states(a.load_weights(f"final_round_{r:02d}"), b.load_weights(f"final_round_{r:02d}"))


def test_different_seed_different_masks(search_seed0, search_seed1):
    for r in (1, 2):
        a, b = search_seed0.masks[r], search_seed1.masks[r]
        assert not any(torch.equal(a[n], b[n]) for n in PRUNED)
        assert a.kept() == b.kept()  # the counts are fixed by the rates, not by the seed


def test_result_masks_match_saved_masks(search_seed0):
    run = search_seed0.run_dir
    assert len(search_seed0.masks) == 3
    for r, mask in enumerate(search_seed0.masks):
        assert equal_masks(mask, run.load_mask(r))


# ------------------------------------------------------------------ pruning in the search


def test_layerwise_counts_per_round(search_seed0):
    for r, summary in enumerate(search_seed0.rounds):
        mask = search_seed0.masks[r]
        assert list(mask) == list(PRUNED)
        assert {n: int(mask[n].sum()) for n in PRUNED} == KEPT_LAYERWISE[r]
        assert summary["kept_weights"] == sum(KEPT_LAYERWISE[r].values())
        assert summary["total_weights"] == sum(SIZES.values()) == 50200
        if r:
            previous = search_seed0.masks[r - 1]
            assert not any(bool((mask[n] & ~previous[n]).any()) for n in PRUNED)  # never resurrected


def test_masks_are_magnitude_pruning_of_final_weights(search_seed0):
    run = search_seed0.run_dir
    model = fresh_lenet(0)
    rates = layer_rates(prunable_parameters(model), fc=0.2, conv=0.1, output=0.1)
    generator = torch.Generator().manual_seed(0)
    mask = run.load_mask(0)
    for r in (1, 2):
        final = run.load_weights(f"final_round_{r - 1:02d}")
        scores = {n: final[n].abs() for n in PRUNED}
        mask = prune(scores, mask, rates, "layerwise", generator)
        assert equal_masks(mask, run.load_mask(r)), f"round {r}"


def test_final_weights_are_zero_where_pruned(search_seed0):
    run = search_seed0.run_dir
    for r in range(3):
        weights, mask = run.load_weights(f"final_round_{r:02d}"), run.load_mask(r)
        for n in PRUNED:
            assert bool((weights[n][~mask[n]] == 0).all())
            assert bool((weights[n][mask[n]] != 0).all())


# ------------------------------------------------------------------ rewinding


def test_init_weights_are_the_models_initial_state(search_seed0):
    saved = search_seed0.run_dir.load_weights("init")
    assert equal_states(saved, fresh_lenet(0).state_dict())


def test_rewind_to_zero_retrains_w0_under_the_mask(search_seed0, digits):
    """Each round is exactly: w_0 (masked) trained for the full budget under that round's mask."""
    run = search_seed0.run_dir
    trainer = trainer_for(run, digits)
    for r in range(3):
        model = fresh_lenet(0)
        trainer.train(model, run.load_mask(r), 0, 60)
        assert equal_states(params_of(model), run.load_weights(f"final_round_{r:02d}")), f"round {r}"


def test_rewind_state_is_captured_during_round_0(search_rewind_fraction, digits):
    result = search_rewind_fraction
    run = result.run_dir
    trainer = trainer_for(run, digits)
    # '0.25' of 60 iterations = iteration 15: the rewind point is w after 15 dense steps
    model = fresh_lenet(0)
    trainer.train(model, None, 0, 15)
    rewind = run.load_weights("rewind")
    assert equal_states(params_of(model), rewind)
    assert not equal_states(rewind, run.load_weights("init"))
    # later rounds start from w_15 (masked) at iteration 15 and train to 60
    for r in (1, 2):
        model = fresh_lenet(0)
        model.load_state_dict(rewind)
        trainer.train(model, run.load_mask(r), 15, 60)
        assert equal_states(params_of(model), run.load_weights(f"final_round_{r:02d}")), f"round {r}"


def test_rewind_fraction_sets_first_iteration_of_later_rounds(search_rewind_fraction):
    rows = search_rewind_fraction.run_dir.metrics()
    for r, expected in ((0, [0, 20, 40, 60]), (1, [15, 20, 40, 60]), (2, [15, 20, 40, 60])):
        val = [row["iteration"] for row in rows if row["round"] == r and row["split"] == "val"]
        assert val == expected, r
        train = [row["iteration"] for row in rows if row["round"] == r and row["split"] == "train"]
        assert train == expected[1:]
    for summary in search_rewind_fraction.rounds[1:]:
        assert summary["early_stop_iteration"] >= 15


def test_no_rewind_file_when_rewinding_to_zero(search_seed0):
    assert not (search_seed0.run_dir.path / "weights" / "rewind.pt").exists()


@pytest.mark.parametrize(
    "rewind,evaluations",
    [
        ("20it", [20, 40, 60]),
        ("1ep", [18, 20, 40, 60]),  # digits: 1100 training examples / batch 60 = 18 iterations per epoch
        ("0.5", [30, 40, 60]),
    ],
)
def test_rewind_units(ticket_search, tmp_path, rewind, evaluations):
    result = ticket_search(tmp_path / "run", rewind=rewind, rounds=1)
    rows = result.run_dir.metrics()
    assert [m["iteration"] for m in rows if m["round"] == 0 and m["split"] == "val"] == [0, 20, 40, 60]
    assert [m["iteration"] for m in rows if m["round"] == 1 and m["split"] == "val"] == evaluations


def test_rewind_at_or_beyond_budget_is_refused(tmp_path):
    for rewind in ("60it", "500it", "4ep"):
        with pytest.raises(LthError, match="not before the end of training"):
            find_ticket(
                TicketConfig(model="lenet-300-100", dataset="digits", iterations=60, rewind=rewind, device="cpu"),
                progress=False,
            )


# ------------------------------------------------------------------ run directory


def test_run_directory_layout(search_seed0):
    path = search_seed0.run_dir.path
    for name in (
        "config.yaml",
        "status.json",
        "metrics.csv",
        "rounds.json",
        "accuracy_vs_weights_remaining.png",
        "learning_curves.png",
        "weights/init.pt",
    ):
        assert (path / name).is_file(), name
    assert sorted(p.name for p in (path / "masks").iterdir()) == ["round_00.pt", "round_01.pt", "round_02.pt"]
    assert sorted(p.name for p in (path / "weights").iterdir()) == [
        "final_round_00.pt",
        "final_round_01.pt",
        "final_round_02.pt",
        "init.pt",
    ]
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]  # atomic writes left nothing
    assert json.loads((path / "status.json").read_text())["status"] == "complete"


def test_plots_are_png(search_seed0):
    for name in ("accuracy_vs_weights_remaining.png", "learning_curves.png"):
        data = (search_seed0.run_dir.path / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 1024, name


def test_config_yaml_is_the_resolved_config(search_seed0):
    written = yaml.safe_load((search_seed0.run_dir.path / "config.yaml").read_text())
    assert written == search_seed0.config.model_dump()
    assert written["model"] == "lenet-300-100" and written["dataset"] == "digits"
    assert (written["iterations"], written["rounds"], written["eval_every"], written["seed"]) == (60, 2, 20, 0)
    # filled from the lenet recipe
    assert (written["optimizer"], written["lr"], written["batch_size"]) == ("adam", 1.2e-3, 60)
    assert (written["prune_rate_fc"], written["prune_rate_output"], written["scope"]) == (0.2, 0.1, "layerwise")


def test_metrics_csv(search_seed0):
    path = search_seed0.run_dir.path / "metrics.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "round,iteration,split,loss,accuracy"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for r in range(3):
        mine = [(int(row["iteration"]), row["split"]) for row in rows if int(row["round"]) == r]
        assert mine == [
            (0, "val"),
            (0, "test"),
            (20, "train"),
            (20, "val"),
            (20, "test"),
            (40, "train"),
            (40, "val"),
            (40, "test"),
            (60, "train"),
            (60, "val"),
            (60, "test"),
        ]
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 and float(row["loss"]) > 0 for row in rows)


def test_rounds_json_matches_masks_and_metrics(search_seed0):
    run = search_seed0.run_dir
    rounds = json.loads((run.path / "rounds.json").read_text())
    assert rounds == search_seed0.rounds
    assert [r["round"] for r in rounds] == [0, 1, 2]
    metrics = run.metrics()
    for r, summary in enumerate(rounds):
        mask = run.load_mask(r)
        assert summary["weights_remaining"] == mask.density()
        assert summary["layers"] == mask.layer_density()
        assert summary["kept_weights"] == mask.kept()
        val = {m["iteration"]: m for m in metrics if m["round"] == r and m["split"] == "val"}
        test = {m["iteration"]: m for m in metrics if m["round"] == r and m["split"] == "test"}
        best = min(val.values(), key=lambda m: (m["loss"], m["iteration"]))
        assert summary["early_stop_iteration"] == best["iteration"]
        assert summary["val_accuracy_at_early_stop"] == best["accuracy"]
        assert summary["test_accuracy_at_early_stop"] == test[best["iteration"]]["accuracy"]
        assert summary["final_test_accuracy"] == test[60]["accuracy"]
        assert summary["final_val_accuracy"] == val[60]["accuracy"]
    assert rounds[0]["weights_remaining"] == 1.0
    assert rounds[2]["weights_remaining"] == 32298 / 50200


def test_training_learns(search_seed0):
    # 60 Adam steps on digits: far better than chance (10%)
    assert all(r["final_test_accuracy"] > 0.8 for r in search_seed0.rounds)


def test_existing_run_directory_is_refused(search_seed0):
    before = (search_seed0.run_dir.path / "rounds.json").read_text()
    with pytest.raises(LthError, match="--overwrite"):
        find_ticket(search_seed0.config, out=search_seed0.run_dir.path, progress=False)
    assert (search_seed0.run_dir.path / "rounds.json").read_text() == before


# ------------------------------------------------------------------ global scope


def test_global_scope_prunes_20_percent_overall(search_global):
    rounds = search_global.rounds
    assert search_global.config.scope == "global"
    assert [r["kept_weights"] for r in rounds] == [50200, 40160, 32128]  # 50200 - 10040, 40160 - 8032
    assert [r["weights_remaining"] for r in rounds] == [1.0, 40160 / 50200, 32128 / 50200]
    # one threshold, not one rate per layer: the layers end up with different densities
    assert len({round(d, 6) for d in rounds[1]["layers"].values()}) == 3


def test_global_scope_uses_one_threshold(search_global):
    run = search_global.run_dir
    for r in (1, 2):
        final = run.load_weights(f"final_round_{r - 1:02d}")
        before, after = run.load_mask(r - 1), run.load_mask(r)
        gone = torch.cat([final[n][before[n] & ~after[n]].abs() for n in PRUNED])
        kept = torch.cat([final[n][after[n]].abs() for n in PRUNED])
        assert gone.numel() == round(0.2 * before.kept())
        assert gone.max() <= kept.min()


def test_global_with_group_rates_is_refused():
    with pytest.raises(LthError, match="layerwise"):
        find_ticket(
            TicketConfig(model="lenet-300-100", dataset="digits", scope="global", prune_rate_fc=0.3, device="cpu"),
            progress=False,
        )


def test_ignored_layers_stay_dense(ticket_search):
    result = ticket_search(None, rounds=1, ignore_layers=["fc1"], iterations=20)
    assert list(result.masks[1]) == ["fc2.weight", "fc3.weight"]
    assert result.rounds[1]["layers"] == {"fc2.weight": 0.8, "fc3.weight": 0.9}


def test_prune_biases_and_random_criterion(ticket_search):
    result = ticket_search(None, rounds=1, prune_biases=True, criterion="random", iterations=20)
    mask = result.masks[1]
    assert list(mask) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert int(mask["fc1.bias"].sum()) == 240 and int(mask["fc3.bias"].sum()) == 9
