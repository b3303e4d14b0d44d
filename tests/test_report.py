"""Reports: one self-contained HTML file (and Markdown + images), its content, errors, and a check
in headless Chromium (skipped where no Chromium is installed)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli, one_line_error
from lth.store import RunDir
from lth.store.study_dir import StudyDir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def html_report(result_dirs, tmp_path_factory) -> Path:
    """The HTML report of the ticket run and the study, written by ``lth report``."""
    from lth.cli import main

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(result_dirs["ticket"]), str(result_dirs["study"]), "--out", str(out)]) == 0
    return out


def _chromium_check():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import check_report
    finally:
        sys.path.pop(0)
    return check_report


def test_html_report_is_self_contained(html_report):
    text = html_report.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<script" not in text and 'src="http' not in text and 'href="http' not in text and "@import" not in text
    sources = re.findall(r'<img src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG)


def test_html_report_holds_configs_rounds_controls_statistics_and_every_figure(html_report, result_dirs):
    text = html_report.read_text()
    run = RunDir(result_dirs["ticket"])
    for value in ("lenet-300-100", "digits", "large_final", "reinit", "<td>iterations</td><td>60</td>"):
        assert value in text, value
    for row in run.rounds():
        assert f"{100 * row['weights_remaining']:.2f}%" in text
        assert f"{100 * row['test_accuracy_at_early_stop']:.2f}%" in text
    reinit = run.controls()["reinit"]
    assert "Control: reinit" in text and f"{100 * reinit[-1]['final_test_accuracy']:.2f}%" in text
    summary = {(r["round"], r["metric"]): r for r in StudyDir(result_dirs["study"]).summary()}
    mean = summary[(1, "test_accuracy_at_early_stop")]
    assert "Statistics over trials" in text and f"{100 * mean['mean']:.2f} ± " in text
    # Comparison (accuracy, early stop: both sources), the run's 7 kinds, the study's 2: one image each.
    names = re.findall(r'<figure id="([^"]+)"><img ', text)
    assert len(names) == len(set(names)) == 11 == text.count("<img ")
    assert {n for n in names if n.startswith("comparison-")} == {
        "comparison-accuracy_vs_weights_remaining",
        "comparison-early_stop_iteration",
    }
    assert len([n for n in names if n.startswith("ticket-")]) == 7
    assert re.findall(r"<h2>([^<]+)</h2>", text) == [
        "Headlines",
        "Comparison",
        "ticket: lenet-300-100 on digits",
        "study: tiny (robust study)",
    ]


def test_markdown_report_writes_the_document_and_its_images(capsys, result_dirs, tmp_path):
    out = tmp_path / "notes" / "study.md"
    rc, stdout, err = cli(capsys, "report", result_dirs["study"], "--out", out)
    assert rc == 0, err
    assert stdout.strip() == str(out)
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [
        "study_files/study-accuracy_vs_weights_remaining.png",
        "study_files/study-early_stop_iteration.png",
    ]
    for link in links:
        assert (out.parent / link).read_bytes().startswith(PNG)
    assert "| experiment | line | round | weights left |" in text and "## study: tiny (robust study)" in text


def test_format_flag_and_suffix(capsys, result_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = cli(capsys, "report", result_dirs["sm_eval"], "--format", "md")
    assert rc == 0 and stdout.strip() == "report.md", err
    assert (tmp_path / "report_files" / "sm-eval-supermask_heatmap.png").is_file()
    assert "| large_final | init | 50% |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{empty}"], "is not an lth run or study directory"),
        (["{ticket}", "--format", "pdf"], "unknown report format 'pdf'; choose html or md"),
        (["{ticket}", "--out", "{empty}"], "is a directory; give a file name such as report.html"),
    ],
)
def test_report_errors_are_one_line(capsys, result_dirs, tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", **result_dirs}
    line = one_line_error(*cli(capsys, "report", *[a.format(**names) for a in args])[::2])
    assert fragment in line, line


@pytest.mark.skipif(_chromium_check().find_browser() is None, reason="no Chromium installed (Debian package chromium)")
def test_report_opens_in_chromium_without_console_errors(html_report, tmp_path):
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(html_report), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 problem(s)" in done.stdout and "11 images" in done.stdout
    data = shot.read_bytes()
    assert data.startswith(PNG) and int.from_bytes(data[16:20], "big") == 1280 and len(data) > 50_000
    # The check does catch what it must: a console error, a broken image, an uncaught exception.
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><title>bad</title></head><body><img src="missing.png" alt="gone">'
        '<script>console.error("boom"); undefinedFunction();</script></body></html>'
    )
    done = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    for fragment in ("console.error: boom", "undefinedFunction", "image did not load: 'gone'", "ERR_FILE_NOT_FOUND"):
        assert fragment in done.stdout, done.stdout
