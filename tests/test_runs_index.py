"""The results index: registration of every run kind, list/show/compare/rm/reindex, concurrent
writers, a corrupt index, and the default run names of processes started together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli, one_line_error
from lth.store.index import INDEX_FILE, RunIndex, run_id

SMALL = ["--rounds", "2", "--iterations", "40", "--eval-every", "20", "--device", "cpu", "-q"]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs root with a large_final run, a movement run and a robust study."""
    from lth.cli import main

    root = tmp_path_factory.mktemp("root") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTH_RUNS_ROOT", str(root))
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        mp.setattr("lth.plots.plot_study", lambda study: [])
        for name, extra in (("magnitude", []), ("movement", ["--criterion", "movement"])):
            assert main(["find-ticket", "lenet-300-100", "digits", *SMALL, *extra, "--out", str(root / name)]) == 0
        assert main(["robust", "lenet-300-100", "digits", "--trials", "2", *SMALL, "--out", str(root / "seeds")]) == 0
    return root


def listed(capsys, root: Path, *args) -> list[dict]:
    rc, out, err = cli(capsys, "runs", "list", "--root", root, "--json", *args)
    assert rc == 0, err
    return json.loads(out)


def test_every_run_is_indexed_with_its_headline_metrics(root, capsys):
    rows = {row["path"]: row for row in listed(capsys, root)}
    assert set(rows) == {"magnitude", "movement", "seeds"}  # a study's trials are indexed through the study
    magnitude = rows["magnitude"]
    rounds = json.loads((root / "magnitude" / "rounds.json").read_text())
    assert magnitude["id"] == run_id("magnitude") and magnitude["kind"] == "find-ticket"
    assert magnitude["status"] == "complete" and magnitude["duration"] >= 0
    assert magnitude["test_accuracy"] == rounds[-1]["test_accuracy_at_early_stop"]
    assert magnitude["weights_remaining"] == rounds[-1]["weights_remaining"]
    assert magnitude["config"]["criterion"] == "large_final" and magnitude["metrics"]["rounds"] == 3
    seeds = rows["seeds"]
    assert seeds["kind"] == "robust" and seeds["metrics"]["runs_complete"] == 2


def test_filters_and_sorting(root, capsys):
    assert [r["path"] for r in listed(capsys, root, "--where", "criterion=movement")] == ["movement"]
    assert [
        r["path"] for r in listed(capsys, root, "--where", "kind=find-ticket", "--where", "criterion!=movement")
    ] == ["magnitude"]
    assert len(listed(capsys, root, "--where", "rounds>=2", "--where", "kind=find-ticket")) == 2
    by_accuracy = listed(capsys, root, "--sort", "-test_accuracy")
    assert [r["test_accuracy"] for r in by_accuracy] == sorted((r["test_accuracy"] for r in by_accuracy), reverse=True)
    rc, out, _ = cli(capsys, "runs", "list", "--root", root)
    assert rc == 0 and run_id("movement") in out and "find-ticket" in out


def test_compare_large_final_and_movement(root, capsys):
    rc, out, err = cli(capsys, "runs", "compare", run_id("magnitude"), "movement", "--root", root, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["config_differences"] == {"criterion": ["large_final", "movement"]}
    a = json.loads((root / "magnitude" / "rounds.json").read_text())
    b = json.loads((root / "movement" / "rounds.json").read_text())
    assert [level["values"] for level in result["levels"]] == [
        [x["test_accuracy_at_early_stop"], y["test_accuracy_at_early_stop"]] for x, y in zip(a, b)
    ]
    assert [level["weights_remaining"][0] for level in result["levels"]] == [x["weights_remaining"] for x in a]
    rc, out, _ = cli(capsys, "runs", "compare", "magnitude", "movement", "--root", root)
    assert rc == 0 and "criterion" in out and "large_final" in out and "movement" in out
    assert (
        f"{100 * a[2]['test_accuracy_at_early_stop']:.2f}%" in out
        and f"{100 * b[2]['test_accuracy_at_early_stop']:.2f}%" in out
    )


def test_show_by_id_prefix(root, capsys):
    rc, out, err = cli(capsys, "runs", "show", run_id("seeds")[:5], "--root", root, "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["index"]["path"] == "seeds" and shown["kind"] == "robust" and shown["summary"]


def test_bad_input(root, tmp_path, capsys):
    assert "no run 'zzzz'" in one_line_error(*cli(capsys, "runs", "show", "zzzz", "--root", root)[::2])
    assert "unknown key 'critrion'" in one_line_error(
        *cli(capsys, "runs", "list", "--root", root, "--where", "critrion=x")[::2]
    )
    assert "cannot read filter" in one_line_error(
        *cli(capsys, "runs", "list", "--root", root, "--where", "criterion")[::2]
    )
    assert "unknown sort key" in one_line_error(*cli(capsys, "runs", "list", "--root", root, "--sort", "nope")[::2])
    assert "does not exist" in one_line_error(*cli(capsys, "runs", "list", "--root", tmp_path / "none")[::2])
    assert "at least two" in one_line_error(*cli(capsys, "runs", "compare", "magnitude", "--root", root)[::2])


def test_corrupt_index_is_reported_then_rebuilt_by_reindex(tmp_path, capsys, root):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    for suffix in ("-wal", "-shm"):
        Path(str(copy / INDEX_FILE) + suffix).unlink(missing_ok=True)
    (copy / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    msg = one_line_error(*cli(capsys, "runs", "list", "--root", copy)[::2])
    assert "corrupt" in msg and "lth runs reindex" in msg
    rc, out, _ = cli(capsys, "runs", "reindex", "--root", copy)
    assert rc == 0 and "indexed 3 runs" in out
    assert {r["id"] for r in listed(capsys, copy)} == {run_id("magnitude"), run_id("movement"), run_id("seeds")}


def test_rm_removes_directory_and_row(tmp_path, capsys, root):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    RunIndex(copy).reindex()
    msg = one_line_error(*cli(capsys, "runs", "rm", "movement", "--root", copy)[::2])
    assert "--yes" in msg and (copy / "movement").is_dir()
    rc, out, _ = cli(capsys, "runs", "rm", "movement", "--root", copy, "--yes")
    assert rc == 0 and not (copy / "movement").exists()
    assert {r["path"] for r in listed(capsys, copy)} == {"magnitude", "seeds"}


def test_two_concurrent_processes_on_one_runs_root(tmp_path):
    """Both finish, both appear complete; default names started in the same second do not collide."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "lth",
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--rounds",
        "3",
        "--iterations",
        "100",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "20",
        "--device",
        "cpu",
        "-q",
    ]
    processes = [
        subprocess.Popen(command + extra, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for extra in ([], ["--criterion", "movement"])
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "warning" not in err, err
    listing = subprocess.run(
        [sys.executable, "-m", "lth", "runs", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(listing.stdout)
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    assert all(r["status"] == "complete" and r["metrics"]["rounds"] == 4 for r in rows)
    assert sorted(r["config"]["criterion"] for r in rows) == ["large_final", "movement"]
    for row in rows:
        assert json.loads((tmp_path / "runs" / row["path"] / "status.json").read_text())["status"] == "complete"
        assert row["config"]["name"] == row["path"]
