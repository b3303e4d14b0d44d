"""Hostile files and inputs (issue 13, items 6 and 7): damaged run and study files, masks that are
not boolean, NaN weights and data, incomplete data directories, --where values, unknown metrics
and YAML alias bombs. Each gives one `lth: error:` line naming the file or value, exit 2, and
nothing written or lost."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, one_line_error
from lth.errors import LthError

TINY = ["--iterations", "20", "--eval-every", "10", "--device", "cpu", "--quiet"]
LOCK = ".lth-lock"  # the advisory lock file a resume may leave (empty); bookkeeping, not content


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs root with ``run`` (one pruning round, its last checkpoint kept) and ``study`` (1 trial)."""
    from lth.cli import main
    from lth.store import RunDir

    root = tmp_path_factory.mktemp("hostile") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTH_RUNS_ROOT", str(root))  # the index goes there, not into ./runs
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        mp.setattr("lth.plots.plot_study", lambda study: [])
        mp.setattr(RunDir, "remove_checkpoint", lambda self: None)  # keep a real checkpoint to damage
        assert main(["find-ticket", "lenet-300-100", "digits", *TINY, "--rounds", "1", "--out", str(root / "run")]) == 0
        assert (
            main(
                [
                    "robust",
                    "lenet-300-100",
                    "digits",
                    "--trials",
                    "1",
                    *TINY,
                    "--rounds",
                    "0",
                    "--out",
                    str(root / "study"),
                ]
            )
            == 0
        )
    return root


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (but lock files) with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != LOCK}


def damaged_copy(source: Path, tmp_path: Path, name: str, content: bytes | str | None = None) -> tuple[Path, Path]:
    """A copy of ``source`` in ``tmp_path`` with ``name`` replaced by ``content`` (str/bytes); (copy, file)."""
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    target = copy / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif content is not None:
        target.write_text(content)
    return copy, target


def running(path: Path) -> None:
    """Mark a run or study unfinished, so that `lth resume` takes it."""
    (path / "status.json").write_text('{"status": "running", "started": "2026-01-01T00:00:00+00:00"}\n')


def refused(capsys, args: list, directory: Path, *fragments: str) -> str:
    """Run ``lth ARGS``; check one error line holding every fragment and ``directory`` unchanged."""
    before = snapshot(directory)
    line = one_line_error(*cli(capsys, *args)[::2])
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(directory) == before
    return line


# ------------------------------------------------------------------ item 6: damaged run files

RUN_DAMAGE = [
    ("status.json", "", "it is empty"),
    ("status.json", '{"status": "compl', "it is not valid JSON (Unterminated string"),
    ("status.json", '["complete"]', "it holds a list, not a mapping"),
    ("status.json", '{"status": 7}', "its status is 7, not a word"),
    ("rounds.json", "", "it is empty"),
    ("rounds.json", '[{"round": 0, "weights_rem', "it is not valid JSON"),
    ("rounds.json", '{"round": 0}', "it holds a mapping, not a list"),
    ("rounds.json", '[{"round": 0}]', "entry 0 lacks 'weights_remaining'"),
    (
        "rounds.json",
        '[{"round": "0", "weights_remaining": 1, "early_stop_iteration": 1, "val_accuracy_at_early_stop": 1,'
        ' "test_accuracy_at_early_stop": 1, "final_test_accuracy": 1}]',
        "entry 0 has round = '0'",
    ),
    ("config.yaml", "model: [lenet-300-100\n", "it is not valid YAML"),
    ("config.yaml", "- lenet-300-100\n- digits\n", "it holds a list, not a mapping"),
    ("config.yaml", "just words\n", "it holds a string, not a mapping"),
    ("config.yaml", "", "it is empty"),
    ("config.yaml", b"\xff\xfe\x00m\x00o", "it is not UTF-8 text"),
    ("config.yaml", "dataset: digits\n", "it has no 'model' name"),
]


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("name, content, fragment", RUN_DAMAGE)
def test_show_damaged_run_file(capsys, root, tmp_path, name, content, fragment, as_json):
    run, target = damaged_copy(root / "run", tmp_path, name, content)
    refused(capsys, ["show", *(["--json"] if as_json else []), run], run, f"{str(target)!r} is damaged", fragment)


STUDY_DAMAGE = [
    ("study.yaml", "", "it is empty"),
    ("study.yaml", "kind: [robust\n", "it is not valid YAML"),
    ("study.yaml", "- robust\n", "it holds a list, not a mapping"),
    ("study.yaml", "kind: robust\n", "it has no list of experiments"),
    ("study.yaml", "kind: robust\nexperiments: [{name: ticket, settings: {}}]\n", "experiment 0 lacks 'runs'"),
    (
        "study.yaml",
        "kind: robust\nexperiments: [{name: t, settings: {}, runs: [{trial: 0, path: ../../elsewhere, config: {}}]}]\n",
        "experiment 0, run 0 has path = '../../elsewhere'",
    ),
    ("study.yaml", "kind: robust\nexperiments: [{name: t, settings: {}, runs: []}]\n", "experiment 0 has runs = []"),
    ("summary.json", "[{", "it is not valid JSON"),
    ("summary.json", "{}", "it holds a mapping, not a list"),
    ("summary.json", '[{"metric": "x"}]', "entry 0 lacks 'experiment'"),
    ("status.json", "{", "it is not valid JSON"),
    ("status.json", "[]", "it holds a list, not a mapping"),
    (
        "status.json",
        '{"status": "running", "runs_complete": "many"}',
        "its runs_complete is 'many', not a whole number",
    ),
]


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("name, content, fragment", STUDY_DAMAGE)
def test_show_damaged_study_file(capsys, root, tmp_path, name, content, fragment, as_json):
    study, target = damaged_copy(root / "study", tmp_path, name, content)
    refused(capsys, ["show", *(["--json"] if as_json else []), study], study, f"{str(target)!r} is damaged", fragment)


@pytest.mark.parametrize("name, content, fragment", [s for s in STUDY_DAMAGE if s[0] == "study.yaml"])
def test_resume_study_with_damaged_study_yaml(capsys, root, tmp_path, name, content, fragment):
    study, target = damaged_copy(root / "study", tmp_path, name, content)
    running(study)
    refused(capsys, ["resume", study, "-q"], study, f"{str(target)!r} is damaged", fragment)


@pytest.mark.parametrize("command", ["plot", "report"])
def test_plot_and_report_damaged_config(capsys, root, tmp_path, command):
    run, target = damaged_copy(root / "run", tmp_path, "config.yaml", "model: lenet-300-100\n  dataset: [digits\n")
    out = ["--kind", "accuracy", "--out", tmp_path / "figures"] if command == "plot" else ["--out", tmp_path / "r.html"]
    refused(capsys, [command, run, *out], run, f"{str(target)!r} is damaged", "it is not valid YAML")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("[{", "it is not valid JSON"),
        ('{"criterion": "lf"}', "it holds a mapping, not a list"),
        ('[{"criterion": 1}]', "entry 0 has criterion = 1"),
        (
            '[{"criterion": "lf", "keep": 0.5, "weights": "init", "test_accuracy": null}]',
            "entry 0 has test_accuracy = None",
        ),
    ],
)
def test_damaged_supermask_eval_rows(tmp_path, content, fragment):
    from lth.store import RunDir
    from lth.supermasks.evaluate import read_rows

    (tmp_path / "supermask_eval.json").write_text(content)
    with pytest.raises(LthError, match="supermask_eval.json' is damaged: " + fragment.replace("[", r"\[")):
        read_rows(RunDir(tmp_path))


def test_damaged_trial_inside_a_study_is_named(capsys, root, tmp_path):
    study, target = damaged_copy(root / "study", tmp_path, "trial_00/rounds.json", "[")
    refused(capsys, ["show", "--json", study], study, f"{str(target)!r} is damaged", "not valid JSON")


# ------------------------------------------------------------------ metrics, masks and weights

HEADER = "round,iteration,split,loss,accuracy\n"
METRICS_DAMAGE = [
    (HEADER + "0,10,val,abc,0.5\n", "line 2 has loss = 'abc', not a number"),
    (HEADER + "0,ten,val,0.3,0.5\n", "line 2 has iteration = 'ten', not a whole number"),
    (HEADER + "0,10\n", "line 2 has fewer fields than the header"),
    ("round,iteration,split,accuracy\n0,10,val,0.5\n", "its header lacks the column 'loss'"),
    ("", "it is empty"),
]


@pytest.mark.parametrize("content, fragment", METRICS_DAMAGE)
def test_plot_damaged_metrics(capsys, root, tmp_path, content, fragment):
    run, target = damaged_copy(root / "run", tmp_path, "metrics.csv", content)
    out = tmp_path / "figures"
    refused(
        capsys,
        ["plot", run, "--kind", "learning-curves", "--format", "png", "--out", out],
        run,
        f"{str(target)!r} is damaged",
        fragment,
    )
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content, fragment", [METRICS_DAMAGE[0], METRICS_DAMAGE[3]])
def test_report_damaged_metrics(capsys, root, tmp_path, content, fragment):
    run, target = damaged_copy(root / "run", tmp_path, "metrics.csv", content)
    out = tmp_path / "report.html"
    refused(capsys, ["report", run, "--out", out], run, f"{str(target)!r} is damaged", fragment)
    assert not out.exists()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "kind, name, fragments",
    [
        ("first-layer", "masks/round_01.pt", ["cannot read mask file", "it is damaged or not a mask"]),
        ("weights-scatter", "masks/round_00.pt", ["cannot read mask file", "it is damaged or not a mask"]),
        ("weights-scatter", "weights/init.pt", ["is damaged: torch cannot load it"]),
        ("weights-hist", "weights/final_round_00.pt", ["is damaged: torch cannot load it"]),
    ],
)
def test_plot_truncated_mask_or_weights(capsys, root, tmp_path, kind, name, fragments):
    run, target = damaged_copy(root / "run", tmp_path, name)
    _truncate(target)
    refused(
        capsys,
        ["plot", run, "--kind", kind, "--format", "png", "--out", tmp_path / "figures"],
        run,
        str(target),
        *fragments,
    )


@pytest.mark.parametrize(
    "name, value, fragments",
    [
        (
            "masks/round_01.pt",
            {"fc1.weight": torch.full((300, 64), float("nan"))},
            ["'fc1.weight' holds nan", "boolean"],
        ),
        ("masks/round_01.pt", {}, ["is damaged: it holds no masks"]),
        ("weights/init.pt", [1, 2], ["is damaged: it holds a list, not a mapping of names to tensors"]),
        ("weights/init.pt", {"fc1.weight": "w"}, ["is damaged: it maps 'fc1.weight' to a str, not a tensor"]),
        ("weights/init.pt", {"other.weight": torch.ones(3)}, ["do not match", "'fc1.weight' is missing"]),
    ],
)
def test_plot_mask_or_weights_of_the_wrong_content(capsys, root, tmp_path, name, value, fragments):
    run, target = damaged_copy(root / "run", tmp_path, name)
    torch.save(value, target)
    refused(
        capsys,
        ["plot", run, "--kind", "first-layer,weights-scatter", "--format", "png", "--out", tmp_path / "figures"],
        run,
        *fragments,
    )


def test_report_damaged_weights(capsys, root, tmp_path):
    run, target = damaged_copy(root / "run", tmp_path, "weights/final_round_00.pt", b"PK\x03\x04 not a zip")
    refused(capsys, ["report", run, "--out", tmp_path / "report.html"], run, str(target), "is damaged")
    assert not (tmp_path / "report.html").exists()


def test_show_ignores_damaged_masks(capsys, root, tmp_path):
    """`lth show` reads neither masks nor weights: damage there does not stop it."""
    run, target = damaged_copy(root / "run", tmp_path, "masks/round_01.pt", b"garbage")
    rc, out, err = cli(capsys, "show", run)
    assert rc == 0 and "lenet-300-100 on digits" in out, err


# ------------------------------------------------------------------ checkpoints


def _checkpoint(run: Path, change) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    change(state)
    torch.save(state, run / "checkpoint.pt")


@pytest.mark.parametrize(
    "state, fragment",
    [
        ({"format": 1, "round": 0}, "it lacks 'stage', 'mask', 'control_mask' and 11 more keys"),
        ([1, 2, 3], "it holds a list, not a mapping"),
        ("checkpoint", "it holds a str, not a mapping"),
    ],
)
def test_resume_checkpoint_lacking_keys(capsys, root, tmp_path, state, fragment):
    run, target = damaged_copy(root / "run", tmp_path, "checkpoint.pt")
    running(run)
    torch.save(state, target)
    refused(capsys, ["resume", run, "-q"], run, f"{str(target)!r} is damaged", fragment, "cannot be resumed")


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: s.pop("mask"), "it lacks 'mask'"),
        (lambda s: s.update(mask=[True]), "its 'mask' is a list of the wrong kind"),
        (lambda s: s.update(round="one"), "its 'round' is a str of the wrong kind"),
        (lambda s: s.update(training={"iteration": 3}), "it lacks training 'model', 'optimizer', 'metrics' and"),
        (
            lambda s: s.update(mask={"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}),
            "its mask has 'fc1.weight' of shape (3, 3), which lenet-300-100 does not have",
        ),
        (lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8)), "it does not fit this run (RuntimeError"),
    ],
)
def test_resume_checkpoint_with_wrong_contents(capsys, root, tmp_path, change, fragment):
    run, target = damaged_copy(root / "run", tmp_path, "checkpoint.pt")
    running(run)
    _checkpoint(run, change)
    refused(capsys, ["resume", run, "-q"], run, f"{str(target)!r} is damaged", fragment)


# ------------------------------------------------------------------ the results index


def test_index_row_with_bad_json(capsys, root, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    with closing(sqlite3.connect(copy / "lth-index.sqlite")) as connection, connection:
        connection.execute("UPDATE runs SET config = '{bad' WHERE path = 'run'")
    refused(
        capsys,
        ["runs", "list", "--root", copy],
        copy,
        "lth-index.sqlite",
        "is damaged: the config of run 'run'",
        f"lth runs reindex --root {copy}",
    )


# ------------------------------------------------------------------ item 7: --init-mask


@pytest.mark.parametrize(
    "value, fragment",
    [
        (torch.full((300, 64), float("nan")), "'fc1.weight' holds nan"),
        (torch.full((300, 64), 0.5), "'fc1.weight' holds 0.5"),
        (torch.full((300, 64), 2, dtype=torch.int64), "'fc1.weight' holds 2"),
        (torch.zeros(300, 64, dtype=torch.complex64), "'fc1.weight' is a torch.complex64 tensor"),
    ],
)
def test_init_mask_must_be_boolean(capsys, tmp_path, value, fragment):
    path = tmp_path / "mask.pt"
    torch.save({"fc1.weight": value}, path)
    out = tmp_path / "run"
    line = refused(
        capsys,
        ["find-ticket", "lenet-300-100", "digits", *TINY, "--init-mask", path, "--out", out],
        tmp_path,
        f"mask file {str(path)!r}",
        fragment,
        "masks must be boolean (or hold only 0 and 1)",
    )
    assert not out.exists(), line


@pytest.mark.parametrize(
    "mask, fragment",
    [
        (
            {"fc1.weight": torch.ones(64, 300, dtype=torch.bool)},
            "does not fit this model: mask for 'fc1.weight' has shape (64, 300)",
        ),
        ({"fc9.weight": torch.ones(3, 3, dtype=torch.bool)}, "masks 'fc9.weight', which this run does not prune"),
        ({}, "holds no masks"),
    ],
)
def test_init_mask_that_does_not_fit_the_model(capsys, tmp_path, mask, fragment):
    path = tmp_path / "mask.pt"
    torch.save(mask, path)
    refused(
        capsys,
        ["find-ticket", "lenet-300-100", "digits", *TINY, "--init-mask", path, "--out", tmp_path / "run"],
        tmp_path,
        str(path),
        fragment,
    )


def test_masks_of_zeros_and_ones_are_accepted_as_booleans(tmp_path):
    from lth.masks import Mask

    path = tmp_path / "mask.pt"
    torch.save({"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[1, 0]], dtype=torch.uint8)}, path)
    mask = Mask.load(path)
    assert (
        mask["a"].dtype == torch.bool and mask["a"].tolist() == [False, True] and mask["b"].tolist() == [[True, False]]
    )


# ------------------------------------------------------------------ item 7: lth mask


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "fc1.weight": torch.randn(8, 6, generator=g),
        "fc1.bias": torch.randn(8, generator=g),
        "fc2.weight": torch.randn(3, 8, generator=g),
    }


@pytest.mark.parametrize(
    "which, tensor, bad, fragment",
    [
        ("init", "fc1.weight", float("nan"), "tensor 'fc1.weight' holds nan"),
        ("final", "fc2.weight", float("inf"), "tensor 'fc2.weight' holds inf"),
        ("final", "fc1.bias", float("-inf"), "tensor 'fc1.bias' holds -inf"),
    ],
)
def test_mask_command_refuses_non_finite_weights(capsys, tmp_path, which, tensor, bad, fragment):
    files = {"init": tmp_path / "init.pt", "final": tmp_path / "final.pt"}
    for name, seed in (("init", 0), ("final", 1)):
        state = _weights(seed)
        if name == which:
            state[tensor].view(-1)[3] = bad
        torch.save(state, files[name])
    out = tmp_path / "mask.pt"
    refused(
        capsys,
        ["mask", "--init", files["init"], "--final", files["final"], "--keep", "0.5", "--out", out],
        tmp_path,
        f"{which} file {str(files[which])!r}",
        fragment,
        "weights must be finite",
    )
    assert not out.exists()


def test_mask_command_refuses_a_previous_mask_that_is_not_boolean(capsys, tmp_path):
    torch.save(_weights(0), tmp_path / "init.pt")
    torch.save(_weights(1), tmp_path / "final.pt")
    prev = tmp_path / "prev.pt"
    torch.save({"fc1.weight": torch.full((8, 6), 0.5)}, prev)
    refused(
        capsys,
        [
            "mask",
            "--init",
            tmp_path / "init.pt",
            "--final",
            tmp_path / "final.pt",
            "--keep",
            "0.5",
            "--prev-mask",
            prev,
            "--out",
            tmp_path / "mask.pt",
        ],
        tmp_path,
        f"previous mask file {str(prev)!r}",
        "'fc1.weight' holds 0.5",
    )


def test_compute_mask_api_refuses_nan_weights():
    from lth.mask_from_weights import compute_mask

    init, final = _weights(0), _weights(1)
    final["fc2.weight"][0, 0] = float("nan")
    with pytest.raises(LthError, match="the final weights: tensor 'fc2.weight' holds nan"):
        compute_mask(init, final, keep=0.5)
    with pytest.raises(LthError, match="the previous mask: 'fc1.weight' holds nan"):
        compute_mask(init, _weights(1), keep=0.5, prev_mask={"fc1.weight": torch.full((8, 6), float("nan"))})


# ------------------------------------------------------------------ item 7: incomplete --data-dir

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.mark.parametrize("sub", ["", "mnist"])
def test_incomplete_data_dir_is_refused(capsys, offline_env, sub):
    given = offline_env / "my-data"
    (given / sub).mkdir(parents=True)
    for name in MNIST_FILES[:3]:
        (given / sub / name).write_bytes(b"\x00")
    out = offline_env / "run"
    refused(
        capsys,
        ["find-ticket", "lenet-300-100", "mnist", *TINY, "--data-dir", given, "--out", out],
        offline_env,
        f"data directory {str(given / sub)!r} lacks 't10k-labels-idx1-ubyte.gz'",
        "--data-dir",
    )
    assert not out.exists()


def test_incomplete_cifar10_batches_are_refused(capsys, offline_env):
    batches = offline_env / "cifar" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(b"\x00")
    refused(
        capsys,
        ["find-ticket", "conv-2", "cifar10", *TINY, "--data-dir", offline_env / "cifar", "--out", offline_env / "run"],
        offline_env,
        f"{str(batches)!r} lacks 'test_batch'",
    )


# ------------------------------------------------------------------ item 7: lth runs list --where / compare


def listed(capsys, root: Path, *where: str) -> list[str]:
    rc, out, err = cli(capsys, "runs", "list", "--root", root, "--json", *[a for w in where for a in ("--where", w)])
    assert rc == 0, err
    return sorted(row["path"] for row in json.loads(out))


@pytest.mark.parametrize(
    "condition", ["name=[x", "name=@x", "name={a: b", "criterion=*alias", "name=!!python/none", "dataset=digits: x"]
)
def test_where_values_are_text_for_text_columns(capsys, root, condition):
    assert listed(capsys, root, condition) == []


def test_where_values_are_read_as_the_column_type(capsys, root):
    assert listed(capsys, root, "rounds>=1") == ["run"]
    assert listed(capsys, root, "rounds=1.0") == ["run"]  # a number, not the text "1.0"
    assert listed(capsys, root, "test_accuracy>0") == ["run", "study"]
    assert listed(capsys, root, "prune_biases=false") == ["run"]
    assert listed(capsys, root, "dataset=digits", "kind!=robust") == ["run"]
    assert listed(capsys, root, "name=") == ["run"]  # no name
    assert listed(capsys, root, "started>=2000-01-01") == ["run", "study"]  # ISO times compare as text


@pytest.mark.parametrize(
    "condition, fragment",
    [
        ("test_accuracy>abc", "--where 'test_accuracy>abc': test_accuracy is numeric and 'abc' is not a number"),
        ("rounds=[1", "rounds is numeric and '[1' is not a number"),
        ("weights_remaining<nan", "weights_remaining is numeric and 'nan' is not a number"),
        ("prune_biases=maybe", "prune_biases is true or false, not 'maybe'"),
        ("prune_biases>true", "prune_biases is true or false; compare it with = or !="),
        ("duration>", "compares duration with no value"),
    ],
)
def test_where_value_of_the_wrong_type(capsys, root, condition, fragment):
    refused(capsys, ["runs", "list", "--root", root, "--where", condition], root, fragment)


def test_compare_unknown_metric(capsys, root):
    line = refused(
        capsys,
        ["runs", "compare", "run", "study", "--root", root, "--metric", "nosuch"],
        root,
        "unknown metric 'nosuch'",
        "test_accuracy_at_early_stop",
    )
    assert "layers" not in line  # not a per-level number


# ------------------------------------------------------------------ item 7: user data through the API


@pytest.mark.parametrize(
    "split, bad, fragment",
    [
        (0, float("nan"), "x_train holds nan (first in example 3)"),
        (1, float("inf"), "x_test holds inf (first in example 3)"),
    ],
)
def test_user_data_with_non_finite_inputs(split, bad, fragment):
    import numpy as np

    from lth.data.user_data import as_bundle

    xs = [np.zeros((10, 4), dtype=np.float32), np.zeros((6, 4), dtype=np.float32)]
    xs[split][3, 2] = bad
    ys = [np.arange(10) % 2, np.arange(6) % 2]
    with pytest.raises(LthError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        as_bundle(((xs[0], ys[0]), (xs[1], ys[1])), "cpu")


def test_user_data_with_nan_validation_split():
    from lth.data.user_data import as_bundle

    x, y = torch.zeros(8, 3), torch.zeros(8, dtype=torch.int64)
    val = torch.zeros(4, 3)
    val[0, 0] = float("nan")
    with pytest.raises(LthError, match=r"x_val holds nan \(first in example 0\)"):
        as_bundle(((x, y), (val, y[:4]), (x, y)), "cpu")


# ------------------------------------------------------------------ item 7: YAML alias bombs and long messages


def bomb(levels: int, anchor: str = "a") -> str:
    """YAML whose last anchor expands to 9**levels strings ("billion laughs")."""
    lines = [f"{anchor}0: &{anchor}0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"{anchor}{i}: &{anchor}{i} [" + ", ".join([f"*{anchor}{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_config_file_alias_bomb_fails_fast(capsys, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(9) + "lr: *a8\n")
    tic = time.perf_counter()
    line = refused(
        capsys,
        ["find-ticket", "lenet-300-100", "digits", *TINY, "--config", path, "--out", tmp_path / "run"],
        tmp_path,
        f"config file {str(path)!r} expands to more than 100000 values through YAML aliases",
    )
    assert time.perf_counter() - tic < 5 and len(line) < 300


def test_session_file_alias_bomb_fails_fast(capsys, tmp_path):
    path = tmp_path / "session.yaml"
    path.write_text(bomb(9) + "base: {model: lenet-300-100, dataset: digits, lr: *a8}\ngrid: {seed: [1]}\n")
    tic = time.perf_counter()
    refused(
        capsys, ["session", path, "--out", tmp_path / "study", "-q"], tmp_path, "expands to more than 100000 values"
    )
    assert time.perf_counter() - tic < 5


def test_small_alias_bomb_gives_a_short_message(capsys, tmp_path):
    """Under the limit the value is refused by validation, quoted in bounded form."""
    path = tmp_path / "small-bomb.yaml"
    path.write_text(bomb(4) + "lr: *a3\n")
    line = refused(
        capsys,
        ["find-ticket", "lenet-300-100", "digits", *TINY, "--config", path, "--out", tmp_path / "run"],
        tmp_path,
        "bad value [[[",
        "for lr",
    )
    assert len(line) < 250


def test_study_yaml_alias_bomb(capsys, root, tmp_path):
    study, target = damaged_copy(root / "study", tmp_path, "study.yaml", bomb(9) + "kind: robust\nexperiments: *a8\n")
    tic = time.perf_counter()
    refused(capsys, ["show", study], study, f"{str(target)!r} is damaged: it expands to more than 1000000 values")
    assert time.perf_counter() - tic < 10


def test_error_lines_are_capped(capsys, tmp_path):
    name = "m" * 5000
    line = one_line_error(*cli(capsys, "find-ticket", name, "digits", "--out", tmp_path / "run")[::2])
    assert line.startswith("lth: error: unknown model") and len(line) <= len("lth: error: ") + 1000
    assert line.endswith("...")
