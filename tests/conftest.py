"""Shared fixtures: the digits data set (loaded once), tiny ticket-search runs, an offline environment."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

# The models in these tests are tiny: one thread is faster than several, and it keeps the
# suite quick when the machine is shared (intra-op thread oversubscription slows torch 10x+).
torch.set_num_threads(1)

# The runs root (default run directories and the results index) of fixtures wider than one
# test; each test gets its own below. Never the repository's runs/.
os.environ["LTH_RUNS_ROOT"] = str(Path(tempfile.mkdtemp(prefix="lth-tests-")) / "runs")
# Studies run in the test's own process unless a test names a backend: ``auto`` would start a
# process pool for every 2-trial study on a multi-core machine (seconds each, and a monkeypatch
# would not reach its workers). The tests of ``auto`` itself pass it explicitly.
os.environ["LTH_BACKEND"] = "local"


# Environment variables that change a training's numbers (thread counts: a sum over 2 threads
# rounds differently from one over 1). No test may leave them changed: a module-scoped fixture
# set up after that test would train with them (``lth --threads`` reads ``$LTH_THREADS``) and
# differ in the last bits from what the tests' own subprocesses train.
os.environ.pop("LTH_THREADS", None)
NUMERIC_ENV = {
    name: os.environ.get(name) for name in ("LTH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
}


@pytest.fixture(autouse=True)
def _runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test's runs root (``$LTH_RUNS_ROOT``): ``tmp_path/runs``. After the test, the
    variables of :data:`NUMERIC_ENV` are as they were when the suite started, whatever it set."""
    monkeypatch.setenv("LTH_RUNS_ROOT", str(tmp_path / "runs"))
    yield
    if torch.get_num_threads() != 1:  # e.g. an in-process `lth --threads N`: the next test trains on 1
        torch.set_num_threads(1)
    for name, value in NUMERIC_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits as a DataBundle on the CPU (no download, instant)."""
    from lth.data import load_dataset

    return load_dataset("digits", device="cpu")


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """An empty directory to hold run directories."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


def _refuse_network(*args, **kwargs):
    raise urllib.error.URLError("network access is disabled in the tests")


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No dataset can be found anywhere and nothing can be downloaded.

    HOME and $LTH_DATA_DIR point at empty directories, the system dataset directory at a
    missing one, and ``urlopen`` fails at once. The working directory is a scratch directory
    so that a default ``runs/`` output never lands in the repository.
    """
    from lth.data import download

    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "lth-data"
    data.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LTH_DATA_DIR", str(data))
    monkeypatch.setattr(download, "SYSTEM_DIR", tmp_path / "no-system-datasets")
    monkeypatch.setattr(urllib.request, "urlopen", _refuse_network)
    monkeypatch.chdir(work)
    return tmp_path


# ------------------------------------------------------------------ ticket searches

SEARCH = dict(model="lenet-300-100", dataset="digits", iterations=60, eval_every=20, rounds=2, device="cpu")


def run_search(out: Path | None, plots: bool = False, **overrides):
    """A small ticket search on digits; plots are skipped unless asked for (they are slow)."""
    from lth import TicketConfig, find_ticket

    config = TicketConfig(**{**SEARCH, **overrides})
    with pytest.MonkeyPatch.context() as mp:
        if not plots:
            mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        return find_ticket(config, out=out, progress=False)


@pytest.fixture(scope="session")
def ticket_search():
    """``ticket_search(out, **config overrides)``: run a small search (see ``run_search``)."""
    return run_search


@pytest.fixture(scope="session")
def search_seed0(tmp_path_factory):
    """lenet-300-100 on digits, 60 iterations, 2 pruning rounds, seed 0, rewind to 0, with plots."""
    return run_search(tmp_path_factory.mktemp("search") / "seed0", plots=True, seed=0)


@pytest.fixture(scope="session")
def search_seed0_again(tmp_path_factory):
    """The very same search as ``search_seed0``, in another directory."""
    return run_search(tmp_path_factory.mktemp("search") / "seed0-again", seed=0)


@pytest.fixture(scope="session")
def search_seed1():
    """As ``search_seed0`` with seed 1, kept in memory only."""
    return run_search(None, seed=1)


@pytest.fixture(scope="session")
def search_rewind_fraction(tmp_path_factory):
    """Rewinding to 0.25 of the 60-iteration budget (= iteration 15)."""
    return run_search(tmp_path_factory.mktemp("search") / "rewind", rewind="0.25")


@pytest.fixture(scope="session")
def search_global(tmp_path_factory):
    """Global magnitude pruning at 20% per round."""
    return run_search(tmp_path_factory.mktemp("search") / "global", scope="global", prune_rate=0.2)


# ------------------------------------------------------------------ results to draw and report


@pytest.fixture(scope="session")
def result_dirs(tmp_path_factory) -> dict[str, Path]:
    """Small finished directories of every kind that ``lth plot`` and ``lth report`` draw, built once:
    ticket (2 rounds, reinit control), rewound (rewind 10it, seed 1), conv (conv-2, 1 round),
    study (robust, 2 trials of 1 round), sm_eval (supermask eval --from ticket), sm_train (20 iterations),
    stability (dense, k = 0 and 20 of 60 iterations)."""
    from lth.cli import main
    from lth.config import make_config
    from lth.experiments.study import robust_experiment, run_study
    from lth.supermasks.train import run_supermask_training

    root = tmp_path_factory.mktemp("results")
    dirs = {name: root / name for name in ("ticket", "rewound", "conv", "study", "sm_eval", "sm_train", "stability")}
    run_search(dirs["ticket"], controls=["reinit"])
    run_search(dirs["rewound"], controls=["reinit"], rewind="10it", seed=1)
    run_search(dirs["conv"], model="conv-2", rounds=1, iterations=20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lth.experiments.ticket_search.plot_run", lambda run: [])
        config = make_config({**SEARCH, "rounds": 1, "iterations": 40})
        run_study("robust", [robust_experiment(config, 2)], dirs["study"], {"trials": 2}, name="tiny", progress=False)
    assert (
        main(
            [
                "supermask",
                "eval",
                "--from",
                str(dirs["ticket"]),
                "--criteria",
                "lf,random",
                "--keep",
                "1.0,0.5,0.2",
                "--weights",
                "init,signed_constant",
                "--out",
                str(dirs["sm_eval"]),
                "--quiet",
            ]
        )
        == 0
    )
    run_supermask_training(
        "lenet-300-100", "digits", iterations=20, eval_every=10, device="cpu", out=dirs["sm_train"], progress=False
    )
    import lth

    lth.stability(
        "lenet-300-100",
        "digits",
        rewind="0,20",
        iterations=60,
        eval_every=20,
        points=5,
        path_train_size=300,
        device="cpu",
        out=dirs["stability"],
        progress=False,
    )
    return dirs


@pytest.fixture(scope="session")
def executed_docs(request, tmp_path_factory) -> Path:
    """A copy of the documentation (``mkdocs.yml`` + ``docs/``) whose tutorial notebooks have been
    executed, outputs saved: shared by the tutorial tests and the site build, which run in one
    xdist worker (``@pytest.mark.xdist_group("docs")``; scripts/test.sh uses ``--dist loadgroup``),
    so the notebooks run once per test session."""
    from docs_build import executed_docs_copy

    _only_one_worker_builds_the_docs(request.config, tmp_path_factory)
    return executed_docs_copy(tmp_path_factory.mktemp("docs"))


def _only_one_worker_builds_the_docs(config: pytest.Config, tmp_path_factory) -> None:
    """Under ``--dist loadgroup``, fail if another xdist worker of this run executed the notebooks too:
    the grouping broke (pytest 9.2 with pytest-xdist 3.8 did), and every worker pays ~85 s for them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not getattr(config.option, "loadgroup", False):  # xdist sets it on workers under loadgroup
        return
    shared = tmp_path_factory.getbasetemp().parent  # one folder per worker under it
    (shared / f"docs-executed-by-{worker}").touch()
    others = sorted(p.name.removeprefix("docs-executed-by-") for p in shared.glob("docs-executed-by-*"))
    others.remove(worker)
    if others:
        pytest.fail(
            f"the docs were executed on xdist workers {worker} and {', '.join(others)}: `--dist loadgroup` did not "
            "keep the xdist_group('docs') tests together (see the pytest cap in constraints/ci.txt)",
            pytrace=False,
        )
