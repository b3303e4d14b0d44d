"""The tutorial notebooks (docs/tutorials/*.ipynb): stored clean, and executed (once per test
session, by the ``executed_docs`` fixture) without errors, with their figures and the results
they describe."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.xdist_group("docs")

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "docs" / "tutorials"
NOTEBOOKS = [
    "01-first-ticket.ipynb",
    "02-criteria-and-actions.ipynb",
    "03-supermasks.ipynb",
    "04-your-own-model.ipynb",
]
PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ helpers


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    """The one code cell tagged ``tag``."""
    cells = [cell for cell in code_cells(nb) if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def text(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed or returned as plain text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def images(nb: nbformat.NotebookNode) -> list[bytes]:
    """The PNG images of every output, decoded."""
    return [
        base64.b64decode(output.data["image/png"])
        for cell in code_cells(nb)
        for output in cell.outputs
        if output.output_type in ("execute_result", "display_data") and "image/png" in output.data
    ]


def numbers(line: str) -> list[float]:
    """The numbers of a line of a printed table (NaN included)."""
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?|NaN", line.replace(",", ""))]


def scratch_runs(executed_docs: Path, name: str) -> Path:
    """The runs root the executed notebook ``name`` wrote into (see tests/docs_build.py)."""
    return executed_docs / "scratch" / Path(name).stem / "runs"


# ------------------------------------------------------------------ stored notebooks


def test_the_nav_lists_every_tutorial():
    """mkdocs.yml names exactly the notebooks of docs/tutorials, and these tests check them all."""
    listed = re.findall(r"tutorials/([\w.-]+\.ipynb)", (REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert listed == NOTEBOOKS
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_is_clean_and_valid(name):
    """Stored without outputs or execution counts, valid nbformat, a Python kernel, a title first."""
    nb = read(TUTORIALS / name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["language"] == "python"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert len(code_cells(nb)) >= 4
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {index} has stored outputs"
            assert cell.execution_count is None, f"{name}: cell {index} has an execution count"
        assert cell.source.strip(), f"{name}: cell {index} is empty"
    assert len({cell.id for cell in nb.cells}) == len(nb.cells)


# ------------------------------------------------------------------ executed notebooks


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_executed_notebook(executed_docs, name):
    """Every cell ran, none failed or wrote to stderr (no warnings, no progress bars), at least one
    figure is a real PNG, and the notebook's own results are there (:data:`CHECKS`)."""
    nb = read(executed_docs / "docs" / "tutorials" / name)
    cells = code_cells(nb)
    assert cells
    for index, cell in enumerate(cells):
        assert cell.execution_count is not None, f"{name}: code cell {index} did not run"
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}: code cell {index}: {output.get('ename')}"
            if output.output_type == "stream":
                assert output.name == "stdout", f"{name}: code cell {index} wrote to stderr:\n{output.text}"
                assert "it/s" not in output.text and "s/it" not in output.text, f"{name}: a progress bar"
    pngs = images(nb)
    assert pngs, f"{name}: no figure"
    for png in pngs:
        assert png.startswith(PNG) and len(png) > 5_000
    CHECKS[name](nb, scratch_runs(executed_docs, name))


def check_first_ticket(nb: nbformat.NotebookNode, runs: Path) -> None:
    """5 rounds (dense + 4 at 50% each) of the ticket beside its reinit control (none at round 0),
    as printed and as stored; the mask printed is the stored one; three figures."""
    import torch

    from lth import Mask

    lines = text(tagged(nb, "results-table")).splitlines()
    assert ["weights remaining %", "ticket %", "reinit control %"] == re.findall(
        r"weights remaining %|ticket %|reinit control %", lines[0]
    )
    rows = [numbers(line) for line in lines if re.match(r"\d+\s", line)]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    assert [r[1] for r in rows] == pytest.approx([100, 50, 25, 12.5, 6.25], abs=0.01)
    assert all(10 < r[2] <= 100 for r in rows)  # the ticket's test accuracy, in %
    assert rows[0][3] != rows[0][3]  # NaN: no control for the dense round
    assert all(10 < r[3] <= 100 for r in rows[1:])

    run = runs / "first-ticket"
    stored = json.loads((run / "rounds.json").read_text())
    stored = stored["rounds"] if isinstance(stored, dict) else stored
    assert [100 * r["test_accuracy_at_early_stop"] for r in stored] == pytest.approx([r[2] for r in rows], abs=0.006)
    control = json.loads((run / "controls" / "reinit" / "rounds.json").read_text())
    control = control["rounds"] if isinstance(control, dict) else control
    assert [r["round"] for r in control] == [1, 2, 3, 4]

    printed = re.search(r"kept ([\d,]+) of ([\d,]+) weights", text(tagged(nb, "mask")))
    assert printed is not None
    mask = Mask.load(run / "masks" / "round_04.pt")
    assert (mask.kept(), mask.size()) == tuple(int(v.replace(",", "")) for v in printed.groups())
    assert torch.equal(mask["fc1.weight"], mask["fc1.weight"].bool())
    assert len(images(nb)) >= 3  # accuracy, learning curves, first layer

    last = nb.cells[-1].source
    assert "lth robust lenet-300-100 fashion-mnist" in last and "--controls reinit,random-prune" in last
    # linked relative to the notebook (right in Jupyter and on GitHub); the site's hook
    # docs/_hooks/notebook_links.py adds the ../ of its directory URL (test_docs_site loads it)
    figure = re.search(r"\]\((\.\./figures/[\w.-]+\.png)\)", last)
    assert figure is not None and (TUTORIALS / figure.group(1)).resolve().is_file()


def check_criteria_and_actions(nb: nbformat.NotebookNode, runs: Path) -> None:
    """2 criteria x 2 actions x 2 trials: the dense round trained once per trial, statistics over
    2 trials for rounds 0-2 of every experiment, as the pivot and the criteria x actions table print."""
    experiments = [
        f"criterion={c}, mask1={a}" for c in ("large_final", "movement") for a in ("rewind", "signed_constant")
    ]
    assert "trials: 2" in text(tagged(nb, "spec"))
    assert any("round 0 (dense): trained 2, reused 6" in text(cell) for cell in code_cells(nb))
    pivot = text(tagged(nb, "pivot"))
    for column in ("weights", "test", "test_ci", "test_end", "es_iter"):
        assert re.search(rf"\b{column}\b", pivot)
    for experiment in experiments:
        assert experiment in pivot

    summary = json.loads((runs / "criteria-vs-actions" / "summary.json").read_text())
    summary = summary["summary"] if isinstance(summary, dict) else summary
    ticket = [r for r in summary if r["line"] == "ticket" and r["metric"] == "test_accuracy_at_early_stop"]
    assert sorted({r["experiment"] for r in ticket}) == sorted(experiments)
    assert {r["trials"] for r in ticket} == {2}
    assert sorted(r["round"] for r in ticket) == sorted([0, 1, 2] * 4)
    assert all(r["ci95_low"] <= r["mean"] <= r["ci95_high"] for r in ticket)

    grid = text(tagged(nb, "grid")).splitlines()
    assert "16% of the weights, 2 trials" in grid[0]
    header = next(line for line in grid if "rewind" in line)
    assert header.split()[-2:] == ["rewind", "signed_constant"]
    means = {
        (r["experiment"], round(100 * r["mean"], 2)) for r in ticket if r["round"] == 2
    }  # every cell prints its experiment's mean at 16%
    for criterion in ("large_final", "movement"):
        line = next(line for line in grid if line.startswith(criterion))
        cells = re.findall(r"(\d+\.\d+) ± (\d+\.\d+)", line)
        assert len(cells) == 2
        for action, (mean, _) in zip(("rewind", "signed_constant"), cells):
            assert (f"criterion={criterion}, mask1={action}", float(mean)) in means


def check_supermasks(nb: nbformat.NotebookNode, runs: Path) -> None:
    """3 criteria x 6 fractions kept x 2 weight transforms evaluated untrained; the learned mask's
    accuracies printed are its run's; four figures."""
    table = text(tagged(nb, "eval-table"))
    for word in ("large_final_same_sign", "large_final", "random", "init", "signed_constant"):
        assert word in table
    keeps = next(line for line in table.splitlines() if line.startswith("keep"))
    assert numbers(keeps) == [1.0, 0.6, 0.4, 0.25, 0.1, 0.05]
    values = [v for line in table.splitlines()[2:] for v in numbers(line)]
    assert len(values) == 36 and all(0 <= v <= 100 for v in values)

    rows = (runs / "supermask-eval" / "supermask_eval.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 36

    learned = text(tagged(nb, "learned"))
    stored = json.loads((runs / "supermask-train" / "supermask_train.json").read_text())
    expected = re.search(r"expected mask: ([\d.]+)%", learned)
    kept = re.search(r"keeps ([\d.]+)% of the weights", learned)
    assert expected is not None and kept is not None
    assert float(expected.group(1)) == pytest.approx(100 * stored["test_accuracy_expected"], abs=0.006)
    assert float(kept.group(1)) == pytest.approx(100 * stored["density"], abs=0.06)
    assert (runs / "supermask-train" / "mask.pt").is_file()
    assert len(images(nb)) >= 4


def check_your_own_model(nb: nbformat.NotebookNode, runs: Path) -> None:
    """The user's CNN: 5 rounds (one step by step, three by iterative_pruning) with shrinking
    weights; a 5% mask from compute_mask; ticket, control and dense accuracies of the plain loop."""
    summary = text(tagged(nb, "summary"))
    rows = [numbers(line) for line in summary.splitlines() if re.match(r"\d+\s", line)]
    rows = [r for r in rows if len(r) >= 4]  # the first block of the (possibly wrapped) table
    assert [int(r[1]) for r in rows] == [0, 1, 2, 3, 4]
    weights = [r[2] for r in rows]
    assert weights[0] == 1.0 and all(a > b for a, b in zip(weights, weights[1:]))
    assert weights[-1] < 0.1

    assert "mask: 5.00% kept" in text(tagged(nb, "compute-mask"))
    own = text(tagged(nb, "own-loop"))
    accuracies = {
        key: float(value) for key, value in re.findall(r"^(dense network|ticket|control)[^:]*:\s+([\d.]+)%", own, re.M)
    }
    assert set(accuracies) == {"dense network", "ticket", "control"}
    assert all(10 < v <= 100 for v in accuracies.values())
    plots = [
        output
        for cell in code_cells(nb)
        if "plot_accuracy" in cell.source
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert plots, "ticket.plot_accuracy() shows no figure"


CHECKS = {
    "01-first-ticket.ipynb": check_first_ticket,
    "02-criteria-and-actions.ipynb": check_criteria_and_actions,
    "03-supermasks.ipynb": check_supermasks,
    "04-your-own-model.ipynb": check_your_own_model,
}
