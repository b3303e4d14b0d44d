"""Data safety: lth replaces or deletes only the directories it made, and in them only its own
files; a sound results index under concurrent writers; names that stay inside the runs root;
files that follow the umask; one index per runs root."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli, one_line_error
from lth.errors import LthError
from lth.store.index import INDEX_FILE, RunIndex, run_id
from lth.store.ownership import MARKER

FAST = ["--rounds", "0", "--iterations", "20", "--eval-every", "10", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
    monkeypatch.setattr("lth.plots.plot_study", lambda study: [])


def find(capsys, out, *extra):
    return cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--out", out, *extra)


def tree(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture
def holder(tmp_path):
    """``holder(path)``: another process holds lth's lock of ``path`` until the test ends."""
    processes = []

    def hold(path: Path) -> subprocess.Popen:
        code = textwrap.dedent(f"""
            import sys, time
            from lth.store.lock import run_lock
            with run_lock({str(path)!r}):
                print("held", flush=True)
                time.sleep(60)
        """)
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait(timeout=10)


# ------------------------------------------------------------------ --overwrite


def test_overwrite_refuses_a_directory_lth_did_not_make(tmp_path, capsys):
    """The reported case: a project folder with some other tool's config.yaml."""
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "important.py").write_text("x\n")
    (proj / "config.yaml").write_text("tool: other\n")
    msg = one_line_error(*find(capsys, proj, "--overwrite")[::2])
    assert f"run directory {str(proj)!r} was not created by lth (it has no {MARKER} marker)" in msg
    assert tree(proj) == ["config.yaml", "src", "src/important.py"]
    assert (proj / "src" / "important.py").read_text() == "x\n"


def test_overwrite_replaces_only_lths_own_files(tmp_path, capsys):
    out, outside = tmp_path / "run", tmp_path / "outside"
    assert find(capsys, out)[0] == 0
    first = json.loads((out / MARKER).read_text())
    assert first["lth"] == "run" and first["format"] == 1
    outside.mkdir()
    (outside / "keep.txt").write_text("outside\n")
    (out / "notes.txt").write_text("mine\n")
    (out / "analysis").mkdir()
    (out / "analysis" / "table.csv").write_text("a,b\n")
    (out / "masks" / "my_mask.pt").write_bytes(b"not lth's")
    (out / "link").symlink_to(outside, target_is_directory=True)
    rc, _, err = find(capsys, out, "--overwrite", "--seed", "3")
    assert rc == 0, err
    assert err.startswith(f"lth: warning: kept 4 entries in {str(out)!r} that lth did not write: ")
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "analysis" / "table.csv").read_text() == "a,b\n"
    assert (out / "masks" / "my_mask.pt").read_bytes() == b"not lth's" and (out / "link").is_symlink()
    assert tree(outside) == ["keep.txt"]
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3  # the new run
    assert json.loads((out / "status.json").read_text())["status"] == "complete"


def test_overwrite_of_a_symbolic_link_is_one_line(tmp_path, capsys):
    real, link = tmp_path / "real", tmp_path / "link"
    assert find(capsys, real)[0] == 0
    before = tree(real)
    link.symlink_to(real, target_is_directory=True)
    msg = one_line_error(*find(capsys, link, "--overwrite")[::2])
    assert f"{str(link)!r} is a symbolic link" in msg
    assert tree(real) == before and link.is_symlink()


def test_overwrite_refuses_a_run_another_process_is_writing(tmp_path, capsys, holder):
    out = tmp_path / "run"
    assert find(capsys, out)[0] == 0
    before = tree(out)
    holder(out)
    msg = one_line_error(*find(capsys, out, "--overwrite")[::2])
    assert "is in use by" in msg and "pid" in msg
    assert tree(out) == before


def test_overwrite_refuses_a_marker_of_a_newer_format(tmp_path, capsys):
    out = tmp_path / "run"
    assert find(capsys, out)[0] == 0
    (out / MARKER).write_text(json.dumps({"lth": "run", "format": 99}))
    before = tree(out)
    assert "newer lth (format 99)" in one_line_error(*find(capsys, out, "--overwrite")[::2])
    assert tree(out) == before


@pytest.mark.parametrize(
    "marker", ["", "{not json", "[1, 2]", '{"lth": "other", "format": 1}', '{"lth": "run", "format": "1"}']
)
def test_a_forged_or_broken_marker_is_not_lths(tmp_path, capsys, marker):
    out = tmp_path / "dir"
    out.mkdir()
    (out / MARKER).write_text(marker)
    (out / "config.yaml").write_text("model: lenet-300-100\n")
    assert "was not created by lth" in one_line_error(*find(capsys, out, "--overwrite")[::2])
    assert tree(out) == sorted([MARKER, "config.yaml"])


def test_overwrite_of_a_study_keeps_foreign_entries(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["robust", "lenet-300-100", "digits", "--trials", "1", *FAST, "--out", out]
    assert cli(capsys, *args)[0] == 0
    assert json.loads((out / MARKER).read_text())["lth"] == "study"
    (out / "README.txt").write_text("about this study\n")
    (out / "trial_00" / "notes.txt").write_text("trial notes\n")
    rc, _, err = cli(capsys, *args, "--overwrite")
    assert rc == 0, err
    assert "kept 2 entries" in err
    assert (out / "README.txt").is_file() and (out / "trial_00" / "notes.txt").is_file()
    assert json.loads((out / "trial_00" / "status.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------ lth runs rm


def _row(root: Path, key: str, path: Path) -> str:
    """Write an index row naming ``key`` as the run's path (as a tampered index holds it); return its id."""
    from contextlib import closing

    from lth.store.index import describe_run

    index = RunIndex(root)
    root.mkdir(parents=True, exist_ok=True)
    with closing(index._connect()) as connection:  # creates the schema
        index._upsert(connection, key, describe_run(path))
    return run_id(key)


def test_rm_refuses_an_index_row_outside_the_root(tmp_path, capsys):
    """The reported case: a row whose path is ../victim; the victim even looks like an lth run."""
    root, victim = tmp_path / "runs", tmp_path / "victim"
    assert find(capsys, victim)[0] == 0
    (victim / "thesis.tex").write_text("precious\n")
    before = tree(victim)
    identifier = _row(root, "../victim", victim)
    msg = one_line_error(*cli(capsys, "runs", "rm", identifier, "--root", root, "--yes")[::2])
    assert "outside the runs root" in msg
    assert tree(victim) == before


def test_rm_refuses_a_directory_without_lths_marker(tmp_path, capsys):
    root = tmp_path / "runs"
    foreign = root / "foreign"
    foreign.mkdir(parents=True)
    (foreign / "config.yaml").write_text(yaml.safe_dump({"model": "m", "dataset": "d"}))
    (foreign / "data.bin").write_bytes(b"\x00" * 10)
    assert cli(capsys, "runs", "reindex", "--root", root)[0] == 0
    msg = one_line_error(*cli(capsys, "runs", "rm", "foreign", "--root", root, "--yes")[::2])
    assert "was not created by lth" in msg
    assert tree(foreign) == ["config.yaml", "data.bin"]


def test_rm_refuses_a_run_reached_through_a_symbolic_link(tmp_path, capsys):
    root, real = tmp_path / "runs", tmp_path / "elsewhere" / "real"
    assert find(capsys, real)[0] == 0
    before = tree(real)
    root.mkdir(exist_ok=True)
    (root / "link").symlink_to(real, target_is_directory=True)
    identifier = _row(root, "link", real)
    msg = one_line_error(*cli(capsys, "runs", "rm", identifier, "--root", root, "--yes")[::2])
    assert "outside the runs root" in msg or "symbolic link" in msg
    assert tree(real) == before and (root / "link").is_symlink()


def test_rm_refuses_a_running_run_then_removes_only_lths_files(tmp_path, capsys, holder):
    root = tmp_path / "runs"  # $LTH_RUNS_ROOT: the run registers there
    out = root / "busy"
    assert find(capsys, out)[0] == 0
    (out / "notes.txt").write_text("mine\n")
    before = tree(out)
    process = holder(out)
    msg = one_line_error(*cli(capsys, "runs", "rm", "busy", "--root", root, "--yes")[::2])
    assert "is in use by a running lth process" in msg
    assert tree(out) == before
    process.kill()
    process.wait(timeout=10)
    rc, stdout, err = cli(capsys, "runs", "rm", "busy", "--root", root, "--yes")
    assert rc == 0, err
    assert f"removed {run_id('busy')} (busy)" in stdout
    assert "kept 1 entries that lth did not write" in err
    assert tree(out) == sorted([MARKER, "notes.txt"])  # the folder stays lth's, holding only the user's file
    assert json.loads(cli(capsys, "runs", "list", "--root", root, "--json")[1]) == []


def test_rm_removes_a_run_entirely_when_it_holds_only_lths_files(tmp_path, capsys):
    root = tmp_path / "runs"
    assert find(capsys, root / "plain")[0] == 0
    assert cli(capsys, "runs", "rm", "plain", "--root", root, "--yes")[0] == 0
    assert not (root / "plain").exists()
    assert (root / INDEX_FILE).is_file()


# ------------------------------------------------------------------ reindex


WRITER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import yaml
    from lth.store.index import index_run
    root, tag, count = Path(os.environ["LTH_RUNS_ROOT"]), sys.argv[1], int(sys.argv[2])
    for i in range(count):
        run = root / f"{tag}-{i:03d}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"model": "lenet-300-100", "dataset": "digits"}))
        (run / "status.json").write_text(json.dumps({"status": "complete", "started": "2026-01-01T00:00:00"}))
        index_run(run)
""")
REINDEXER = textwrap.dedent("""
    import os, sys
    from lth.store.index import RunIndex
    root, stop, count = os.environ["LTH_RUNS_ROOT"], sys.argv[1], 0
    while not os.path.exists(stop):
        if os.path.isdir(root):
            RunIndex(root).reindex()
            count += 1
    print(count)
""")


@pytest.mark.slow
def test_reindex_loop_with_concurrent_writers_loses_no_row(tmp_path):
    """300 runs registering from three processes while a fourth rebuilds the index in a loop."""
    root, stop = tmp_path / "runs", tmp_path / "stop"
    env = {**os.environ, "LTH_RUNS_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    reindexer = subprocess.Popen(
        [sys.executable, "-c", REINDEXER, str(stop)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, tag, "100"], env=env, stderr=subprocess.PIPE, text=True)
        for tag in "abc"
    ]
    try:
        for writer in writers:
            _, err = writer.communicate(timeout=240)
            assert writer.returncode == 0 and "warning" not in err, err
    finally:
        stop.write_text("")
        out, err = reindexer.communicate(timeout=120)
    assert reindexer.returncode == 0, err
    assert int(out) >= 1  # it rebuilt the index at least once while the writers ran
    rows = RunIndex(root).all()
    assert len(rows) == 300 and {r["path"] for r in rows} == {f"{t}-{i:03d}" for t in "abc" for i in range(100)}
    with sqlite3.connect(root / INDEX_FILE) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    _, damaged = RunIndex(root).reindex()
    assert damaged == [] and len(RunIndex(root).all()) == 300


def test_reindex_keeps_a_corrupt_index_aside(tmp_path, capsys):
    root = tmp_path / "runs"
    assert find(capsys, root / "a")[0] == 0
    for suffix in ("-wal", "-shm"):
        Path(str(root / INDEX_FILE) + suffix).unlink(missing_ok=True)
    (root / INDEX_FILE).write_bytes(b"garbage" * 200)
    rc, out, err = cli(capsys, "runs", "reindex", "--root", root)
    assert rc == 0 and "indexed 1 runs" in out
    kept = list(root.glob(f"{INDEX_FILE}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"garbage" * 200
    assert "could not be opened; kept it as" in err
    assert [r["path"] for r in RunIndex(root).all()] == ["a"]


def test_reindex_finishes_over_damaged_runs_and_lists_them(tmp_path, capsys):
    root = tmp_path / "runs"
    for name in ("good", "bad-status", "bad-rounds"):
        assert find(capsys, root / name)[0] == 0
    (root / "bad-status" / "status.json").write_text('{"status": "comp')
    (root / "bad-rounds" / "rounds.json").write_text("")
    study = root / "bad-study"
    study.mkdir()
    (study / "study.yaml").write_text("kind: robust\nexperiments: 3\n")
    rc, out, err = cli(capsys, "runs", "reindex", "--root", root)
    assert rc == 0 and "indexed 1 runs" in out
    damaged = [line for line in err.splitlines() if line.startswith("lth: warning: not indexed, damaged: ")]
    assert len(damaged) == 3 and "Traceback" not in err
    assert {p for p in ("bad-status", "bad-rounds", "bad-study") if any(p in line for line in damaged)} == {
        "bad-status",
        "bad-rounds",
        "bad-study",
    }
    assert [r["path"] for r in RunIndex(root).all()] == ["good"]


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["../escaped-run", "a/b", "..", ".", "a\\b", " padded", "ABS"])
def test_names_are_single_path_components(tmp_path, capsys, name):
    tmp_path / "runs"
    if name == "ABS":
        name = str(tmp_path / "abs" / "path")
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--name", name)
    assert "is not a single directory name" in one_line_error(rc, err)
    assert tree(tmp_path) == []  # nothing written: no run, no runs root, no index, nothing escaped


def test_empty_and_overlong_names(tmp_path, capsys):
    assert "is empty" in one_line_error(
        *cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--name", "")[::2]
    )
    assert "at most 200 are allowed" in one_line_error(
        *cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--name", "x" * 300)[::2]
    )
    assert tree(tmp_path) == []


def test_study_names_are_single_path_components(tmp_path, capsys):
    msg = one_line_error(
        *cli(capsys, "robust", "lenet-300-100", "digits", "--trials", "2", *FAST, "--name", "../up")[::2]
    )
    assert "study name '../up' is not a single directory name" in msg
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "a/b", "base": {"model": "lenet-300-100", "dataset": "digits"}, "grid": {"seed": [0, 1]}}
        )
    )
    msg = one_line_error(*cli(capsys, "session", spec)[::2])
    assert "session name 'a/b' is not a single directory name" in msg
    assert tree(tmp_path) == ["grid.yaml"]


def test_session_experiment_names_cannot_leave_the_save_directory(tmp_path, digits):
    import torch

    from lth import LotterySession

    session = LotterySession(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), digits, device="cpu")
    with pytest.raises(LthError, match=r"experiment name '\.\./x' is not a single directory name"):
        session.new_experiment("../x")
    assert session.experiments == {}


# ------------------------------------------------------------------ permissions


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, capsys, umask, mode):
    root = tmp_path / "runs"
    previous = os.umask(umask)
    try:
        assert find(capsys, root / "run")[0] == 0
        assert cli(capsys, "runs", "reindex", "--root", root)[0] == 0
    finally:
        os.umask(previous)
    files = [p for p in (root / "run").rglob("*") if p.is_file() and p.name != ".lth-lock"]
    assert len(files) >= 6
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}
    assert stat.S_IMODE((root / INDEX_FILE).stat().st_mode) == mode


# ------------------------------------------------------------------ where the index lives


def test_runs_written_elsewhere_are_indexed_in_the_runs_root(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "x" / "y" / "run"
    assert find(capsys, out)[0] == 0
    assert not (out.parent / INDEX_FILE).exists() and not (out / INDEX_FILE).exists()
    rows = json.loads(cli(capsys, "runs", "list", "--root", root, "--json")[1])
    assert [r["path"] for r in rows] == [str(out.resolve())] and rows[0]["status"] == "complete"
    assert cli(capsys, "runs", "reindex", "--root", root)[0] == 0  # kept while the directory exists
    assert [r["path"] for r in RunIndex(root).all()] == [str(out.resolve())]
    msg = one_line_error(*cli(capsys, "runs", "rm", rows[0]["id"], "--root", root, "--yes")[::2])
    assert "outside the runs root" in msg and (out / "rounds.json").is_file()
    import shutil

    shutil.rmtree(out)  # the user deletes it; the next reindex forgets it
    assert cli(capsys, "runs", "reindex", "--root", root)[0] == 0
    assert RunIndex(root).all() == []


def test_default_runs_go_to_the_runs_root(tmp_path, capsys, monkeypatch):
    root = tmp_path / "chosen"
    monkeypatch.setenv("LTH_RUNS_ROOT", str(root))
    assert cli(capsys, "find-ticket", "lenet-300-100", "digits", *FAST, "--name", "mine")[0] == 0
    assert (root / "mine" / "rounds.json").is_file() and (root / INDEX_FILE).is_file()
    assert [r["path"] for r in RunIndex(root).all()] == ["mine"]


# ------------------------------------------------------------------ data directories


def test_an_incomplete_cifar_directory_is_set_aside_not_deleted(tmp_path, capsys):
    from lth.data import cifar
    from test_data import make_tarball, write_cifar_dir

    write_cifar_dir(tmp_path / "src" / cifar.BATCHES_DIRNAME)
    data = tmp_path / "data"
    data.mkdir()
    make_tarball(data / cifar.TARBALL, tmp_path / "src" / cifar.BATCHES_DIRNAME)
    partial = data / cifar.BATCHES_DIRNAME
    partial.mkdir()
    (partial / "data_batch_1").write_bytes(b"half a file")
    (partial / "my_notes.txt").write_text("mine\n")
    cifar.extract_cifar_tarball(data / cifar.TARBALL)
    aside = list(data.glob(f"{cifar.BATCHES_DIRNAME}.incomplete-*"))
    assert len(aside) == 1 and (aside[0] / "my_notes.txt").read_text() == "mine\n"
    assert (partial / cifar.TEST_FILE).is_file()
    assert "was incomplete; moved it to" in capsys.readouterr().err


def test_downloads_follow_the_umask(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    from lth.data import download

    payload = b"dataset bytes"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    previous = os.umask(0o022)
    try:
        path = download.download("https://example.org/x.gz", tmp_path / "x.gz", hashlib.sha256(payload).hexdigest())
    finally:
        os.umask(previous)
    assert path.read_bytes() == payload and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unpacked_trial_directories_follow_the_umask(tmp_path):
    """A trial streamed back from a Ray worker without a shared filesystem: not mkdtemp's 0700."""
    from lth.backends.base import pack_dir, unpack_dir

    source = tmp_path / "source"
    (source / "masks").mkdir(parents=True)
    (source / "masks" / "round_00.pt").write_bytes(b"mask")
    previous = os.umask(0o022)
    try:
        unpack_dir(pack_dir(source), tmp_path / "study" / "trial_00")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "study" / "trial_00").stat().st_mode) == 0o755
    assert (tmp_path / "study" / "trial_00" / "masks" / "round_00.pt").read_bytes() == b"mask"
