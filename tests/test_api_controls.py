"""Controls in the Python API: LotteryModel(controls=[...]) trains the CLI's reinit and
random-prune controls after every pruned round, without changing the ticket's own results;
LotteryRobust and LotterySession summarise and draw them as lines of their own."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from torch import nn

from lth import LotteryModel, LthError, Mask
from lth.experiments.controls import control_generator, random_mask_like
from lth.experiments.lottery_model import ROW_KEYS, fresh_initialisation
from lth.experiments.lottery_robust import LotteryRobust
from lth.experiments.lottery_session import LotterySession

FAST = dict(iterations=60, eval_every=20, device="cpu", progress=False)
CONTROLS = ["reinit", "random-prune"]
ROUNDS = 2
NAMES = ("1.weight", "3.weight")


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def kept(mask: Mask) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in mask.items()}


def timeless(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


class Recorder:
    """Wraps a trainer's ``train``: each call's description, mask, arguments and the model's
    parameters at the start and at the end of the training."""

    def __init__(self, trainer) -> None:
        self.inner = trainer.train
        self.calls: list[dict] = []
        trainer.train = self

    def __call__(self, model, mask, **kwargs):
        params = lambda: {n: p.detach().clone() for n, p in model.named_parameters()}  # noqa: E731
        call = {
            "description": kwargs["description"],
            "mask": Mask({n: m.clone() for n, m in mask.items()}),
            "start": kwargs["start"],
            "stop": kwargs["stop"],
            "before": params(),
        }
        result = self.inner(model, mask, **kwargs)
        call["after"] = params()
        self.calls.append(call)
        return result

    def control(self, name: str, round_index: int) -> dict:
        found = [c for c in self.calls if c["description"] == f"{name} control {round_index}"]
        assert len(found) == 1
        return found[0]


@pytest.fixture(scope="module")
def pair(digits):
    """The same experiment without and with both controls (2 pruning rounds), the latter's trainings recorded."""
    plain = LotteryModel(net(), digits, **FAST)
    plain.iterative_pruning(rounds=ROUNDS)
    with_controls = LotteryModel(net(), digits, controls=CONTROLS, **FAST)
    recorder = Recorder(with_controls._trainer)
    rng = torch.get_rng_state()
    with_controls.iterative_pruning(rounds=ROUNDS)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's global RNG is left alone
    return plain, with_controls, recorder


def test_controls_do_not_change_the_ticket(pair):
    plain, with_controls, _ = pair
    assert timeless(with_controls.rows) == timeless(plain.rows)
    assert with_controls.metrics().equals(plain.metrics())
    for r, mask in plain.masks.items():
        assert all(torch.equal(mask[n], with_controls.masks[r][n]) for n in mask)
    ours, theirs = with_controls.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # the model is the ticket as last trained
    assert all(torch.equal(with_controls.mask[n], plain.mask[n]) for n in NAMES)
    assert plain.lines() == {"ticket": plain.rows}


def test_every_control_has_a_row_per_pruned_round(pair):
    _, with_controls, _ = pair
    lines = with_controls.lines()
    assert list(lines) == ["ticket", *CONTROLS]
    ticket = {row["round"]: row for row in lines["ticket"]}
    for name in CONTROLS:
        rows = lines[name]
        assert [row["round"] for row in rows] == list(range(1, ROUNDS + 1))
        for row in rows:
            assert tuple(row) == ROW_KEYS
            for key in ("weights_remaining", "kept_weights", "total_weights", "layers"):
                assert row[key] == ticket[row["round"]][key]
            assert 0 <= row["test_accuracy_at_early_stop"] <= 1
    assert sorted(with_controls.control_masks) == sorted(CONTROLS)


def test_random_prune_keeps_the_rounds_per_layer_counts(pair):
    _, with_controls, recorder = pair
    init = with_controls.initial_state
    for r in range(1, ROUNDS + 1):
        ticket_mask = with_controls.masks[r]
        mask = with_controls.control_masks["random-prune"][r]
        assert kept(mask) == kept(ticket_mask)
        assert not all(torch.equal(mask[n], ticket_mask[n]) for n in NAMES)
        expected = random_mask_like(ticket_mask, control_generator(0, "random-prune", r))
        assert all(torch.equal(mask[n], expected[n]) for n in NAMES)
        call = recorder.control("random-prune", r)
        assert (call["start"], call["stop"]) == (0, 60)
        assert all(torch.equal(call["mask"][n], mask[n]) for n in NAMES)
        for name, value in call["before"].items():  # from the rewind weights, the random mask applied
            start = init[name] * mask[name] if name in mask else init[name]
            assert torch.equal(value, start)
        assert all(torch.all(call["after"][n][~mask[n]] == 0) for n in NAMES)


def test_reinit_trains_fresh_weights_under_the_rounds_mask(pair):
    _, with_controls, recorder = pair
    for r in range(1, ROUNDS + 1):
        mask = with_controls.masks[r]
        assert all(torch.equal(with_controls.control_masks["reinit"][r][n], mask[n]) for n in NAMES)
        call = recorder.control("reinit", r)
        assert (call["start"], call["stop"]) == (0, 60)
        assert all(torch.equal(call["mask"][n], mask[n]) for n in NAMES)
        seed = int(torch.randint(0, 2**62, (1,), generator=control_generator(0, "reinit", r)))
        fresh = dict(fresh_initialisation(net(), seed).named_parameters())
        for name, value in call["before"].items():
            start = fresh[name] * mask[name] if name in mask else fresh[name]
            assert torch.equal(value, start.detach())
        assert not torch.equal(call["before"]["1.weight"], with_controls.initial_state["1.weight"] * mask["1.weight"])
        for name in NAMES:  # trained under exactly the mask: pruned weights stay 0, kept ones moved
            assert torch.all(call["after"][name][~mask[name]] == 0)
            assert not torch.equal(call["after"][name][mask[name]], call["before"][name][mask[name]])


def test_controls_setting_spellings_and_mistakes(digits):
    model = LotteryModel(net(), digits, controls=" random-prune, reinit,reinit", **FAST)
    assert model.settings.controls == ("random-prune", "reinit")
    assert LotteryModel(net(), digits, **FAST).settings.controls == ()
    for bad in (["reinit", "bogus"], "reinit,bogus"):
        with pytest.raises(LthError) as error:
            LotteryModel(net(), digits, controls=bad, **FAST)
        message = one_line(error)
        assert "'bogus'" in message and "reinit, random-prune" in message
    with pytest.raises(LthError) as error:
        LotteryRobust(net, digits, trials=2, controls=["shuffle"], **FAST)
    assert "reinit, random-prune" in one_line(error)
    with pytest.raises(LthError) as error:
        LotteryModel(net(), digits, controls=3, **FAST)
    one_line(error)
    with pytest.raises(LthError) as error:  # round 0 is dense: no controls
        model.train()
        model.train_controls()
    assert "round 0" in one_line(error)


def test_one_shot_with_controls_and_save_load(digits, tmp_path):
    model = LotteryModel(net(), digits, controls=["random-prune"], **FAST)
    model.one_shot(keep=0.3)
    rows = model.lines()["random-prune"]
    assert [row["round"] for row in rows] == [1] and list(model.lines()) == ["ticket", "random-prune"]
    assert kept(model.control_masks["random-prune"][1]) == kept(model.masks[1])
    loaded = LotteryModel.load(model.save(tmp_path / "saved"), net())
    assert loaded.settings.controls == ("random-prune",)
    assert loaded.lines() == model.lines()


def test_model_plot_draws_the_controls_dashed(pair):
    fig = pair[1].plot_accuracy()
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].lines}
    assert styles["ticket (early stop)"] == "-"
    assert styles["reinit control (early stop)"] == "--"
    assert styles["random-prune control (early stop)"] == "--"


@pytest.fixture(scope="module")
def robust(digits):
    runs = LotteryRobust(net, digits, trials=2, controls=CONTROLS, **FAST)
    runs.run("iterative_pruning", rounds=ROUNDS)
    return runs


def test_robust_summary_has_every_line_at_every_round(robust):
    summary = robust.summary()
    assert list(dict.fromkeys(summary["line"])) == ["ticket", *CONTROLS]
    expected = {"ticket": list(range(ROUNDS + 1)), **{name: list(range(1, ROUNDS + 1)) for name in CONTROLS}}
    for line, rounds in expected.items():
        mine = summary[summary["line"] == line]
        assert sorted(set(mine["round"])) == rounds
        for _, row in mine.iterrows():
            values = [
                next(r for r in trial.lines()[line] if r["round"] == row["round"])[row["metric"]]
                for trial in robust.models
            ]
            assert row["trials"] == 2
            assert row["mean"] == pytest.approx(math.fsum(values) / 2, abs=1e-12)
            assert row["min"] == min(values) and row["max"] == max(values)


def test_robust_plot_has_a_band_per_line_and_dashed_controls(robust):
    ax = robust.plot_accuracy().axes[0]
    means = {line.get_label(): line for line in ax.lines if line.get_label().endswith("(mean)")}
    assert set(means) == {"ticket (mean)", "reinit control (mean)", "random-prune control (mean)"}
    assert means["ticket (mean)"].get_linestyle() == "-"
    assert means["reinit control (mean)"].get_linestyle() == "--"
    assert means["random-prune control (mean)"].get_linestyle() == "--"
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    for line in means.values():  # its min-max range and its 95% CI, in its colour
        colour = to_rgba(line.get_color())[:3]
        assert sum(tuple(c.get_facecolor()[0][:3]) == pytest.approx(colour) for c in bands) == 2
    assert len(bands) == 2 * len(means)


def test_session_summary_and_plot_show_the_controls(digits):
    session = LotterySession(net(), digits, **FAST)
    session.new_experiment("plain").iterative_pruning(rounds=1)
    session.new_experiment("controlled", controls="reinit").iterative_pruning(rounds=1)
    summary = session.summary()
    assert list(zip(summary["experiment"], summary["line"], summary["round"])) == [
        ("plain", "ticket", 0),
        ("plain", "ticket", 1),
        ("controlled", "ticket", 0),
        ("controlled", "ticket", 1),
        ("controlled", "reinit", 1),
    ]
    styles = {line.get_label(): line.get_linestyle() for line in session.plot_accuracy().axes[0].lines}
    assert styles["controlled (early stop)"] == "-"
    assert styles["controlled: reinit (early stop)"] == "--"


def test_robust_controls_side_by_side_equal_trials_alone(digits):
    """vectorize=2: every trial's ticket and controls train in vectorised steps, in the same order;
    same control masks, accuracies within one borderline image (see test_lottery_session_robust.py)."""
    results = {}
    for vectorize in ("off", 2):
        robust = LotteryRobust(net, digits, trials=2, vectorize=vectorize, controls=CONTROLS, **FAST)
        robust.run("iterative_pruning", rounds=1)
        results[vectorize] = robust
    for alone, together in zip(results["off"].models, results[2].models):
        for name in CONTROLS:
            a, b = alone.lines()[name], together.lines()[name]
            assert [r["kept_weights"] for r in a] == [r["kept_weights"] for r in b]
            assert all(
                abs(x["test_accuracy_at_early_stop"] - y["test_accuracy_at_early_stop"]) <= 1 / 300 + 1e-9
                for x, y in zip(a, b)
            )
            masks = alone.control_masks[name][1], together.control_masks[name][1]
            assert all(torch.equal(masks[0][n], masks[1][n]) for n in NAMES)
