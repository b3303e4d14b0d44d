"""Tests for lth.masks.Mask: counting, applying, saving and loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from lth.errors import LthError
from lth.masks import Mask


def bools(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


@pytest.fixture
def mask() -> Mask:
    return Mask(
        {
            "fc.weight": bools([[True, False, True], [True, True, False]]),  # 4 of 6
            "out.weight": bools([False, False, True, False]),  # 1 of 4
        }
    )


def test_counts_and_density(mask):
    assert mask.kept() == 5
    assert mask.size() == 10
    assert mask.density() == 0.5
    assert mask.layer_density() == {"fc.weight": 4 / 6, "out.weight": 0.25}


def test_empty_mask_is_dense():
    assert Mask().density() == 1.0
    assert Mask().kept() == 0 and Mask().size() == 0


def test_ones_keeps_everything_with_the_parameters_shapes():
    params = {"a": torch.zeros(2, 3), "b": torch.zeros(5)}
    ones = Mask.ones(params)
    assert set(ones) == {"a", "b"}
    assert ones["a"].dtype == torch.bool and ones["a"].shape == (2, 3) and bool(ones["a"].all())
    assert ones.density() == 1.0 and ones.size() == 11


def test_apply_zeroes_exactly_the_pruned_entries():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]))
        model.bias.copy_(torch.tensor([7.0, 8.0]))
    m = Mask({"weight": bools([[True, False, True], [False, True, True]])})
    assert m.apply_(model) is model
    assert torch.equal(model.weight.detach(), torch.tensor([[1.0, 0.0, 3.0], [0.0, 5.0, -6.0]]))
    assert torch.equal(model.bias.detach(), torch.tensor([7.0, 8.0]))  # not in the mask: untouched


def test_save_load_round_trip(tmp_path, mask):
    path = tmp_path / "nested" / "mask.pt"
    mask.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.pt"]  # no temporary files left
    # the file is a plain {name: bool tensor} dict readable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert type(raw) is dict and set(raw) == set(mask)
    for name in mask:
        assert raw[name].dtype == torch.bool and torch.equal(raw[name], mask[name])
    loaded = Mask.load(path)
    assert isinstance(loaded, Mask)
    assert list(loaded) == list(mask)
    for name in mask:
        assert loaded[name].dtype == torch.bool and torch.equal(loaded[name], mask[name])
    assert loaded.density() == mask.density()


def test_load_converts_numeric_masks_to_bool(tmp_path):
    path = tmp_path / "float.pt"
    torch.save({"w": torch.tensor([0.0, 1.0, 1.0])}, path)
    loaded = Mask.load(path)
    assert torch.equal(loaded["w"], bools([False, True, True]))


def test_load_missing_file(tmp_path):
    with pytest.raises(LthError, match="does not exist"):
        Mask.load(tmp_path / "nope.pt")


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a torch file \x00\x01\x02")
    with pytest.raises(LthError, match="cannot read mask file"):
        Mask.load(path)


class _TouchOnLoad:
    """Unpickling this would create a file: weights_only loading must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_load_refuses_arbitrary_pickles(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _TouchOnLoad(marker)}, protocol=2))
    with pytest.raises(LthError, match="cannot read mask file"):
        Mask.load(path)
    assert not marker.exists()


def test_load_wrong_content(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(LthError, match="mapping"):
        Mask.load(path)
    torch.save({"w": 3}, path)
    with pytest.raises(LthError, match="mapping"):
        Mask.load(path)


def test_check_matches():
    params = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    Mask({"w": torch.ones(2, 3, dtype=torch.bool)}).check_matches(params)
    with pytest.raises(LthError, match="'v'"):
        Mask({"v": torch.ones(2, 3, dtype=torch.bool)}).check_matches(params)
    with pytest.raises(LthError, match=r"\(3, 2\)"):
        Mask({"w": torch.ones(3, 2, dtype=torch.bool)}).check_matches(params)


def test_to_and_cpu_copy(mask):
    moved = mask.cpu()
    assert isinstance(moved, Mask) and moved is not mask
    assert all(torch.equal(moved[n], mask[n]) for n in mask)
