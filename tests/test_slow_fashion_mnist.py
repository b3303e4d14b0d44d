"""End-to-end runs on the real Fashion-MNIST (Debian's dataset-fashion-mnist). Marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lth import TicketConfig, find_ticket

FASHION = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FASHION.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
    ),
]


def test_dense_lenet_300_100_reaches_87_5_percent_in_12000_iterations_of_the_paper_recipe(tmp_path: Path) -> None:
    # The paper recipe (Adam 1.2e-3, batch 60) for 12,000 of its 50,000 iterations, to keep CI
    # short: the full budget reaches 88.0% at early stop and 88.5% at the end (README,
    # Performance); 5,000 iterations reach 87.5-87.9% (README, the ticket against its controls).
    config = TicketConfig(
        model="lenet-300-100", dataset="fashion-mnist", rounds=0, iterations=12_000, eval_every=1000, device="cpu"
    )
    result = find_ticket(config, out=tmp_path / "dense", progress=False)
    dense = result.rounds[0]
    assert result.config.batch_size == 60 and result.config.lr == pytest.approx(1.2e-3)
    assert result.config.optimizer == "adam"
    assert dense["weights_remaining"] == 1.0
    assert dense["final_test_accuracy"] >= 0.875
    assert dense["test_accuracy_at_early_stop"] >= 0.87


def test_cli_multi_round_search_on_full_fashion_mnist(tmp_path: Path) -> None:
    out = tmp_path / "search"
    command = [
        sys.executable,
        "-m",
        "lth",
        "find-ticket",
        "lenet-300-100",
        "fashion-mnist",
        "--rounds",
        "3",
        "--iterations",
        "1500",
        "--eval-every",
        "500",
        "--out",
        str(out),
        "--quiet",
    ]
    subprocess.run(command, check=True, timeout=600)
    shown = subprocess.run(
        [sys.executable, "-m", "lth", "show", str(out), "--json"], check=True, capture_output=True, text=True
    )
    rounds = json.loads(shown.stdout)["rounds"]
    assert [round(r["weights_remaining"], 4) for r in rounds] == [1.0, 0.8004, 0.6406, 0.5128]
    assert all(r["test_accuracy_at_early_stop"] > 0.8 for r in rounds)
    for name in ("accuracy_vs_weights_remaining.png", "learning_curves.png", "metrics.csv", "config.yaml"):
        assert (out / name).stat().st_size > 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"round_0{i}.pt" for i in range(4)]


def test_learned_bernoulli_supermask_on_frozen_random_weights(tmp_path: Path) -> None:
    # Frozen Glorot-normal weights, only the scores train (Adam 0.1, dynamic scaling). Measured:
    # 84.3% after 2,000 iterations, 88.2% after 8,000 (the paper's SGD lr 100 recipe: 79.8%).
    out = tmp_path / "supermask"
    command = [
        sys.executable,
        "-m",
        "lth",
        "supermask",
        "train",
        "lenet-300-100",
        "fashion-mnist",
        "--method",
        "bernoulli",
        "--dynamic-scaling",
        "--optimizer",
        "adam",
        "--lr",
        "0.1",
        "--iterations",
        "2000",
        "--eval-every",
        "1000",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    ]
    summary = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, timeout=600).stdout)
    assert summary["test_accuracy_expected"] > 0.82
    assert summary["test_accuracy_sampled_mean"] > 0.82
    assert 0.3 < summary["density"] < 0.7


def test_synflow_at_one_percent_trains_and_survives_shuffling(tmp_path: Path) -> None:
    # SynFlow (100 iterations, data-free) keeping 1% of LeNet-300-100, then 1,500 iterations of the
    # paper recipe; its shuffle ablation beside it. Measured: 81.2% and 80.6% shuffled (5,000 iterations, README:
    # 83.6% and 83.5%).
    out = tmp_path / "pai"
    command = [
        sys.executable,
        "-m",
        "lth",
        "prune-at-init",
        "lenet-300-100",
        "fashion-mnist",
        "--method",
        "synflow",
        "--keep",
        "0.01",
        "--ablation",
        "none,shuffle",
        "--iterations",
        "1500",
        "--eval-every",
        "500",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    ]
    shown = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, timeout=600).stdout)
    rows = {r["line"]: r for r in shown["summary"] if r["metric"] == "test_accuracy_at_early_stop"}
    assert set(rows) == {"ticket", "ablation:shuffle"}
    assert all(r["weights_remaining"] == 502 / 50200 for r in rows.values())
    assert rows["ticket"]["mean"] >= 0.79
    assert abs(rows["ticket"]["mean"] - rows["ablation:shuffle"]["mean"]) <= 0.03
    at_init = json.loads((out / "synflow-keep0.01" / "trial_00" / "prune_at_init.json").read_text())
    assert at_init["collapsed"] == [] and len(at_init["kept_per_iteration"]) == 100
    assert (out / "accuracy_vs_weights_remaining.png").stat().st_size > 0
