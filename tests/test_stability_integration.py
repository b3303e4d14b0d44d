"""Stability runs (``lth stability``) in ``lth report``, ``lth plot`` and the runs index / ``lth runs``."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cli_helpers import cli, one_line_error
from lth.store.index import describe_run, run_id

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stab(tmp_path_factory) -> Path:
    """One small finished stability run (dense lenet-300-100 on digits, k = 0 and 50, 5 path points)
    in its own runs root, registered in that root's index."""
    import lth

    root = tmp_path_factory.mktemp("stability") / "runs"
    before = os.environ.get("LTH_RUNS_ROOT")
    os.environ["LTH_RUNS_ROOT"] = str(root)
    try:
        lth.stability(
            "lenet-300-100",
            "digits",
            rewind="0,50",
            iterations=200,
            eval_every=50,
            points=5,
            device="cpu",
            out=root / "stab",
            progress=False,
        )
    finally:
        if before is None:
            os.environ.pop("LTH_RUNS_ROOT", None)
        else:
            os.environ["LTH_RUNS_ROOT"] = before
    return root / "stab"


def entries(run: Path) -> list[dict]:
    return json.loads((run / "stability.json").read_text())


def points(entry: dict, key: str) -> str:
    return f"{100 * entry[key]:.2f} ± {100 * entry[key + '_std']:.2f}"


def expected_rows(run: Path) -> list[list[str]]:
    return [
        [
            str(e["level"]),
            f"{100 * e['weights_remaining']:.2f}%",
            str(e["rewind_iteration"]),
            str(e["pairs"]),
            points(e, "instability_test"),
            points(e, "instability_train"),
            f"{e['loss_barrier_test']:.4f}",
            "yes" if e["stable"] else "no",
        ]
        for e in entries(run)
    ]


# ------------------------------------------------------------------ lth report


def test_markdown_report_has_the_instability_section_table_and_figures(stab, capsys, tmp_path):
    out = tmp_path / "report.md"
    rc, stdout, err = cli(capsys, "report", stab, "--out", out)
    assert rc == 0, err
    text = out.read_text()
    section = text.split("### Instability analysis", 1)[1].split("###", 1)[0]
    assert "minus the mean of the errors at the path's two ends" in section
    assert "stable at k when its mean test instability is at most 2 pp" in section
    header = (
        "| level | weights left | rewind k | pairs | test instability (pp) | train instability (pp) "
        "| test loss barrier | stable |"
    )
    assert header in section
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) == 2 and rows == expected_rows(stab)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == ["report_files/stab-instability.png", "report_files/stab-stability_path.png"]
    for link in links:
        assert (out.parent / link).read_bytes().startswith(PNG)
    assert stdout.strip() == str(out)


def test_html_report_embeds_the_table_and_both_figures(stab, capsys, tmp_path):
    out = tmp_path / "report.html"
    rc, _, err = cli(capsys, "report", stab, "--out", out)
    assert rc == 0, err
    text = out.read_text()
    assert "<h3>Instability analysis</h3>" in text
    for row in expected_rows(stab):
        cells = "".join(f'<td class="num">{c}</td>' if c not in ("yes", "no") else f"<td>{c}</td>" for c in row)
        assert f"<tr>{cells}</tr>" in text, cells
    figures = dict(re.findall(r'<figure id="([^"]+)"><img src="data:image/png;base64,([^"]+)"', text))
    assert set(figures) == {"stab-stability_path", "stab-instability"}
    assert all(base64.b64decode(data).startswith(PNG) for data in figures.values())


# ------------------------------------------------------------------ lth plot


def test_plot_draws_both_figures_by_default(stab, capsys, tmp_path):
    rc, stdout, err = cli(capsys, "plot", stab, "--out", tmp_path / "figs")
    assert rc == 0, err
    names = ["stability_path.png", "stability_path.svg", "instability.png", "instability.svg"]
    assert stdout.split() == [str(tmp_path / "figs" / name) for name in names]
    assert "skipped" not in err  # no note for the kinds that are not drawn for a stability run
    for name in names:
        assert (tmp_path / "figs" / name).stat().st_size > 5_000
    assert (tmp_path / "figs" / "instability.png").read_bytes().startswith(PNG)
    rc, stdout, err = cli(capsys, "plot", stab, "--kind", "stability", "--format", "png", "--out", tmp_path / "png")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["instability.png", "stability_path.png"]


def test_plot_kinds_that_do_not_apply_are_one_line_errors(stab, capsys, tmp_path):
    line = one_line_error(*cli(capsys, "plot", stab, "--kind", "accuracy", "--out", tmp_path / "out")[::2])
    assert "plot kind 'accuracy' does not apply" in line and "it is a stability run" in line, line
    ticket = tmp_path / "ticket"  # a find-ticket run is recognised by its config.yaml alone
    ticket.mkdir()
    (ticket / "config.yaml").write_text("model: lenet-300-100\ndataset: digits\n")
    line = one_line_error(*cli(capsys, "plot", ticket, "--kind", "stability", "--out", tmp_path / "out")[::2])
    assert "plot kind 'stability' does not apply" in line and "stability draws stability runs only" in line, line
    unfinished = tmp_path / "unfinished"  # a stability run before its first path
    unfinished.mkdir()
    shutil.copy(stab / "config.yaml", unfinished / "config.yaml")
    line = one_line_error(*cli(capsys, "plot", unfinished, "--kind", "stability", "--out", tmp_path / "out")[::2])
    assert "it has no stability.json yet" in line, line
    line = one_line_error(*cli(capsys, "plot", unfinished, "--out", tmp_path / "out")[::2])
    assert "no plot kind applies" in line, line
    line = one_line_error(*cli(capsys, "plot", stab, "--kind", "nope", "--out", tmp_path / "out")[::2])
    assert "stability" in line.split("choose from:", 1)[1], line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the runs index and lth runs


def test_index_row_has_the_stability_headline(stab, capsys):
    rc, out, err = cli(capsys, "runs", "list", "--root", stab.parent, "--json")
    assert rc == 0, err
    [row] = json.loads(out)
    found = entries(stab)
    sparsest = min(e["weights_remaining"] for e in found)
    last = max((e for e in found if e["weights_remaining"] == sparsest), key=lambda e: e["rewind_iteration"])
    assert row["id"] == run_id("stab") and row["kind"] == "stability" and row["status"] == "complete"
    assert row["model"] == "lenet-300-100" and row["dataset"] == "digits"
    assert row["metrics"] == {
        "entries": len(found),
        "stable": sum(e["stable"] for e in found),
        "max_instability_test": max(e["instability_test"] for e in found),
    }
    assert row["weights_remaining"] == sparsest == 1.0 and last["rewind_iteration"] == 50
    assert row["test_accuracy"] == pytest.approx(1 - last["child_test_error"])
    rc, out, err = cli(capsys, "runs", "list", "--root", stab.parent)
    assert rc == 0, err
    line = next(line for line in out.splitlines() if line.startswith(run_id("stab")))
    assert line.split()[1] == "stability" and f"{100 * (1 - last['child_test_error']):.2f}%" in line
    rc, out, err = cli(capsys, "runs", "list", "--root", stab.parent, "--where", "stable>=1", "--json")
    assert rc == 0 and len(json.loads(out)) == (row["metrics"]["stable"] >= 1), err


def test_runs_show_and_compare(stab, capsys):
    rc, out, err = cli(capsys, "runs", "show", run_id("stab")[:5], "--root", stab.parent)
    assert rc == 0, err
    assert out.startswith(f"{run_id('stab')}  stab  (stability, complete)") and "instability analysis" in out
    line = one_line_error(*cli(capsys, "runs", "compare", "stab", "stab", "--root", stab.parent)[::2])
    assert "is a stability run" in line, line


def test_index_row_before_the_first_path(stab, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(stab / "config.yaml", unfinished / "config.yaml")
    row = describe_run(unfinished)
    assert row["kind"] == "stability" and row["test_accuracy"] is None and row["weights_remaining"] is None
    assert row["metrics"] == {"entries": 0, "stable": 0, "max_instability_test": None}
