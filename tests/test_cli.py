"""Tests for the ``lth`` command line: exit codes, one-line errors, config merging, show/models/datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import cli, one_line_error
from lth.cli import main
from lth.cli.show import run_json
from lth.models import build_model
from lth.store import RunDir

pytestmark = pytest.mark.usefixtures("offline_env")

MODELS = [
    "lenet-300-100",
    "lenet-5",
    "conv-2",
    "conv-4",
    "conv-6",
    "vgg-11",
    "vgg-13",
    "vgg-16",
    "vgg-19",
    "resnet-20",
    "resnet-32",
    "resnet-56",
]
DATASETS = ["mnist", "fashion-mnist", "cifar10", "digits"]
FAST = ["--iterations", "20", "--eval-every", "10", "--device", "cpu", "--quiet"]
ROUND_KEYS = {
    "round",
    "weights_remaining",
    "layers",
    "early_stop_iteration",
    "val_accuracy_at_early_stop",
    "test_accuracy_at_early_stop",
    "final_test_accuracy",
}


def usage_error(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.startswith("Usage: lth"), err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------ bad input


def test_unknown_model_lists_models(capsys, tmp_path):
    rc, out, err = cli(capsys, "find-ticket", "lenet-301", "digits", "--out", tmp_path / "run", *FAST)
    line = one_line_error(rc, err)
    assert "'lenet-301'" in line
    for name in MODELS:
        assert name in line
    assert out == ""
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_unknown_dataset_lists_datasets(capsys, tmp_path):
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "emnist", "--out", tmp_path / "run", *FAST)
    line = one_line_error(rc, err)
    assert "'emnist'" in line
    for name in DATASETS:
        assert name in line


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--prune-rate", "1.0"], "prune_rate"),
        (["--prune-rate", "-0.1"], "prune_rate"),
        (["--prune-rate=-0.1"], "prune_rate"),
        (["--prune-rate-output", "1.5"], "prune_rate_output"),
        (["--rounds", "-1"], "rounds"),
        (["--iterations", "0"], "iterations"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "0"], "lr"),
        (["--eval-every", "0"], "eval_every"),
        (["--scope", "per-layer"], "scope"),
        (["--optimizer", "rmsprop"], "optimizer"),
        (["--device", "tpu"], "device"),
        (["--criterion", "smallest"], "large_final"),
        (["--epochs", "1"], "either iterations or epochs"),
        (["--rewind", "500it", "--iterations", "100"], "not before the end of training"),
        (["--rewind", "20it"], "not before the end of training"),  # budget is 20 (FAST)
        (["--rewind", "soon"], "soon"),
        (["--milestones", "10it,later"], "later"),
        (["--warmup", "-3it"], "-3it"),
        (["--ignore-layers", "fc1,fc9"], "fc9"),
        (["--scope", "global", "--prune-rate-fc", "0.3"], "layerwise"),
        (["--batch-size", "5000"], "batch size 5000"),
        (["--optimizer", "sgd", "--nesterov"], "Nesterov"),
    ],
)
def test_bad_values_give_one_line(capsys, tmp_path, flags, fragment):
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", tmp_path / "run", *flags)
    assert fragment in one_line_error(rc, err)


def test_ignore_layers_error_lists_the_layers(capsys, tmp_path):
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", tmp_path / "r", "--ignore-layers", "fc4"
    )
    line = one_line_error(rc, err)
    assert "fc1, fc2, fc3" in line


def test_model_that_does_not_fit_the_dataset(capsys, tmp_path):
    rc, _, err = cli(capsys, "find-ticket", "lenet-5", "digits", *FAST, "--out", tmp_path / "run")
    line = one_line_error(rc, err)
    assert "'lenet-5'" in line and "does not fit" in line and "(1, 8, 8)" in line


def test_missing_data_files(capsys, offline_env):
    empty = offline_env / "empty-data"
    empty.mkdir()
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "mnist", *FAST, "--data-dir", empty, "--out", offline_env / "run"
    )
    line = one_line_error(rc, err)  # the failed download says nothing more than this line
    assert "mnist files not found" in line
    assert str(empty) in line and "--data-dir" in line
    assert "network access is disabled" in line  # the download failed at once, offline
    cache = Path(os.environ["LTH_DATA_DIR"]) / "mnist"
    assert not cache.exists() or not any(cache.iterdir())  # no partial download left behind


def test_corrupt_data_file(capsys, tmp_path):
    fake = tmp_path / "fake-fashion"
    fake.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (fake / name).write_bytes(b"\x12\x34\x08\x03" + bytes(64))  # bad magic number
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "fashion-mnist", *FAST, "--data-dir", fake, "--out", tmp_path / "run"
    )
    line = one_line_error(rc, err)
    assert "not an IDX file" in line and str(fake) in line


@pytest.mark.parametrize("kind", ["read-only-dir", "file-parent"])
def test_unwritable_output_directory(capsys, tmp_path, kind):
    if kind == "read-only-dir":
        if getattr(os, "geteuid", lambda: -1)() == 0:
            pytest.skip("root ignores directory permissions (the file-parent case covers this)")
        parent = tmp_path / "read-only"
        parent.mkdir()
        parent.chmod(0o500)
    else:
        parent = tmp_path / "a-file"
        parent.write_text("not a directory\n")
    try:
        rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", parent / "run")
    finally:
        if parent.is_dir():
            parent.chmod(0o700)
    line = one_line_error(rc, err)
    assert "cannot write to output directory" in line


def test_output_path_is_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", target)
    assert "is not a directory" in one_line_error(rc, err)


def test_existing_run_directory_needs_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["find-ticket", "lenet-300-100", "digits", *FAST, "--rounds", "0", "--out", out]
    assert cli(capsys, *args, "--quiet")[0] == 0
    (out / "notes.txt").write_text("an old run\n")
    rc, _, err = cli(capsys, *args)
    assert "--overwrite" in one_line_error(rc, err)
    assert (out / "notes.txt").read_text() == "an old run\n"

    rc, stdout, err = cli(capsys, *args, "--overwrite", "--json")
    assert rc == 0, err
    # no progress bars with --json; the file lth did not write is kept, with one warning
    assert (
        err.strip()
        == f"lth: warning: kept 1 entries in {str(out)!r} that lth did not write: {str(out / 'notes.txt')!r}"
    )
    assert (out / "notes.txt").read_text() == "an old run\n"
    assert json.loads(stdout) == run_json(RunDir.open(out))
    assert [r["round"] for r in json.loads(stdout)["rounds"]] == [0]


def test_overwrite_never_deletes_a_directory_that_is_not_a_run(capsys, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious\n")
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--rounds", "0", "--out", out, "--overwrite"
    )
    assert "was not created by lth" in one_line_error(rc, err)
    assert (out / "chapter1.tex").read_text() == "precious\n"


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("rounds: 1\nlearning_rate: 0.1\n", "unknown config key 'learning_rate'"),
        ("rounds: [1, 2\nseed: 3\n", "not valid YAML"),
        ("{{{{ this is not yaml\n", "not valid YAML"),
        ("- rounds\n- 1\n", "mapping"),
        ("rounds: many\n", "rounds"),
    ],
)
def test_bad_config_file(capsys, tmp_path, content, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--config", path, "--out", tmp_path / "run"
    )
    assert fragment in one_line_error(rc, err)


def test_missing_config_file(capsys, tmp_path):
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", "--config", tmp_path / "nope.yaml")
    assert "does not exist" in one_line_error(rc, err)


def test_binary_config_file(capsys, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01binary")
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--config", path, "--out", tmp_path / "run"
    )
    one_line_error(rc, err)


def test_config_file_is_a_directory(capsys, tmp_path):
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--config", tmp_path, "--out", tmp_path / "run"
    )
    one_line_error(rc, err)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--optimizer", "sgd", "--momentum", "-0.5"], id="negative-momentum"),
        pytest.param(["--optimizer", "sgd", "--momentum", "1.5"], id="momentum-above-1"),
        pytest.param(["--weight-decay", "-1"], id="negative-weight-decay"),
        pytest.param(["--gamma", "-1", "--milestones", "5it"], id="negative-gamma"),
    ],
)
def test_bad_optimizer_hyperparameters(capsys, tmp_path, flags):
    rc, _, err = cli(
        capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--rounds", "0", "--out", tmp_path / "run", *flags
    )
    one_line_error(rc, err)


def test_corrected_command_runs_after_a_rejected_one(capsys, tmp_path):
    out = tmp_path / "run"
    args = [
        "find-ticket",
        "lenet-300-100",
        "digits",
        *FAST,
        "--rounds",
        "0",
        "--out",
        out,
        "--optimizer",
        "sgd",
        "--nesterov",
    ]
    rc, _, err = cli(capsys, *args)
    assert "Nesterov" in one_line_error(rc, err)
    rc, _, err = cli(capsys, *args, "--momentum", "0.9")
    assert rc == 0, err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["find-ticket", "lenet-300-100", "digits", "--rounds", "abc"], "Invalid value for '--rounds'"),
        (["find-ticket", "lenet-300-100"], "Missing argument 'DATASET'"),
        (["find-ticket", "lenet-300-100", "digits", "--frobnicate"], "No such option"),
        (["prune-everything"], "No such command"),
    ],
)
def test_click_usage_errors(capsys, args, fragment):
    rc, _, err = cli(capsys, *args)
    assert fragment in usage_error(rc, err)


# ------------------------------------------------------------------ a real run from the CLI


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """find-ticket with a YAML config file whose rounds and seed are overridden by flags."""
    base = tmp_path_factory.mktemp("cli")
    config = base / "config.yaml"
    config.write_text(
        "rounds: 4\niterations: 20\neval-every: 10\nseed: 1\nprune_rate: 0.5\ndevice: cpu\nname: from-the-file\n"
    )
    out = base / "run"
    rc = main(
        [
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--config",
            str(config),
            "--rounds",
            "1",
            "--seed",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    return out


def test_flags_override_config_file(cli_run):
    written = yaml.safe_load((cli_run / "config.yaml").read_text())
    # from the flags
    assert (written["rounds"], written["seed"]) == (1, 3)
    # from the file
    assert (written["iterations"], written["eval_every"], written["name"], written["device"]) == (
        20,
        10,
        "from-the-file",
        "cpu",
    )
    assert written["prune_rate"] == 0.5
    assert (written["prune_rate_fc"], written["prune_rate_conv"], written["prune_rate_output"]) == (0.5, 0.5, 0.5)
    # from the recipe
    assert (written["optimizer"], written["batch_size"]) == ("adam", 60)
    # the flag's seed really was used
    init = torch.load(cli_run / "weights" / "init.pt", weights_only=True)
    expected = build_model("lenet-300-100", (1, 8, 8), 10, seed=3).state_dict()
    assert all(torch.equal(init[k], expected[k]) for k in expected)
    rounds = json.loads((cli_run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["layers"] == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.5}


def test_existing_cli_run_is_not_replaced(capsys, cli_run):
    before = (cli_run / "rounds.json").read_text()
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", cli_run)
    assert "already exists" in one_line_error(rc, err)
    assert (cli_run / "rounds.json").read_text() == before


def test_show_json(capsys, cli_run):
    rc, out, err = cli(capsys, "show", cli_run, "--json")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"config", "rounds", "status"}
    assert data["config"] == yaml.safe_load((cli_run / "config.yaml").read_text())
    assert data["rounds"] == json.loads((cli_run / "rounds.json").read_text())
    assert data["status"]["status"] == "complete"
    assert [r["round"] for r in data["rounds"]] == [0, 1]
    for r in data["rounds"]:
        assert ROUND_KEYS <= set(r)
        for key in (
            "weights_remaining",
            "val_accuracy_at_early_stop",
            "test_accuracy_at_early_stop",
            "final_test_accuracy",
        ):
            assert isinstance(r[key], float) and 0.0 <= r[key] <= 1.0, key
        assert all(0.0 <= v <= 1.0 for v in r["layers"].values())
        assert isinstance(r["early_stop_iteration"], int) and 0 <= r["early_stop_iteration"] <= 20
    assert data["rounds"][0]["weights_remaining"] == 1.0
    assert data["rounds"][1]["weights_remaining"] == 0.5


def test_show_table(capsys, cli_run):
    rc, out, err = cli(capsys, "show", cli_run)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "lenet-300-100 on digits (complete)"
    assert "weights left" in lines[1] and "early-stop it" in lines[1]
    assert "100.00%" in lines[3] and "50.00%" in lines[4]
    assert len(lines) == 5


def test_show_not_a_run_directory(capsys, tmp_path):
    rc, _, err = cli(capsys, "show", tmp_path)
    assert "not an lth run directory" in one_line_error(rc, err)


# ------------------------------------------------------------------ catalogues


def test_models_lists_all_12(capsys):
    rc, out, err = cli(capsys, "models")
    assert rc == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert sorted(names) == sorted(MODELS)
    assert "adam lr 0.0012" in out and "global 0.2" in out


def test_datasets_lists_all_4(capsys):
    rc, out, err = cli(capsys, "datasets")
    assert rc == 0 and err == ""
    table = out.split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split() for line in table}
    assert sorted(rows) == sorted(DATASETS)
    assert rows["digits"][1:6] == ["1x8x8", "10", "1100", "300", "397"]
    assert rows["mnist"][1:6] == ["1x28x28", "10", "55000", "5000", "10000"]
    assert " ".join(rows["digits"][6:]) == "bundled with scikit-learn"


def test_version(capsys):
    rc, out, _ = cli(capsys, "--version")
    assert rc == 0 and "0.1.0" in out


# ------------------------------------------------------------------ real processes


def _console_script() -> str:
    candidate = Path(sys.executable).parent / "lth"
    if candidate.is_file():
        return str(candidate)
    import shutil

    found = shutil.which("lth")
    assert found, "the 'lth' console script is not installed next to the interpreter nor on PATH"
    return found


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """``python -m lth --help`` and the ``lth`` console script with a bad model, run in parallel."""
    base = tmp_path_factory.mktemp("proc")
    env = {**os.environ, "HOME": str(base), "LTH_DATA_DIR": str(base / "data")}
    commands = {
        "module_help": [sys.executable, "-m", "lth", "--help"],
        "script_error": [_console_script(), "find-ticket", "no-such-model", "digits", "--out", str(base / "run")],
    }
    running = {
        key: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=base)
        for key, cmd in commands.items()
    }
    results = {}
    for key, proc in running.items():
        out, err = proc.communicate(timeout=120)
        results[key] = (proc.returncode, out, err)
    return results


def test_python_dash_m_help(processes):
    rc, out, err = processes["module_help"]
    assert rc == 0, err
    assert out.startswith("Usage: lth")
    for command in ("find-ticket", "show", "models", "datasets"):
        assert command in out


def test_console_script_reports_errors(processes):
    rc, out, err = processes["script_error"]
    assert one_line_error(rc, err).startswith("lth: error: unknown model 'no-such-model'")
    assert out == ""


HEAVY = ("torch", "scipy", "pandas", "matplotlib")


def _imported_after(code: str) -> list[str]:
    """The heavy modules in sys.modules after running ``code`` in a fresh interpreter."""
    import subprocess
    import sys

    probe = f"import sys\n{code}\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("loaded:"))
    return [m for m in line.removeprefix("loaded:").split(",") if m]


def test_help_and_import_lth_load_no_heavy_module():
    """`lth --help` lists every command from lth.cli.main.COMMANDS, and `import lth` defers its
    names: neither loads torch, scipy, pandas or matplotlib (start-up in a tenth of a second)."""
    assert _imported_after("from lth.cli import main\nmain(['--help'])") == []
    assert _imported_after("import lth\nassert lth.__version__") == []
    assert _imported_after("from lth import Mask") == ["torch"]


def test_lazy_help_lists_what_the_commands_say(capsys):
    """The short help `lth --help` shows before importing the commands equals the one it shows
    after (COMMANDS cannot drift from the commands' docstrings), and every command is listed."""
    from lth.cli.main import COMMANDS, _register_commands, main
    from lth.cli.main import cli as group

    main(["--help"])
    lazy = capsys.readouterr().out
    _register_commands()
    assert set(group.commands) == set(COMMANDS)
    main(["--help"])
    assert capsys.readouterr().out == lazy
    assert all(f"  {name} " in lazy for name in COMMANDS)


def test_lth_exports_resolve():
    import lth

    for name in lth.__all__:
        assert getattr(lth, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = lth.no_such_name
