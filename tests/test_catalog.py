"""The catalog and inspection commands (`lth models`, `lth datasets`, `lth runs list`, `lth show`)
start without torch, and say what a new user needs: the layer groups a model has, where data is."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_helpers import cli
from lth.models import MODELS, build_model
from lth.pruning import prunable_parameters

HEAVY = ("torch", "scipy", "pandas", "matplotlib")
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _heavy_after(args: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    """Run ``lth ARGS`` in a fresh interpreter; the heavy modules it loaded and its stdout."""
    probe = (
        "import sys\nfrom lth.cli import main\nrc = main(sys.argv[1:])\n"
        f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out, _, loaded = done.stdout.rpartition("loaded:")
    return [m for m in loaded.strip().split(",") if m], out


def test_catalog_and_inspection_commands_do_not_import_torch(search_seed0, tmp_path):
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "LTH_RUNS_ROOT": str(tmp_path / "runs")}
    run = str(search_seed0.run_dir.path)
    for args in (["--help"], ["models"], ["datasets"], ["runs", "list"], ["show", run], ["show", run, "--json"]):
        loaded, out = _heavy_after(args, env)
        assert loaded == [], (args, loaded)
        assert out.strip() or args == ["runs", "list"], args
    loaded, out = _heavy_after(["show", run], env)
    assert "weights" in out  # the round table was printed from the run's files


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_layer_groups_are_the_built_models(name):
    """The groups the zoo declares (shown by `lth models` without building anything) are exactly
    the groups of the built model's prunable layers."""
    shape = (1, 28, 28) if name.startswith("lenet") else (3, 32, 32)
    model = build_model(name, shape, 10, seed=0)
    built = {p.group for p in prunable_parameters(model).values()}
    assert set(MODELS.get(name).groups) == built
    assert len(MODELS.get(name).groups) == len(built)


def test_models_lists_only_the_rates_of_groups_a_model_has(capsys):
    rc, out, _ = cli(capsys, "models")
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "fc 0.2 / output 0.1" in rows["lenet-300-100"] and "conv" not in rows["lenet-300-100"]
    assert "fc 0.2 / conv 0.1 / output 0.1" in rows["lenet-5"]
    assert "fc 0.2 / conv 0.15 / output 0.1" in rows["conv-6"]
    assert "global 0.2" in rows["resnet-20"] and "fc" not in rows["resnet-20"].split("global")[1]


def test_datasets_says_where_the_files_are(capsys, offline_env, monkeypatch):
    data = offline_env / "lth-data"  # $LTH_DATA_DIR of the offline environment
    rc, out, _ = cli(capsys, "datasets")
    rows = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()[2:]}
    assert rc == 0
    for name in ("mnist", "fashion-mnist", "cifar10"):
        assert rows[name].endswith("not here (downloaded on first use)"), rows[name]
    assert rows["digits"].endswith("bundled with scikit-learn")

    (data / "mnist").mkdir()
    for filename in MNIST_FILES:  # presence is enough: listing reads no file
        (data / "mnist" / filename.removesuffix(".gz")).write_bytes(b"")
    cifar = data / "cifar10"
    cifar.mkdir()
    (cifar / "cifar-10-python.tar.gz").write_bytes(b"")
    mine = offline_env / "mine"
    mine.mkdir()
    (mine / MNIST_FILES[0]).write_bytes(b"")
    rc, out, _ = cli(capsys, "datasets")
    rows = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()[2:]}
    assert rows["mnist"].endswith(str(data / "mnist"))
    assert rows["cifar10"].endswith(str(cifar / "cifar-10-python.tar.gz"))
    assert rows["fashion-mnist"].endswith("not here (downloaded on first use)")

    rc, out, _ = cli(capsys, "datasets", "--data-dir", mine)  # an incomplete --data-dir is named
    rows = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()[2:]}
    assert rc == 0
    assert rows["mnist"].endswith(
        f"incomplete: data directory {str(mine)!r} lacks {MNIST_FILES[1]!r} (it holds {MNIST_FILES[0]!r})"
    )
    assert "Fashion-MNIST clothing items" in out  # descriptions under the table


def test_a_model_registered_in_user_code_builds_through_the_registry():
    import torch
    from torch import nn

    from lth.models import Recipe, register_model
    from lth.models.registry import MODELS as registry

    recipe = Recipe(optimizer="adam", lr=1e-3, batch_size=8, budget="10it", initializer="glorot_normal")

    @register_model("test-user-net", "mine", "a user's own net", recipe)
    def user_net(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], num_classes))

    try:
        model = build_model("test-user-net", (1, 4, 4), 3, seed=0)
        assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
        assert registry.get("test-user-net").groups is None  # unknown until built: `lth models` shows every rate
    finally:
        registry._entries.pop("test-user-net")
