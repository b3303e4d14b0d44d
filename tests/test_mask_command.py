"""``lth mask``: a mask file from INIT/FINAL state dicts; one-line errors for every bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth.criteria import CRITERIA

pytestmark = pytest.mark.usefixtures("offline_env")


def state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "fc1.weight": torch.randn(8, 6, generator=g),  # 48 weights
        "fc1.bias": torch.randn(8, generator=g),
        "norm.weight": torch.randn(8, generator=g),  # 1-D: never pruned
        "fc2.weight": torch.randn(3, 8, generator=g),  # 24 weights
        "fc2.bias": torch.randn(3, generator=g),
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"init": tmp_path / "init.pt", "final": tmp_path / "final.pt", "out": tmp_path / "mask.pt"}
    torch.save(state(0), paths["init"])
    torch.save(state(1), paths["final"])
    return paths


def base(files, *extra) -> list:
    return ["mask", "--init", files["init"], "--final", files["final"], "--out", files["out"], *extra]


# ------------------------------------------------------------------ success


def test_writes_loadable_mask(capsys, files):
    rc, out, err = cli(capsys, *base(files, "--keep", "0.25"))
    assert rc == 0, err
    data = torch.load(files["out"], weights_only=True)
    assert list(data) == ["fc1.weight", "fc2.weight"]
    assert data["fc1.weight"].dtype == torch.bool and data["fc1.weight"].shape == (8, 6)
    assert data["fc2.weight"].dtype == torch.bool and data["fc2.weight"].shape == (3, 8)
    assert int(data["fc1.weight"].sum()) == 12 and int(data["fc2.weight"].sum()) == 6
    # the largest |w_final| are the ones kept
    final = state(1)["fc2.weight"].abs().flatten()
    assert data["fc2.weight"].flatten().nonzero().flatten().tolist() == sorted(final.argsort()[-6:].tolist())
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert "18 / 72 weights kept (25.00%)" in lines[0]
    assert "fc1.weight 25.00%" in lines[0] and "fc2.weight 25.00%" in lines[0]
    assert not list(files["out"].parent.glob(".*tmp"))  # atomic write left no temporary file


def test_quiet_and_json(capsys, files):
    rc, out, _ = cli(capsys, *base(files, "--prune-rate", "0.5", "--quiet"))
    assert rc == 0 and "36 / 72 weights kept" in out and "fc1.weight" not in out
    rc, out, _ = cli(capsys, *base(files, "--prune-rate", "0.5", "--scope", "global", "--prune-biases", "--json"))
    assert rc == 0
    report = json.loads(out)
    assert report["kept"] == 41 and report["total"] == 83  # round(0.5 * 83) = 42 removed
    assert report["density"] == pytest.approx(41 / 83)
    assert list(report["layers"]) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_prev_mask_chain(capsys, files, tmp_path):
    assert cli(capsys, *base(files, "--keep", "0.5"))[0] == 0
    second = tmp_path / "mask2.pt"
    rc, out, err = cli(
        capsys,
        "mask",
        "--init",
        files["init"],
        "--final",
        files["final"],
        "--prev-mask",
        files["out"],
        "--keep",
        "0.5",
        "--out",
        second,
        "--json",
    )
    assert rc == 0, err
    assert json.loads(out)["kept"] == 18  # 36 kept by the first mask, half of them now
    first, now = torch.load(files["out"], weights_only=True), torch.load(second, weights_only=True)
    assert all(not (now[k] & ~first[k]).any() for k in first)


def test_criterion_random_is_seeded(capsys, files, tmp_path):
    masks = []
    for seed, name in [(1, "a.pt"), (1, "b.pt"), (2, "c.pt")]:
        rc, _, _ = cli(
            capsys,
            "mask",
            "--init",
            files["init"],
            "--final",
            files["final"],
            "--criterion",
            "random",
            "--keep",
            "0.5",
            "--seed",
            seed,
            "--out",
            tmp_path / name,
        )
        assert rc == 0
        masks.append(torch.load(tmp_path / name, weights_only=True)["fc1.weight"])
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--keep", "0"], "keep must be in (0, 1]"),
        (["--keep", "1.5"], "keep must be in (0, 1]"),
        (["--prune-rate", "1"], "prune_rate must be in [0, 1)"),
        (["--keep", "0.5", "--prune-rate", "0.5"], "not both"),
        ([], "neither"),
        (["--keep", "0.5", "--scope", "local"], "'local'"),
    ],
)
def test_bad_fractions(capsys, files, flags, fragment):
    rc, out, err = cli(capsys, *base(files, *flags))
    assert fragment in one_line_error(rc, err)
    assert out == "" and not files["out"].exists()


def test_unknown_criterion_lists_names(capsys, files):
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5", "--criterion", "biggest"))
    line = one_line_error(rc, err)
    assert "'biggest'" in line
    for name in CRITERIA.names():
        assert name in line


def test_different_keys(capsys, files):
    other = state(1)
    del other["fc2.bias"]
    torch.save(other, files["final"])
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    assert "'fc2.bias'" in one_line_error(rc, err)


def test_different_shapes(capsys, files):
    other = state(1)
    other["fc1.weight"] = torch.randn(6, 8)
    torch.save(other, files["final"])
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    line = one_line_error(rc, err)
    assert "'fc1.weight'" in line and "(8, 6)" in line and "(6, 8)" in line


def test_missing_init(capsys, files):
    files["init"].unlink()
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    line = one_line_error(rc, err)
    assert str(files["init"]) in line and "does not exist" in line


def test_corrupt_init(capsys, files):
    files["init"].write_bytes(random.Random(0).randbytes(2000))
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    line = one_line_error(rc, err)
    assert str(files["init"]) in line and "cannot read" in line


def test_init_not_a_state_dict(capsys, files):
    torch.save({"model": state(0), "step": 3}, files["init"])
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    assert "'model'" in one_line_error(rc, err)


def test_prev_mask_not_matching(capsys, files, tmp_path):
    bad = tmp_path / "bad-mask.pt"
    torch.save({"fc1.weight": torch.ones(6, 8, dtype=torch.bool)}, bad)
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5", "--prev-mask", bad))
    line = one_line_error(rc, err)
    assert "'fc1.weight'" in line and "(6, 8)" in line
    torch.save({"fc3.weight": torch.ones(2, 2, dtype=torch.bool)}, bad)
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5", "--prev-mask", bad))
    assert "'fc3.weight'" in one_line_error(rc, err)


def test_no_prunable_tensors(capsys, files):
    only_norm = {"norm.weight": torch.ones(4)}
    torch.save(only_norm, files["init"])
    torch.save(only_norm, files["final"])
    rc, _, err = cli(capsys, *base(files, "--keep", "0.5"))
    assert "no prunable tensors" in one_line_error(rc, err)


@pytest.mark.parametrize("name", ["snip", "grad"])
def test_gradient_criteria_need_data(capsys, files, name):
    if name not in CRITERIA:
        pytest.skip(f"criterion {name!r} is not registered yet")
    rc, out, err = cli(capsys, *base(files, "--keep", "0.5", "--criterion", name))
    line = one_line_error(rc, err)
    assert name in line
    assert out == "" and not files["out"].exists()
