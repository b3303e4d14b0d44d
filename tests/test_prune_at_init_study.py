"""End-to-end tests of pruning at initialisation: ``lth prune-at-init`` studies (layout, exact
densities, ablations, summary, table, index, resume), ``find-ticket --prune-at-init``, ``lth mask``
reproducing a run's round-0 mask, conv nets with BatchNorm on CIFAR-shaped data, bad input and
``--compare`` / ``lth plot`` overlays. Every training is tiny (digits, 20-30 iterations)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import cli, one_line_error
from lth.cli import main
from lth.errors import LthError
from lth.masks import Mask
from lth.store import RunDir
from lth.store.study_dir import StudyDir

NO_PLOTS = "lth.experiments.ticket_search.plot_run"  # per-run figures: slow and not under test here
LENET_TOTAL = 64 * 300 + 300 * 100 + 100 * 10  # prunable weights of lenet-300-100 on 8x8 digits


def _no_plots(run):
    return []


def _run_main(args, root: Path) -> SimpleNamespace:
    """``lth ARGS`` in this process with ``$LTH_RUNS_ROOT`` = ``root`` (for module-scoped fixtures,
    which cannot use capsys/monkeypatch); per-run plots skipped."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTH_RUNS_ROOT", str(root))
        mp.setattr(NO_PLOTS, _no_plots)
        with redirect_stdout(stdout), redirect_stderr(stderr):
            rc = main([str(a) for a in args])
    return SimpleNamespace(rc=rc, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def _entries(study: StudyDir) -> list[tuple[dict, dict]]:
    """(experiment settings, run entry) of every run, in the study's order."""
    return [(e["settings"], r) for e in study.study()["experiments"] for r in e["runs"]]


def _mask(run: RunDir, round_index: int = 0) -> Mask:
    return Mask.load(run.mask_path(round_index))


def _weights(run: RunDir, tag: str = "init") -> dict[str, torch.Tensor]:
    return torch.load(run.weights_path(tag), map_location="cpu", weights_only=True)


def _counts(mask: Mask) -> dict[str, int]:
    return {name: int(m.sum()) for name, m in mask.items()}


def _same_mask(a: Mask, b: Mask) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def _find(study: StudyDir, method: str, keep: float, ablation: str, trial: int) -> RunDir:
    for settings, entry in _entries(study):
        if (settings["method"], settings["keep"], settings["ablation"], entry["trial"]) == (
            method,
            keep,
            ablation,
            trial,
        ):
            return study.run(entry["path"])
    raise AssertionError(f"no run {method} {keep} {ablation} {trial}")


# ---------------------------------------------------------------- 1. the study end to end

E2E_METHODS, E2E_KEEPS, E2E_ABLATIONS = ["synflow", "magnitude"], [0.1, 0.01], ["none", "shuffle"]
E2E_ARGS = [
    "prune-at-init",
    "lenet-300-100",
    "digits",
    "--method",
    "synflow,magnitude",
    "--keep",
    "0.1,0.01",
    "--ablation",
    "none,shuffle",
    "--trials",
    "2",
    "--iterations",
    "30",
    "--eval-every",
    "10",
]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("pai-e2e")
    out, root = base / "study", base / "runs"
    result = _run_main([*E2E_ARGS, "--out", out], root)
    result.out, result.root = out, root
    return result


def test_study_layout_and_every_run_exact(e2e):
    assert e2e.rc == 0, e2e.stderr
    assert "Traceback" not in e2e.stderr
    study = StudyDir(e2e.out)
    description = study.study()
    assert description["kind"] == "prune-at-init"
    assert description["spec"]["methods"] == E2E_METHODS
    assert description["spec"]["keeps"] == E2E_KEEPS
    assert description["spec"]["ablations"] == E2E_ABLATIONS
    assert description["spec"]["trials"] == 2 and description["spec"]["compare"] == []
    slugs = {
        f"{m}-keep{k:g}" + ("" if a == "none" else f"-{a}")
        for m in E2E_METHODS
        for k in E2E_KEEPS
        for a in E2E_ABLATIONS
    }
    assert len(slugs) == 8
    assert len(description["experiments"]) == 8
    assert {p.name for p in e2e.out.iterdir() if p.is_dir()} == slugs
    status = study.status()
    assert status["status"] == "complete" and status["runs_total"] == 16 and status["runs_complete"] == 16

    for experiment in description["experiments"]:
        s = experiment["settings"]
        slug = f"{s['method']}-keep{s['keep']:g}" + ("" if s["ablation"] == "none" else f"-{s['ablation']}")
        assert [r["path"] for r in experiment["runs"]] == [f"{slug}/trial_00", f"{slug}/trial_01"]
        for entry in experiment["runs"]:
            config = entry["config"]
            assert config["seed"] == entry["trial"]
            assert (config["prune_at_init"], config["init_keep"], config["init_ablation"]) == (
                s["method"],
                s["keep"],
                s["ablation"],
            )
            assert config["rounds"] == 0 and config["scope"] == "global" and config["iterations"] == 30
            run = study.run(entry["path"])
            assert run.status()["status"] == "complete"
            mask = _mask(run)
            total = mask.size()
            assert total == LENET_TOTAL
            kept = round(total * s["keep"])
            assert mask.kept() == kept
            rounds = run.rounds()
            assert len(rounds) == 1 and rounds[0]["round"] == 0
            assert rounds[0]["kept_weights"] == kept and rounds[0]["total_weights"] == total
            assert rounds[0]["weights_remaining"] == kept / total == s["keep"]
            assert rounds[0]["layers"] == mask.layer_density()
            at = run.prune_at_init()
            assert (at["method"], at["keep"], at["ablation"], at["scope"]) == (
                s["method"],
                s["keep"],
                s["ablation"],
                "global",
            )
            assert at["iterations"] == (100 if s["method"] == "synflow" else 1)
            assert len(at["kept_per_iteration"]) == at["iterations"]
            assert at["kept_per_iteration"][-1] == kept and at["kept"] == kept and at["total"] == total
            assert at["kept_per_iteration"] == sorted(at["kept_per_iteration"], reverse=True)
            assert at["layers"] == mask.layer_density()
            assert at["collapsed"] == [n for n, m in mask.items() if not bool(m.any())]
            assert at["batches"] == 0  # synflow and magnitude score without data
            final = _weights(run, "final_round_00")
            for name, m in mask.items():  # pruned weights stay zero through training
                assert not bool(final[name][~m].any()), name
            assert math.isfinite(rounds[0]["test_accuracy_at_early_stop"])


@pytest.mark.parametrize("method", E2E_METHODS)
@pytest.mark.parametrize("keep", E2E_KEEPS)
@pytest.mark.parametrize("trial", [0, 1])
def test_shuffle_keeps_per_layer_counts_and_weights_but_moves_the_mask(e2e, method, keep, trial):
    study = StudyDir(e2e.out)
    plain, shuffled = _find(study, method, keep, "none", trial), _find(study, method, keep, "shuffle", trial)
    a, b = _mask(plain), _mask(shuffled)
    assert _counts(a) == _counts(b)
    assert not _same_mask(a, b)
    # only the mask changes: the initial weights are the seed's
    wa, wb = _weights(plain), _weights(shuffled)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_seeds_differ_between_trials(e2e):
    study = StudyDir(e2e.out)
    w0, w1 = _weights(_find(study, "synflow", 0.1, "none", 0)), _weights(_find(study, "synflow", 0.1, "none", 1))
    assert not torch.equal(w0["fc1.weight"], w1["fc1.weight"])
    # magnitude and synflow of one seed start from the same weights
    wm = _weights(_find(study, "magnitude", 0.1, "none", 0))
    assert all(torch.equal(w0[k], wm[k]) for k in w0)


def test_summary_rows_per_method_line_and_keep(e2e):
    study = StudyDir(e2e.out)
    rows = json.loads((e2e.out / "summary.json").read_text())
    assert rows == study.summary()
    lines = {"none": "ticket", "shuffle": "ablation:shuffle"}
    seen = set()
    for method in E2E_METHODS:
        for ablation, line in lines.items():
            for level, keep in enumerate(E2E_KEEPS):
                mine = [r for r in rows if (r["experiment"], r["line"], r["round"]) == (method, line, level)]
                assert {r["metric"] for r in mine} == {
                    "test_accuracy_at_early_stop",
                    "final_test_accuracy",
                    "val_accuracy_at_early_stop",
                    "final_val_accuracy",
                    "early_stop_iteration",
                    "final_test_loss",
                }
                runs = [_find(study, method, keep, ablation, t).rounds()[0] for t in (0, 1)]
                for r in mine:
                    seen.add(id(r))
                    assert r["keep"] == keep and r["trials"] == 2
                    assert r["weights_remaining"] == pytest.approx(keep, rel=1e-12)
                    values = [run[r["metric"]] for run in runs]
                    assert r["min"] == min(values) and r["max"] == max(values)
                    assert r["mean"] == pytest.approx(sum(values) / 2, rel=1e-12, abs=1e-15)
    assert len(seen) == len(rows) == 2 * 2 * 2 * 6


def test_printed_table_lists_methods_ablations_and_keeps(e2e):
    study = StudyDir(e2e.out)
    text = e2e.stdout
    name = study.study()["name"]
    assert f"prune-at-init {name}: 16/16 runs complete (complete)" in text
    assert f"results and plots in {e2e.out}/" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method"))  # after the progress lines
    header = lines[start]
    for column in ("ablation", "keep", "weights left", "trials", "final test acc", "layer collapse"):
        assert column in header
    cells = {}
    for line in lines[start + 1 :]:
        tokens = line.split()
        if tokens and tokens[0] in E2E_METHODS:
            cells[(tokens[0], tokens[1], tokens[2])] = line
            assert tokens[4] == "2"  # trials
    assert set(cells) == {(m, a, f"{100 * k:g}%") for m in E2E_METHODS for a in E2E_ABLATIONS for k in E2E_KEEPS}
    by_key = {
        (r["experiment"], r["line"], r["round"]): r
        for r in study.summary()
        if r["metric"] == "test_accuracy_at_early_stop"
    }
    for (method, ablation, shown), line in cells.items():
        level = [f"{100 * k:g}%" for k in E2E_KEEPS].index(shown)
        row = by_key[(method, "ticket" if ablation == "none" else f"ablation:{ablation}", level)]
        assert f"{100 * row['mean']:.2f} ± " in line
        assert f"[{100 * row['min']:.2f}, {100 * row['max']:.2f}]" in line


def test_study_figure_show_json_and_index(e2e, capsys, monkeypatch):
    assert (e2e.out / "accuracy_vs_weights_remaining.png").stat().st_size > 0
    study = StudyDir(e2e.out)
    rc, out, err = cli(capsys, "show", e2e.out, "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["kind"] == "prune-at-init" and shown["name"] == study.study()["name"]
    assert len(shown["experiments"]) == 8
    assert all(r["status"] == "complete" and len(r["rounds"]) == 1 for e in shown["experiments"] for r in e["runs"])
    assert shown["summary"] == json.loads((e2e.out / "summary.json").read_text())

    rc, out, err = cli(capsys, "runs", "list", "--root", e2e.root, "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == 1  # the study, not its 16 trials
    row = rows[0]
    assert (e2e.root / row["path"]).resolve() == e2e.out.resolve()
    assert (row["kind"], row["status"], row["model"], row["dataset"]) == (
        "prune-at-init",
        "complete",
        "lenet-300-100",
        "digits",
    )
    assert row["metrics"]["runs_total"] == 16 and row["metrics"]["runs_complete"] == 16
    assert row["metrics"]["experiments"] == 8
    assert row["config"]["methods"] == E2E_METHODS and row["config"]["keeps"] == E2E_KEEPS
    sparsest = [
        r
        for r in study.summary()
        if r["metric"] == "test_accuracy_at_early_stop" and r["line"] == "ticket" and r["round"] == 1
    ]
    assert row["weights_remaining"] == pytest.approx(0.01, rel=1e-12)
    assert row["test_accuracy"] == max(r["mean"] for r in sparsest)


def test_report_has_a_row_per_method_line_and_keep(e2e, tmp_path, capsys):
    report = tmp_path / "report.md"
    rc, _, err = cli(capsys, "report", e2e.out, "--out", report)
    assert rc == 0, err
    text = report.read_text()
    assert "(prune-at-init study)" in text
    study = StudyDir(e2e.out)
    for r in study.summary():
        if r["metric"] != "test_accuracy_at_early_stop":
            continue
        row = (
            f"| {r['experiment']} | {r['line']} | keep {100 * r['keep']:g}% | {100 * r['weights_remaining']:.2f}% "
            f"| 2 | {100 * r['mean']:.2f} ± "
        )
        assert row in text, row
    assert (tmp_path / "report_files" / f"{e2e.out.name}-accuracy_vs_weights_remaining.png").is_file()


def test_layer_collapse_is_counted_per_cell(tmp_path, capsys, monkeypatch):
    """Keeping 25 of 50,200 weights by magnitude empties a layer in some runs: prune_at_init.json
    names it, a warning says so, and the table counts the runs that lost a layer."""
    monkeypatch.setattr(NO_PLOTS, _no_plots)
    out = tmp_path / "study"
    rc, text, err = cli(
        capsys,
        "prune-at-init",
        "lenet-300-100",
        "digits",
        "--method",
        "magnitude",
        "--keep",
        "0.0005",
        "--trials",
        "2",
        "--iterations",
        "10",
        "--eval-every",
        "10",
        "--out",
        out,
    )
    assert rc == 0, err
    study = StudyDir(out)
    collapsed = 0
    for _, entry in _entries(study):
        run = study.run(entry["path"])
        mask = _mask(run)
        assert mask.kept() == round(LENET_TOTAL * 0.0005) == 25
        empty = [n for n, m in mask.items() if not bool(m.any())]
        assert run.prune_at_init()["collapsed"] == empty
        if empty:
            collapsed += 1
            assert f"leaves no weight in {', '.join(empty)}: nothing flows through it (layer collapse" in err
    assert collapsed >= 1  # seeds 0 and 1: trial 1 loses fc2
    from lth.experiments.init_pruning_study import collapsed_runs

    assert collapsed_runs(study) == {("magnitude", "none", 0.0005): collapsed}
    row = next(line for line in text.splitlines() if line.split()[:2] == ["magnitude", "none"])
    assert row.split()[-1] == f"{collapsed}/2"


def test_show_prints_the_prune_at_init_table(e2e, capsys):
    rc, out, err = cli(capsys, "show", e2e.out)
    assert rc == 0, err
    header = next(line for line in out.splitlines() if "weights left" in line)
    assert header.split()[:3] == ["method", "ablation", "keep"]
    assert "layer collapse" in header


def test_layerwise_iterative_study(tmp_path, capsys, monkeypatch):
    """--scope layerwise keeps round(size * keep) in every layer; --prune-iterations 4 follows the
    exponential schedule keep^(i/4); --json prints the study as `lth show --json` does."""
    monkeypatch.setattr(NO_PLOTS, _no_plots)
    out = tmp_path / "study"
    rc, text, err = cli(
        capsys,
        "prune-at-init",
        "lenet-300-100",
        "digits",
        "--method",
        "random,magnitude",
        "--keep",
        "0.05",
        "--scope",
        "layerwise",
        "--prune-iterations",
        "4",
        "--iterations",
        "10",
        "--eval-every",
        "10",
        "--out",
        out,
        "--json",
    )
    assert rc == 0, err
    shown = json.loads(text)
    assert shown["kind"] == "prune-at-init" and len(shown["experiments"]) == 2
    study = StudyDir(out)
    assert study.study()["spec"]["base"]["scope"] == "layerwise"
    assert study.study()["spec"]["base"]["prune_iterations"] == 4
    sizes = {"fc1.weight": 64 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    schedule = [sum(round(n * 0.05 ** (i / 4)) for n in sizes.values()) for i in (1, 2, 3)]
    schedule.append(sum(round(n * 0.05) for n in sizes.values()))
    for settings, entry in _entries(study):
        run = study.run(entry["path"])
        mask = _mask(run)
        assert _counts(mask) == {name: round(n * 0.05) for name, n in sizes.items()}
        at = run.prune_at_init()
        assert (at["scope"], at["iterations"], at["method"]) == ("layerwise", 4, settings["method"])
        assert at["kept_per_iteration"] == schedule
        assert run.rounds()[0]["weights_remaining"] == schedule[-1] / LENET_TOTAL


# ---------------------------------------------------------------- 2. resume; 3. reinit and invert

RESUME_ARGS = [
    "prune-at-init",
    "lenet-300-100",
    "digits",
    "--method",
    "magnitude,snip",
    "--keep",
    "0.1,0.01",
    "--ablation",
    "none,reinit,invert",
    "--trials",
    "2",
    "--iterations",
    "20",
    "--eval-every",
    "10",
    "--score-batches",
    "2",
    "--quiet",
]
RESUME_RUNS = 2 * 2 * 3 * 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The resume test's study, never interrupted."""
    base = tmp_path_factory.mktemp("pai-reference")
    result = _run_main([*RESUME_ARGS, "--out", base / "study"], base / "runs")
    assert result.rc == 0, result.stderr
    return base / "study"


def _files(run: RunDir) -> dict[str, bytes]:
    return {
        str(p.relative_to(run.path)): p.read_bytes()
        for p in sorted(run.path.rglob("*"))
        if p.is_file() and p.name not in (".lth-lock", "trial.log")
    }


def _without_seconds(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


def test_interrupted_study_resumes_to_the_uninterrupted_result(tmp_path, capsys, monkeypatch, reference):
    import lth.experiments.ticket_search as ts

    monkeypatch.setattr(NO_PLOTS, _no_plots)
    real = ts._Search.train_ticket
    calls: list[str] = []

    def train_ticket(self):
        calls.append(self.config.name)
        if len(calls) == 7:  # Ctrl-C as the 7th run starts training, after its checkpoint
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(ts._Search, "train_ticket", train_ticket)
    out = tmp_path / "study"
    rc, _, err = cli(capsys, *RESUME_ARGS, "--out", out)
    assert rc == 130 and "lth: interrupted" in err
    study = StudyDir(out)
    entries = _entries(study)
    assert len(entries) == RESUME_RUNS
    assert study.status()["status"] == "running" and study.status()["runs_complete"] == 6
    finished = [study.run(e["path"]) for _, e in entries[:6]]
    assert all(r.status()["status"] == "complete" for r in finished)
    cut = study.run(entries[6][1]["path"])
    assert entries[6][0] == {"method": "magnitude", "keep": 0.01, "ablation": "reinit"}
    assert cut.status()["status"] == "running" and cut.checkpoint_path.is_file()
    assert all(not study.run(e["path"]).path.exists() for _, e in entries[7:])
    before = {r.path: _files(r) for r in finished}
    assert not (out / "summary.json").exists()

    monkeypatch.setattr(ts._Search, "train_ticket", real)
    rc, _, err = cli(capsys, "resume", out, "--quiet")
    assert rc == 0, err
    assert study.status()["status"] == "complete" and study.status()["runs_complete"] == RESUME_RUNS
    for run in finished:  # the runs that had finished are left as they were, byte for byte
        assert _files(run) == before[run.path], run.path
    assert not cut.checkpoint_path.exists() and cut.status()["status"] == "complete"

    ref = StudyDir(reference)
    assert study.summary() == ref.summary()  # every statistic, exactly (CPU training is deterministic)
    assert json.loads((out / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())
    for _, entry in entries:
        mine, theirs = study.run(entry["path"]), ref.run(entry["path"])
        assert _without_seconds(mine.rounds()) == _without_seconds(theirs.rounds()), entry["path"]
        assert _same_mask(_mask(mine), _mask(theirs))
        assert mine.prune_at_init() == theirs.prune_at_init()
        a, b = _weights(mine), _weights(theirs)
        assert all(torch.equal(a[k], b[k]) for k in a)

    rc, _, err = cli(capsys, "resume", out)
    assert "already complete" in one_line_error(rc, err)


def test_data_methods_score_on_the_given_batches_only(reference):
    study = StudyDir(reference)
    for settings, entry in _entries(study):
        run = study.run(entry["path"])
        if settings["method"] == "snip":
            assert entry["config"]["score_batches"] == 2 and run.prune_at_init()["batches"] == 2
        else:  # --score-batches is dropped from the data-free method's configs
            assert entry["config"]["score_batches"] is None and run.prune_at_init()["batches"] == 0


@pytest.mark.parametrize("method", ["magnitude", "snip"])
@pytest.mark.parametrize("keep", [0.1, 0.01])
def test_reinit_redraws_only_the_kept_weights(reference, method, keep):
    from lth.experiments.branch_kinds import level_seed
    from lth.models import build_model

    study = StudyDir(reference)
    for trial in (0, 1):
        plain, reinit = _find(study, method, keep, "none", trial), _find(study, method, keep, "reinit", trial)
        mask = _mask(plain)
        assert _same_mask(mask, _mask(reinit))
        a, b = _weights(plain), _weights(reinit)
        assert a.keys() == b.keys()
        fresh = build_model(
            "lenet-300-100", (1, 8, 8), 10, seed=level_seed(trial, "prune-at-init-reinit", 0)
        ).state_dict()
        for name in a:
            if name not in mask:  # biases: untouched
                assert torch.equal(a[name], b[name]), name
                continue
            m = mask[name]
            assert torch.equal(a[name][~m], b[name][~m]), name  # pruned entries untouched
            assert bool((a[name][m] != b[name][m]).all()), name  # every kept entry redrawn...
            assert torch.equal(b[name][m], fresh[name][m]), name  # ...from the initialiser under its own seed


@pytest.mark.parametrize("method", ["magnitude", "snip"])
@pytest.mark.parametrize("keep", [0.1, 0.01])
def test_invert_keeps_per_layer_counts(reference, method, keep):
    study = StudyDir(reference)
    for trial in (0, 1):
        plain, inverted = _find(study, method, keep, "none", trial), _find(study, method, keep, "invert", trial)
        a, b = _mask(plain), _mask(inverted)
        assert _counts(a) == _counts(b)
        assert b.kept() == round(LENET_TOTAL * keep)
        assert not _same_mask(a, b)
        w = _weights(inverted)
        assert all(torch.equal(w[k], v) for k, v in _weights(plain).items())  # the weights are not changed
        if method == "magnitude":
            # the method keeps the largest |w| over all layers; its inversion the smallest in each layer
            kept = torch.cat([w[n][a[n]].abs() for n in a])
            dropped = torch.cat([w[n][~a[n]].abs() for n in a])
            assert kept.min() >= dropped.max()
            for name, m in b.items():
                assert w[name][m].abs().max() <= w[name][~m].abs().min(), name


# ---------------------------------------------------------------- 4./5. find-ticket --prune-at-init; lth mask

FT_SEED = 3


@pytest.fixture(scope="module")
def synflow_search(tmp_path_factory) -> Path:
    """find-ticket --prune-at-init synflow --init-keep 0.05 --scope global, then one IMP round."""
    base = tmp_path_factory.mktemp("pai-search")
    out = base / "run"
    result = _run_main(
        [
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--rounds",
            "1",
            "--iterations",
            "20",
            "--eval-every",
            "10",
            "--prune-at-init",
            "synflow",
            "--init-keep",
            "0.05",
            "--scope",
            "global",
            "--seed",
            FT_SEED,
            "--out",
            out,
            "--quiet",
        ],
        base / "runs",
    )
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory) -> Path:
    """A plain IMP search (dense round 0, one pruning round) to overlay."""
    base = tmp_path_factory.mktemp("pai-imp")
    out = base / "imp"
    result = _run_main(
        [
            "find-ticket",
            "lenet-300-100",
            "digits",
            "--rounds",
            "1",
            "--iterations",
            "20",
            "--eval-every",
            "10",
            "--out",
            out,
            "--quiet",
        ],
        base / "runs",
    )
    assert result.rc == 0, result.stderr
    return out


def test_find_ticket_prune_at_init_then_imp(synflow_search):
    run = RunDir.open(synflow_search)
    assert run.status()["status"] == "complete"
    rounds = run.rounds()
    assert [r["round"] for r in rounds] == [0, 1]
    m0, m1 = _mask(run, 0), _mask(run, 1)
    total = m0.size()
    assert total == LENET_TOTAL
    kept0 = round(total * 0.05)
    assert m0.kept() == kept0 == rounds[0]["kept_weights"]
    assert rounds[0]["weights_remaining"] == kept0 / total == 0.05
    # round 1 prunes further (global, 20% of what is left), among the weights round 0 kept
    config = run.config()
    assert config["prune_rate"] == 0.2 and config["scope"] == "global"
    kept1 = kept0 - round(0.2 * kept0)
    assert m1.kept() == kept1 == rounds[1]["kept_weights"]
    assert rounds[1]["weights_remaining"] == kept1 / total
    assert all(not bool((m1[n] & ~m0[n]).any()) for n in m0)
    at = run.prune_at_init()
    assert (at["method"], at["keep"], at["iterations"], at["ablation"]) == ("synflow", 0.05, 100, "none")
    assert at["layers"] == m0.layer_density()
    init = _weights(run)
    assert not any(bool((init[n] == 0).any()) for n in m0)  # init.pt holds the unpruned w_0


@pytest.mark.parametrize("criterion", ["synflow", "grasp"])
def test_find_ticket_one_shot_with_model_based_criteria(tmp_path, capsys, monkeypatch, criterion):
    monkeypatch.setattr(NO_PLOTS, _no_plots)
    out = tmp_path / "run"
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--one-shot",
        "--keep",
        "0.2",
        "--criterion",
        criterion,
        "--iterations",
        "20",
        "--eval-every",
        "10",
        "--out",
        out,
        "--quiet",
    )
    assert rc == 0, err
    run = RunDir.open(out)
    rounds = run.rounds()
    assert [r["weights_remaining"] for r in rounds] == [1.0, round(LENET_TOTAL * 0.2) / LENET_TOTAL]
    assert run.config()["scope"] == "layerwise"  # lenet's recipe: every layer keeps 20%
    assert rounds[1]["layers"] == {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc3.weight": 0.2}
    assert _mask(run, 1).kept() == rounds[1]["kept_weights"]
    assert math.isfinite(rounds[1]["test_accuracy_at_early_stop"])


def test_lth_mask_reproduces_the_runs_round0_mask(synflow_search, tmp_path, capsys):
    run = RunDir.open(synflow_search)
    init = run.weights_path("init")
    assert init == synflow_search / "weights" / "init.pt" and init.is_file()
    out = tmp_path / "m.pt"
    rc, text, err = cli(
        capsys,
        "mask",
        "--init",
        init,
        "--criterion",
        "synflow",
        "--keep",
        "0.05",
        "--scope",
        "global",
        "--model",
        "lenet-300-100",
        "--dataset",
        "digits",
        "--seed",
        FT_SEED,
        "--out",
        out,
        "--json",
    )
    assert rc == 0, err
    mine, theirs = Mask.load(out), _mask(run, 0)
    assert list(mine) == list(theirs) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name
    shown = json.loads(text)
    assert shown["kept"] == round(LENET_TOTAL * 0.05) and shown["total"] == LENET_TOTAL
    assert shown["layers"] == theirs.layer_density()
    # other --keep and --prune-iterations: the exact count of the exponential schedule's last step
    rc, _, err = cli(
        capsys,
        "mask",
        "--init",
        init,
        "--criterion",
        "synflow",
        "--keep",
        "0.04",
        "--scope",
        "global",
        "--model",
        "lenet-300-100",
        "--dataset",
        "digits",
        "--seed",
        FT_SEED,
        "--prune-iterations",
        "5",
        "--out",
        tmp_path / "m2.pt",
        "--quiet",
    )
    assert rc == 0, err
    assert Mask.load(tmp_path / "m2.pt").kept() == round(LENET_TOTAL * 0.04)


@pytest.mark.parametrize("method, scope", [("snip", "global"), ("grasp", "layerwise")])
def test_lth_mask_reproduces_data_methods(tmp_path, capsys, monkeypatch, method, scope):
    monkeypatch.setattr(NO_PLOTS, _no_plots)
    out = tmp_path / "run"
    rc, _, err = cli(
        capsys,
        "find-ticket",
        "lenet-300-100",
        "digits",
        "--rounds",
        "0",
        "--iterations",
        "10",
        "--eval-every",
        "10",
        "--prune-at-init",
        method,
        "--init-keep",
        "0.05",
        "--scope",
        scope,
        "--seed",
        5,
        "--score-batches",
        3,
        "--out",
        out,
        "--quiet",
    )
    assert rc == 0, err
    run = RunDir.open(out)
    assert run.prune_at_init()["batches"] == 3
    rc, _, err = cli(
        capsys,
        "mask",
        "--init",
        run.weights_path("init"),
        "--criterion",
        method,
        "--keep",
        "0.05",
        "--scope",
        scope,
        "--model",
        "lenet-300-100",
        "--dataset",
        "digits",
        "--seed",
        5,
        "--score-batches",
        3,
        "--out",
        tmp_path / "m.pt",
        "--quiet",
    )
    assert rc == 0, err
    assert _same_mask(Mask.load(tmp_path / "m.pt"), _mask(run))
    if scope == "layerwise":
        assert _counts(_mask(run)) == {
            "fc1.weight": round(19200 * 0.05),
            "fc2.weight": round(30000 * 0.05),
            "fc3.weight": round(1000 * 0.05),
        }


# ---------------------------------------------------------------- 6. conv nets with BatchNorm on CIFAR-shaped data

CIFAR_ROWS = 8


def _write_cifar(directory: Path) -> None:
    """Five training batches and a test batch of CIFAR_ROWS random images each, in the python
    pickle format of CIFAR-10 (protocol 2, bytes keys)."""
    from lth.data import cifar

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        data = rng.integers(0, 256, (CIFAR_ROWS, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, CIFAR_ROWS)]
        with (directory / name).open("wb") as handle:
            pickle.dump({b"batch_label": b"tiny", b"labels": labels, b"data": data}, handle, protocol=2)


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch) -> Path:
    """A CIFAR-10 directory of 40 training (8 held out for validation) and 8 test images."""
    from lth.data import DATASETS, cifar

    root = tmp_path / "cifar"
    _write_cifar(root / cifar.BATCHES_DIRNAME)
    monkeypatch.setattr(cifar, "ROWS_PER_BATCH", CIFAR_ROWS)
    # the registry holds out 5,000 validation images, more than there are here
    monkeypatch.setitem(DATASETS._entries, "cifar10", dataclasses.replace(DATASETS.get("cifar10"), val_size=8))
    return root


@pytest.mark.parametrize(
    "model, method, extra",
    [
        ("conv-2", "snip", ["--score-batches", "2"]),
        ("resnet-20", "synflow", ["--prune-iterations", "3"]),
        ("resnet-20", "grasp", ["--score-batches", "2"]),
    ],
)
def test_conv_nets_prune_at_init_and_train_on_cifar(tiny_cifar, tmp_path, capsys, monkeypatch, model, method, extra):
    from lth.models import build_model

    monkeypatch.setattr(NO_PLOTS, _no_plots)
    out = tmp_path / "run"
    rc, _, err = cli(
        capsys,
        "find-ticket",
        model,
        "cifar10",
        "--data-dir",
        tiny_cifar,
        "--prune-at-init",
        method,
        "--init-keep",
        "0.1",
        "--rounds",
        "0",
        "--iterations",
        "4",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--out",
        out,
        "--quiet",
        *extra,
    )
    assert rc == 0, err
    assert "Traceback" not in err
    run = RunDir.open(out)
    assert run.status()["status"] == "complete"
    mask = _mask(run)
    total = mask.size()
    kept = round(total * 0.1)
    rounds = run.rounds()
    assert len(rounds) == 1
    assert mask.kept() == kept == rounds[0]["kept_weights"] and rounds[0]["total_weights"] == total
    assert rounds[0]["weights_remaining"] == kept / total
    at = run.prune_at_init()
    assert at["method"] == method and at["iterations"] == (3 if method == "synflow" else 1)
    assert at["batches"] == (0 if method == "synflow" else 2)
    assert at["kept"] == kept
    for key in ("test_accuracy_at_early_stop", "final_test_accuracy", "final_test_loss"):
        assert math.isfinite(rounds[0][key]), key
    assert 0.0 <= rounds[0]["test_accuracy_at_early_stop"] <= 1.0

    # scoring works on a copy: w_0, BatchNorm affine parameters and running statistics included,
    # are those of a freshly built model of the seed
    init = _weights(run)
    fresh = build_model(model, (3, 32, 32), 10, seed=0).state_dict()
    assert init.keys() == fresh.keys()
    for name in fresh:
        assert torch.equal(init[name], fresh[name]), name
    if model == "resnet-20":
        stats = [n for n in fresh if n.endswith(("running_mean", "running_var"))]
        assert len(stats) > 10
        final = _weights(run, "final_round_00")
        assert any(not torch.equal(final[n], init[n]) for n in stats)  # training did update them
    final = _weights(run, "final_round_00")
    for name, m in mask.items():
        assert not bool(final[name][~m].any()), name


# ---------------------------------------------------------------- 7. bad input: one line, exit 2, nothing written

BAD_STUDY = [
    (["--keep", "0"], "--keep 0 is outside (0, 1]"),
    (["--keep", "1.5"], "--keep 1.5 is outside (0, 1]"),
    (["--keep", "abc"], "--keep 'abc' is not a number"),
    (["--method", "snap"], "unknown pruning-at-init method 'snap'"),
    (["--ablation", "flip"], "unknown ablation 'flip'"),
    (["--prune-iterations", "0"], "prune_iterations"),
    (["--ignore-layers", "fc1,fc2,fc3"], "no prunable layers"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--score-batches", "2", "--method", "synflow"], "--score-batches applies to snip and grasp"),
    (["--method", "magnitude", "--keep", "0.1,0.01", "--max-runs", "1"], "above the limit of 1 runs"),
]


@pytest.mark.parametrize("flags, message", BAD_STUDY, ids=[" ".join(f) for f, _ in BAD_STUDY])
@pytest.mark.parametrize("with_out", [True, False])
def test_bad_study_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, message, with_out):
    out = tmp_path / "study"
    root = tmp_path / "runs"
    args = ["prune-at-init", "lenet-300-100", "digits", "--iterations", "20", *flags]
    rc, stdout, err = cli(capsys, *args, *(["--out", out] if with_out else []))
    assert message in one_line_error(rc, err)
    assert stdout == ""
    assert not out.exists()
    assert (sorted(root.iterdir()) if root.exists() else []) == []


def test_resume_of_another_study_is_refused_untouched(e2e, tmp_path, capsys):
    before = {p: p.read_bytes() for p in sorted(e2e.out.rglob("*")) if p.is_file() and p.name != ".lth-lock"}
    args = [*E2E_ARGS, "--out", e2e.out, "--resume"]
    args[args.index("0.1,0.01")] = "0.2,0.01"
    rc, _, err = cli(capsys, *args)
    assert "holds a different study" in one_line_error(rc, err)
    after = {p: p.read_bytes() for p in sorted(e2e.out.rglob("*")) if p.is_file() and p.name != ".lth-lock"}
    assert after == before
    rc, _, err = cli(capsys, *E2E_ARGS, "--resume")
    assert "--resume needs --out DIR" in one_line_error(rc, err)
    assert not (tmp_path / "runs").exists()


def test_compare_must_be_an_lth_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(NO_PLOTS, _no_plots)
    bogus = tmp_path / "not-a-run"
    bogus.mkdir()
    (bogus / "notes.txt").write_text("hello")
    root = tmp_path / "runs"
    for out_flags in (["--out", tmp_path / "study"], []):
        rc, _, err = cli(
            capsys,
            "prune-at-init",
            "lenet-300-100",
            "digits",
            "--method",
            "magnitude",
            "--keep",
            "0.1",
            "--iterations",
            "20",
            "--compare",
            bogus,
            *out_flags,
        )
        assert "is not an lth run or study directory" in one_line_error(rc, err)
        assert not (tmp_path / "study").exists()
        assert (sorted(root.iterdir()) if root.exists() else []) == []
    assert sorted(p.name for p in bogus.iterdir()) == ["notes.txt"]


MASK_BAD = [
    (["--criterion", "snip", "--keep", "0.1"], "give --model NAME and --dataset NAME"),
    (["--criterion", "synflow", "--keep", "0", "--model", "lenet-300-100", "--dataset", "digits"], "keep"),
    (
        [
            "--criterion",
            "synflow",
            "--keep",
            "0.1",
            "--prune-iterations",
            "0",
            "--model",
            "lenet-300-100",
            "--dataset",
            "digits",
        ],
        "--prune-iterations must be a whole number >= 1",
    ),
    (
        [
            "--criterion",
            "snip",
            "--keep",
            "0.1",
            "--score-batches",
            "0",
            "--model",
            "lenet-300-100",
            "--dataset",
            "digits",
        ],
        "--score-batches must be a whole number >= 1",
    ),
]


@pytest.mark.parametrize("flags, message", MASK_BAD, ids=[" ".join(f) for f, _ in MASK_BAD])
def test_bad_mask_input(synflow_search, tmp_path, capsys, flags, message):
    out = tmp_path / "m.pt"
    rc, _, err = cli(capsys, "mask", "--init", RunDir(synflow_search).weights_path("init"), *flags, "--out", out)
    assert message in one_line_error(rc, err)
    assert not out.exists()


def test_api_data_method_without_batches():
    from lth.init_pruning import prune_at_init
    from lth.models import build_model

    model = build_model("lenet-300-100", (1, 8, 8), 10, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("snip", "grasp"):
        with pytest.raises(LthError, match=f"method '{method}' scores with training data and none was given"):
            prune_at_init(model, method, 0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    found = prune_at_init(model, "magnitude", 0.1)  # a data-free method needs none
    assert found.mask.kept() == round(LENET_TOTAL * 0.1)


FIND_TICKET_BAD = [
    (["--init-keep", "0.1"], "--init-keep applies to pruning at initialisation; add --prune-at-init METHOD"),
    (["--prune-at-init", "synflow"], "needs the fraction to keep (--init-keep F)"),
    (["--init-ablation", "shuffle"], "--init-ablation applies to pruning at initialisation"),
    (["--prune-at-init", "synflow", "--init-keep", "0.1", "--ignore-layers", "fc1,fc2,fc3"], "no prunable layers"),
]


@pytest.mark.parametrize("flags, message", FIND_TICKET_BAD, ids=[" ".join(f) for f, _ in FIND_TICKET_BAD])
def test_bad_find_ticket_prune_at_init_options(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "find-ticket", "lenet-300-100", "digits", "--iterations", "20", "--out", out, *flags)
    assert message in one_line_error(rc, err)
    assert not out.exists()
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 8. --compare and lth plot overlays


def test_plot_overlays_a_study_and_an_imp_run(e2e, imp_run, tmp_path, capsys):
    from lth.plots.accuracy import accuracy_figure
    from lth.plots.common import open_sources

    figures = tmp_path / "figs"
    rc, out, err = cli(capsys, "plot", e2e.out, imp_run, "--kind", "accuracy", "--out", figures, "--format", "png")
    assert rc == 0, err
    png = figures / "accuracy_vs_weights_remaining.png"
    assert png.stat().st_size > 0 and str(png) in out
    figure = accuracy_figure(open_sources([str(e2e.out), str(imp_run)]))
    lines = {line.get_label(): list(line.get_xdata()) for ax in figure.axes for line in ax.get_lines()}
    for method in E2E_METHODS:
        assert lines[f"{e2e.out.name}: {method} (mean of 2)"] == pytest.approx(E2E_KEEPS)
        assert lines[f"{e2e.out.name}: {method}: shuffle ablation (mean of 2)"] == pytest.approx(E2E_KEEPS)
    imp_rounds = RunDir(imp_run).rounds()
    assert lines[imp_run.name] == [r["weights_remaining"] for r in imp_rounds]


def test_compare_is_recorded_absolute_and_drawn(imp_run, tmp_path, capsys, monkeypatch):
    from lth.experiments.init_pruning_study import compare_sources
    from lth.plots.study import study_figure

    monkeypatch.setattr(NO_PLOTS, _no_plots)
    monkeypatch.chdir(imp_run.parent)
    out = tmp_path / "study"
    rc, _, err = cli(
        capsys,
        "prune-at-init",
        "lenet-300-100",
        "digits",
        "--method",
        "magnitude",
        "--keep",
        "0.1",
        "--iterations",
        "20",
        "--eval-every",
        "10",
        "--compare",
        imp_run.name,
        "--out",
        out,
        "--quiet",
    )
    assert rc == 0, err
    study = StudyDir(out)
    recorded = yaml.safe_load((out / "study.yaml").read_text())["spec"]["compare"]
    assert recorded == [str(imp_run.resolve())] == compare_sources(study)
    assert Path(recorded[0]).is_absolute()
    assert (out / "accuracy_vs_weights_remaining.png").is_file()
    labels = {line.get_label() for ax in study_figure(study).axes for line in ax.get_lines()}
    assert imp_run.name in labels and f"{out.name} (mean of 1)" in labels  # one method: the study's name


def test_rounds_in_a_config_file_are_refused(tmp_path, capsys):
    """A --config file's rounds would be dropped (each run trains once): refused in one line, nothing written."""
    config = tmp_path / "c.yaml"
    config.write_text("rounds: 3\niterations: 10\n")
    out = tmp_path / "study"
    rc, _, err = cli(capsys, "prune-at-init", "lenet-300-100", "digits", "--config", str(config), "--out", str(out))
    assert rc == 2 and "rounds (3) is not an option of a pruning-at-init study" in one_line_error(rc, err)
    assert not out.exists()
