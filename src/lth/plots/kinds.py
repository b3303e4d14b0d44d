"""The plot kinds: name -> what it draws, which sources it applies to, and the drawing function.

``make_plots(paths, kinds, out_dir)`` is what ``lth plot`` and ``lth report`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from lth.errors import LthError
from lth.plots.accuracy import plot_accuracy, plot_early_stop
from lth.plots.common import (
    FORMATS,
    STABILITY,
    STUDY,
    SUPERMASK_EVAL,
    SUPERMASK_TRAIN,
    TICKET,
    Source,
    check_formats,
    open_sources,
)
from lth.plots.first_layer import check_first_layer, plot_first_layer
from lth.plots.layers import plot_layers
from lth.plots.learning_curves import plot_learning_curves
from lth.plots.stability import plot_stability
from lth.plots.supermask import plot_supermask
from lth.plots.weights import check_weights, plot_weights_hist, plot_weights_scatter
from lth.store.stability_rows import ROWS_JSON, read_entries

#: draw(sources that apply, out_dir, formats, round or None) -> written files
Draw = Callable[[Sequence[Source], Path, Sequence[str], "int | None"], list[Path]]
#: check(source, round or None) -> why the kind cannot be drawn for it (None: it can)
Check = Callable[[Source, "int | None"], "str | None"]


@dataclass(frozen=True)
class PlotKind:
    """A family of figures: ``overlay`` kinds put every source on one figure, the others write one
    figure per source."""

    name: str
    description: str
    sources: tuple[str, ...]
    draw: Draw
    check: Check = field(default=lambda source, chosen: None)
    overlay: bool = True
    uses_round: bool = False


def _has_rounds(source: Source, chosen: int | None) -> str | None:
    if source.kind == STUDY:
        return None if source.study.summary() else "it has no statistics yet (no finished trial)"
    return None if source.rounds else "it has no finished round yet"


def _has_metrics(source: Source, chosen: int | None) -> str | None:
    if not (source.path / "metrics.csv").is_file():
        return "it has no metrics.csv yet"
    return None if source.kind == SUPERMASK_TRAIN else _has_rounds(source, chosen)


def _has_layers(source: Source, chosen: int | None) -> str | None:
    if not source.rounds:
        return "it has no finished round yet"
    return None if source.rounds[0].get("layers") else "its rounds.json has no per-layer densities"


def _has_rows(source: Source, chosen: int | None) -> str | None:
    return None if (source.path / "supermask_eval.json").is_file() else "it has no supermask_eval.json yet"


def _has_entries(source: Source, chosen: int | None) -> str | None:
    if not (source.path / ROWS_JSON).is_file():
        return f"it has no {ROWS_JSON} yet"
    return None if read_entries(source.run) else "it has no finished path between copies yet"


KINDS: dict[str, PlotKind] = {
    kind.name: kind
    for kind in [
        PlotKind(
            "accuracy",
            "test accuracy at early stop vs weights remaining (log x): runs with dashed controls, studies as bands",
            (TICKET, STUDY),
            lambda s, o, f, r: plot_accuracy(s, o, f),
            _has_rounds,
        ),
        PlotKind(
            "early-stop",
            "early-stopping iteration vs weights remaining: runs with dashed controls, studies as bands",
            (TICKET, STUDY),
            lambda s, o, f, r: plot_early_stop(s, o, f),
            _has_rounds,
        ),
        PlotKind(
            "learning-curves",
            "test accuracy and validation loss vs training iteration, up to 4 rounds "
            "per panel, early stops starred, one block of panels per run",
            (TICKET, SUPERMASK_TRAIN),
            lambda s, o, f, r: plot_learning_curves(s, o, f),
            _has_metrics,
        ),
        PlotKind(
            "layers",
            "weights remaining per layer vs pruning round, one panel per run",
            (TICKET,),
            lambda s, o, f, r: plot_layers(s, o, f),
            _has_layers,
        ),
        PlotKind(
            "weights-scatter",
            "w_i vs w_f of the weights alive before round N, coloured kept/pruned by mask N",
            (TICKET,),
            plot_weights_scatter,
            check_weights,
            overlay=False,
            uses_round=True,
        ),
        PlotKind(
            "weights-hist",
            "histograms of those weights at init and after round N-1, kept vs pruned",
            (TICKET,),
            plot_weights_hist,
            check_weights,
            overlay=False,
            uses_round=True,
        ),
        PlotKind(
            "first-layer",
            "first layer's mask as an image: units kept per input pixel (conv: per kernel position)",
            (TICKET, SUPERMASK_TRAIN),
            plot_first_layer,
            check_first_layer,
            overlay=False,
            uses_round=True,
        ),
        PlotKind(
            "stability",
            "stability runs: error along the linear path between copies, instability vs rewind point",
            (STABILITY,),
            lambda s, o, f, r: plot_stability(s, o, f),
            _has_entries,
            overlay=False,
        ),
        PlotKind(
            "supermask",
            "supermask-eval runs: untrained accuracy vs fraction kept, criterion x keep heatmap",
            (SUPERMASK_EVAL,),
            lambda s, o, f, r: plot_supermask(s, o, f),
            _has_rows,
            overlay=False,
        ),
    ]
}
ALL = "all"


def kind_names() -> list[str]:
    return [*KINDS, ALL]


def resolve_kinds(names: Sequence[str] | None) -> list[str]:
    """Canonical kind names (``all`` and duplicates resolved, order kept); default ``all``."""
    names = [n.strip() for name in (names or [ALL]) for n in name.split(",") if n.strip()] or [ALL]
    for name in names:
        if name not in KINDS and name != ALL:
            raise LthError(f"unknown plot kind {name!r}; choose from: {', '.join(kind_names())}")
    return list(KINDS) if ALL in names else list(dict.fromkeys(names))


_DESCRIBED = {
    TICKET: "a find-ticket run",
    STUDY: "a study",
    SUPERMASK_EVAL: "a supermask-eval run",
    SUPERMASK_TRAIN: "a supermask-train run",
    STABILITY: "a stability run",
}
_PLURAL = {
    TICKET: "find-ticket runs",
    STUDY: "studies",
    SUPERMASK_EVAL: "supermask-eval runs",
    SUPERMASK_TRAIN: "supermask-train runs",
    STABILITY: "stability runs",
}


def why_not(kind: PlotKind, source: Source, chosen: int | None) -> str | None:
    """Why ``kind`` cannot be drawn for ``source`` (None when it can)."""
    if source.kind not in kind.sources:
        allowed = " and ".join(_PLURAL[k] for k in kind.sources)
        hint = " (give one of its trial directories)" if source.kind == STUDY and TICKET in kind.sources else ""
        return f"it is {_DESCRIBED[source.kind]}{hint}, and {kind.name} draws {allowed} only"
    return kind.check(source, chosen)


def draw_kind(
    name: str,
    sources: Sequence[Source],
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    round_index: int | None = None,
) -> list[Path]:
    """Draw kind ``name`` of the sources it applies to (none: nothing is drawn, [] is returned)."""
    kind = KINDS[name]
    fits = [s for s in sources if why_not(kind, s, round_index) is None]
    return kind.draw(fits, Path(out_dir), formats, round_index) if fits else []


def check_round(sources: Sequence[Source], chosen: int | None) -> None:
    """Every find-ticket run must have round ``chosen``."""
    if chosen is None:
        return
    for source in sources:
        if source.kind == TICKET and chosen not in source.round_indices:
            rounds = source.round_indices
            have = f"its rounds are {rounds[0]} to {rounds[-1]}" if rounds else "it has no finished round"
            raise LthError(f"--round {chosen} is not a round of run {str(source.path)!r}; {have}")


@dataclass
class PlotResult:
    """What ``make_plots`` wrote, and (kind, source, reason) for every figure it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, Source, str]] = field(default_factory=list)


def make_plots(
    paths: Sequence[str | Path] | Sequence[Source],
    kinds: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    round_index: int | None = None,
) -> PlotResult:
    """Draw ``kinds`` (default: every kind that applies) of the given run/study directories into
    ``out_dir`` (default: the directory itself for one source, else ``plots/``).

    A kind named explicitly that applies to none of the sources is an error; with ``all``, kinds and
    sources that do not fit are skipped (and listed in the result).
    """
    if paths and all(isinstance(p, Source) for p in paths):
        sources = [p for p in paths if isinstance(p, Source)]  # all of them
    else:
        sources = open_sources(cast("Sequence[str | Path]", paths))  # directories
    explicit = kinds is not None and ALL not in [n.strip() for k in kinds for n in k.split(",")]
    names = resolve_kinds(kinds)
    formats = check_formats(formats)
    if round_index is not None and round_index < 0:
        raise LthError(f"--round {round_index} is invalid; rounds are numbered from 0")
    check_round(sources, round_index)
    out = Path(out_dir) if out_dir is not None else (sources[0].path if len(sources) == 1 else Path("plots"))
    if out.exists() and not out.is_dir():
        raise LthError(f"output path {str(out)!r} exists and is not a directory")
    plan: list[tuple[PlotKind, list[Source]]] = []
    result = PlotResult()
    for name in names:
        kind = KINDS[name]
        fits, reasons = [], []
        for source in sources:
            reason = why_not(kind, source, round_index)
            if reason is None:
                fits.append(source)
            else:
                reasons.append((kind.name, source, reason))
        if not fits and explicit:
            _, source, reason = reasons[0]
            raise LthError(f"plot kind {name!r} does not apply to {str(source.path)!r}: {reason}")
        # With ``all``, a source of another kind is not worth a note; a fitting one that lacks something is.
        result.skipped += [r for r in reasons if explicit or r[1].kind in kind.sources]
        if fits:
            plan.append((kind, fits))
    if not plan:
        raise LthError("no plot kind applies to the given directories (are their runs finished?)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LthError(f"cannot create output directory {str(out)!r}: {error.strerror}") from None
    for kind, fits in plan:
        result.written += kind.draw(fits, out, formats, round_index)
    return result
