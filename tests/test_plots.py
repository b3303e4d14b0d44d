"""Figures: every plot kind as valid PNG and SVG of sensible size, overlays, `lth plot` and its errors."""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli_helpers import cli, one_line_error
from lth.errors import LthError
from lth.plots import KINDS, make_plots, plot_run
from lth.store import RunDir

PNG = b"\x89PNG\r\n\x1a\n"
#: The sources each kind is drawn from (keys of the ``result_dirs`` fixture); several are overlaid.
SOURCES = {
    "accuracy": ["ticket", "rewound", "study"],
    "early-stop": ["ticket", "rewound", "study"],
    "learning-curves": ["ticket", "rewound", "sm_train"],
    "layers": ["ticket", "conv"],
    "weights-scatter": ["ticket", "rewound"],
    "weights-hist": ["ticket"],
    "first-layer": ["ticket", "conv", "sm_train"],
    "supermask": ["sm_eval"],
    "stability": ["stability"],
}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of a PNG file, checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_image(path: Path) -> None:
    """A valid, non-empty PNG (300-4000 px each way) or SVG (an <svg> root of sensible size)."""
    assert path.is_file() and path.stat().st_size > 5_000, path
    if path.suffix == ".png":
        width, height = png_size(path)
        assert 300 <= width <= 4000 and 300 <= height <= 4000, (path, width, height)
    else:
        root = ET.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
        width, height = (float(root.get(a).removesuffix("pt")) for a in ("width", "height"))
        assert 200 <= width <= 3000 and 200 <= height <= 3000, (path, width, height)


def svg_text(path: Path) -> str:
    """Matplotlib's SVG keeps each text as a comment beside its glyph paths."""
    return path.read_text()


def test_every_kind_has_sources_here():
    assert set(SOURCES) == set(KINDS)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_kind_writes_valid_png_and_svg(kind, result_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr("lth.plots.weights.HIST_LAYERS", 2)  # the pooled histogram (deep nets), on a small net
    paths = [result_dirs[name] for name in SOURCES[kind]]
    result = make_plots(paths, [kind], tmp_path, ("png", "svg"))
    assert result.written and not result.skipped
    assert sum(p.suffix == ".png" for p in result.written) == sum(p.suffix == ".svg" for p in result.written)
    for path in result.written:
        assert path.parent == tmp_path
        check_image(path)
    overlay = KINDS[kind].overlay
    figures = len(result.written) // 2
    assert figures == (1 if overlay else len(paths) * (2 if kind in ("supermask", "stability") else 1))
    if not overlay and len(paths) > 1:  # one figure per run, named after it
        assert {p.stem.rpartition("--")[2] for p in result.written} == set(SOURCES[kind])
    if KINDS[kind].uses_round and kind != "first-layer":  # default: the last round
        assert all("_round_02" in p.stem for p in result.written)


def test_overlay_of_two_runs_names_both_and_their_controls(result_dirs, tmp_path):
    written = make_plots([result_dirs["ticket"], result_dirs["rewound"]], ["accuracy"], tmp_path, ["svg"]).written
    assert [p.name for p in written] == ["accuracy_vs_weights_remaining.svg"]
    text = svg_text(written[0])
    for label in ("ticket", "rewound", "ticket: reinit control", "rewound: reinit control", "2 runs"):
        assert label in text


def test_study_is_drawn_as_bands_beside_a_run(result_dirs, tmp_path):
    written = make_plots([result_dirs["ticket"], result_dirs["study"]], ["accuracy"], tmp_path, ["svg"]).written
    text = svg_text(written[0])
    assert "study (mean of 2)" in text and "95% CI of the mean" in text and "1 run, 1 study" in text


def test_weights_of_a_rewound_run_start_at_the_rewind_point(result_dirs, tmp_path):
    written = make_plots([result_dirs["rewound"]], ["weights-hist"], tmp_path, ["svg"], round_index=1).written
    assert [p.name for p in written] == ["weights_hist_round_01.svg"]
    assert "rewind point (10it)" in svg_text(written[0])  # rewound runs compare w_k, not w_0


def test_all_draws_what_applies_and_notes_only_real_gaps(result_dirs, tmp_path):
    result = make_plots([result_dirs["ticket"]], None, tmp_path, ["png"])
    stems = sorted(p.stem for p in result.written)
    assert stems == sorted(
        [
            "accuracy_vs_weights_remaining",
            "early_stop_iteration",
            "learning_curves",
            "layers_weights_remaining",
            "weights_scatter_round_02",
            "weights_hist_round_02",
            "first_layer_mask",
        ]
    )
    assert result.skipped == []  # supermask does not fit a ticket run: not worth a note


def test_first_layer_that_does_not_see_the_image_is_skipped_with_a_reason(result_dirs, tmp_path):
    copy = tmp_path / "no-fc1"
    shutil.copytree(result_dirs["ticket"], copy)
    run = RunDir(copy)
    for index in range(3):
        mask = run.load_mask(index)
        del mask["fc1.weight"]
        run.save_mask(index, mask)
    result = make_plots([copy, result_dirs["ticket"]], ["first-layer"], tmp_path / "out", ["png"])
    assert [p.name for p in result.written] == ["first_layer_mask.png"]  # one figure: no run suffix
    assert [(k, s.path, reason) for k, s, reason in result.skipped] == [
        (
            "first-layer",
            copy,
            "its first prunable layer 'fc2.weight' (shape (100, 300)) does not see the 1x8x8 input image",
        )
    ]
    with pytest.raises(LthError, match="plot kind 'first-layer' does not apply to .*does not see the 1x8x8 input"):
        make_plots([copy], ["first-layer"], tmp_path / "out", ["png"])


def test_first_layer_counts_connections_per_pixel(result_dirs, tmp_path):
    mask = RunDir(result_dirs["ticket"]).load_mask(2)["fc1.weight"]
    assert mask.shape == (300, 64) and 0 < mask.sum() < mask.numel()
    written = make_plots([result_dirs["ticket"]], ["first-layer"], tmp_path, ["svg"], round_index=2).written
    assert [p.name for p in written] == ["first_layer_mask_round_02.svg"]
    text = svg_text(written[0])
    assert "fc1 mask over the 8x8 input pixels" in text
    assert f"{100 * float(mask.float().mean()):.3g}% of fc1 kept" in text


def test_plot_run_keeps_its_files_and_stays_fast(result_dirs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(result_dirs["ticket"], copy)
    plot_run(RunDir(copy))  # warm (imports, fonts)
    started = time.perf_counter()
    written = plot_run(RunDir(copy))
    seconds = time.perf_counter() - started
    assert [p.name for p in written] == ["accuracy_vs_weights_remaining.png", "learning_curves.png"]
    for path in written:
        check_image(path)
    assert seconds < 3.0  # ~0.3 s on an idle core; it runs after every round of a search


def test_api_draw_functions_still_return_figures(result_dirs):
    from lth.plots import draw_accuracy, draw_learning_curves, draw_trials_accuracy
    from lth.store.study_dir import StudyDir

    run = RunDir(result_dirs["ticket"])
    assert len(draw_accuracy({"a": run.rounds()}).axes[0].lines) == 2
    assert len(draw_learning_curves(run.rounds(), run.metrics()).axes[0].lines) == 3
    assert draw_trials_accuracy(StudyDir(result_dirs["study"]).summary()).axes[0].get_xscale() == "log"


def test_drawn_into_a_subfigure_returns_the_root_figure(result_dirs, tmp_path):
    """Axes inside a SubFigure: the draw functions return the top-level Figure (typed ``Figure``), which saves."""
    from matplotlib.figure import Figure

    from lth.plots import draw_accuracy, draw_learning_curves, draw_trials_accuracy
    from lth.store.study_dir import StudyDir

    run = RunDir(result_dirs["ticket"])
    root = Figure()
    left, right, third = (sub.subplots() for sub in root.subfigures(1, 3))
    drawn = [
        draw_accuracy({"a": run.rounds()}, ax=left),
        draw_learning_curves(run.rounds(), run.metrics(), ax=right),
        draw_trials_accuracy(StudyDir(result_dirs["study"]).summary(), ax=third),
    ]
    assert all(figure is root for figure in drawn)
    drawn[0].savefig(tmp_path / "three.png")
    assert (tmp_path / "three.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ the command line


def test_cli_plot_overlays_and_prints_the_paths(capsys, result_dirs, tmp_path):
    out = tmp_path / "figs"
    rc, stdout, err = cli(
        capsys, "plot", result_dirs["ticket"], result_dirs["study"], "--kind", "accuracy,early-stop", "--out", out
    )
    assert rc == 0, err
    lines = stdout.splitlines()
    assert sorted(Path(line).name for line in lines) == [
        "accuracy_vs_weights_remaining.png",
        "accuracy_vs_weights_remaining.svg",
        "early_stop_iteration.png",
        "early_stop_iteration.svg",
    ]
    assert all(Path(line).parent == out and Path(line).is_file() for line in lines)


def test_cli_plot_defaults_to_the_run_directory_and_plots_dir(capsys, result_dirs, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(result_dirs["sm_eval"], copy)
    rc, stdout, err = cli(capsys, "plot", copy, "--format", "svg")
    assert rc == 0, err
    assert sorted(stdout.split()) == [str(copy / "supermask_accuracy_vs_kept.svg"), str(copy / "supermask_heatmap.svg")]
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = cli(
        capsys, "plot", result_dirs["ticket"], result_dirs["rewound"], "--kind", "layers", "--format", "png"
    )
    assert rc == 0, err
    assert stdout.split() == [str(Path("plots") / "layers_weights_remaining.png")]
    check_image(tmp_path / "plots" / "layers_weights_remaining.png")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["{empty}"], ["is not an lth run or study directory", "config.yaml"]),
        (["{missing}"], ["is not a directory"]),
        (["{ticket}", "--kind", "scatter"], ["unknown plot kind 'scatter'", "accuracy, early-stop", "supermask, all"]),
        (
            ["{ticket}", "--kind", "supermask"],
            ["plot kind 'supermask' does not apply", "find-ticket run", "supermask-eval runs only"],
        ),
        (["{study}", "--kind", "weights-scatter"], ["is a study (give one of its trial directories)"]),
        (["{ticket}", "--round", "7"], ["--round 7 is not a round of run", "its rounds are 0 to 2"]),
        (["{ticket}", "--round", "last"], ["--round 'last' is not a whole number"]),
        (
            ["{ticket}", "--kind", "weights-hist", "--round", "0"],
            ["round 0 is the dense network", "--round 1 or later"],
        ),
        (["{ticket}", "--format", "gif"], ["unknown image format 'gif'", "png, svg"]),
    ],
)
def test_cli_plot_errors_are_one_line(capsys, result_dirs, tmp_path, args, fragments):
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", **result_dirs}
    rc, _, err = cli(capsys, "plot", *[a.format(**names) for a in args], "--out", tmp_path / "out")
    line = one_line_error(rc, err)
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "out").exists()  # nothing written on a mistake
