"""What every figure shares: pyplot-free figures on the Agg canvas, atomic PNG/SVG saving, axes
helpers, and the sources (run or study directories) figures are drawn from."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import matplotlib

matplotlib.use("Agg")
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, Formatter, FuncFormatter, NullLocator  # noqa: E402

from lth.atomic import atomic_write_bytes  # noqa: E402
from lth.errors import LthError  # noqa: E402
from lth.store.run_dir import RunDir  # noqa: E402
from lth.store.study_dir import StudyDir  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FORMATS: tuple[str, ...] = ("png", "svg")
DPI = 130
#: A figure of one axes: 6.4 x 4.2 in at 130 dpi is about 830 x 550 px.
SIZE = (6.4, 4.2)

TICKET = "find-ticket"
STUDY = "study"
SUPERMASK_EVAL = "supermask-eval"
SUPERMASK_TRAIN = "supermask-train"
STABILITY = "stability"  # instability analysis (``lth stability``)
BRANCH = "branch"  # the kind in a branch's config.yaml; drawn as a ticket search
SOURCE_KINDS = (TICKET, STUDY, SUPERMASK_EVAL, SUPERMASK_TRAIN, STABILITY)


# ------------------------------------------------------------------ figures and files


def new_figure(
    width: float = SIZE[0],
    height: float = SIZE[1],
    layout: Literal["constrained", "compressed", "tight"] | None = "constrained",
) -> Figure:
    """A figure no pyplot state tracks (nothing to close, nothing leaks), drawn by Agg."""
    return Figure(figsize=(width, height), layout=layout)


def root_figure(ax: Axes) -> Figure:
    """The top-level Figure that ``ax`` is drawn in, also when it lives in a SubFigure (one to ``savefig``)."""
    figure: Any = ax.figure
    while not isinstance(figure, Figure):  # a SubFigure: its .figure is the root
        figure = figure.figure
    return figure


def axes_or_new(ax: Axes | None) -> Axes:
    """The given axes, or the axes of a new pyplot-free figure (for the Python API's draw_*)."""
    return ax if ax is not None else new_figure(layout=None).subplots()


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure rendered as ``fmt`` (png or svg), cropped to its content."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else None  # reproducible SVG files
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def save(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``out_dir/stem.FORMAT`` for every format, each atomically; return the paths."""
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, figure_bytes(fig, fmt))
        paths.append(path)
    return paths


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated formats, each png or svg."""
    wanted = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    if not wanted:
        raise LthError("no image format given; choose png, svg or png,svg")
    for fmt in wanted:
        if fmt not in FORMATS:
            raise LthError(f"unknown image format {fmt!r}; choose from: {', '.join(FORMATS)}")
    return wanted


# ------------------------------------------------------------------ axes


def percent(value: float, _pos: object = None) -> str:
    """0.512 -> '51.2%' (three significant digits)."""
    return f"{100 * value:.3g}%"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-7 * max(1.0, abs(a), abs(b))


def percent_decimals(values: Iterable[float], most: int = 4) -> int:
    """The decimals that percentages of ``values`` (fractions) need: the fewest that write every
    value exactly (ticks 0.8, 0.825 -> 1: '80.0%', '82.5%'), else the fewest that tell every value
    apart (at most ``most``), so labels neither lie about a tick nor repeat each other."""
    values = [100 * float(v) for v in values if math.isfinite(v)]
    if not values:
        return 0
    for decimals in range(most + 1):
        if all(_close(round(v, decimals), v) for v in values):
            return decimals
    for decimals in range(most + 1):
        labels = [f"{v:.{decimals}f}" for v in values]
        if len(set(labels)) == len(set(round(v, 9) for v in values)):
            return decimals
    return most


class PercentFormatter(Formatter):
    """Fractions as percentages with one number of decimals per axis, the fewest the ticks'
    spacing needs (see :func:`percent_decimals`): '81.00%', '81.25%', '81.50%', never '81.2%'
    for 81.25% nor the same label twice."""

    def __init__(self) -> None:
        self.decimals: int | None = None

    def set_locs(self, locs: list[float]) -> None:
        super().set_locs(locs)
        self.decimals = percent_decimals(locs)

    def __call__(self, x: float, pos: object = None) -> str:
        decimals = self.decimals if self.decimals is not None else percent_decimals([x])
        value = 100 * x
        return f"{0.0 if _close(value, 0.0) else value:.{decimals}f}%"  # no '-0%' from float noise


def significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits in plain notation, trailing zeros kept where they
    are significant ('41.0' for 40.96) and dropped where the value is exact ('64' for 64.0)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    if decimals and _close(float(text), value):
        text = text.rstrip("0").rstrip(".")
    return text


def level_digits(values: Iterable[float], least: int = 3, most: int = 7) -> int:
    """Significant digits for percentages of measured (not round) ``values``: ``least``, more only
    where two values would otherwise read the same."""
    values = sorted({float(v) for v in values if math.isfinite(v)})
    for digits in range(least, most + 1):
        if len({significant(100 * v, digits) for v in values}) == len(values):
            return digits
    return most


class LevelFormatter(Formatter):
    """Measured weights-remaining levels as percentages with three significant digits (100%,
    51.2%, 26.2%, 13.4%, 41.0% for 40.96%: never 13.421772799999998%), more only to keep two labels
    apart."""

    def __init__(self) -> None:
        self.digits = 3

    def set_locs(self, locs: list[float]) -> None:
        super().set_locs(locs)
        self.digits = level_digits(locs)

    def __call__(self, x: float, pos: object = None) -> str:
        return f"{significant(100 * x, self.digits)}%"


def percent_axis(axis: Any) -> None:
    """Tick labels of ``axis`` as percentages with the decimals their spacing needs."""
    axis.set_major_formatter(PercentFormatter())


def remaining_axis(ax: Axes, levels: Iterable[float], label: str = "weights remaining (log scale)") -> None:
    """Weights remaining on a log x axis, decreasing to the right (as in the papers), ticks at the
    measured levels (at most ~8 labelled, each label distinct)."""
    levels = sorted({float(v) for v in levels if v and v > 0}, reverse=True)
    ax.set_xscale("log")
    if levels:
        ax.xaxis.set_major_locator(FixedLocator(spread_levels(levels)))
        if len(levels) == 1:
            ax.set_xlim(levels[0] * 1.25, levels[0] / 1.25)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.xaxis.set_major_formatter(LevelFormatter())
    ax.xaxis.set_minor_locator(NullLocator())  # the log decades' minor ticks would crowd the measured levels
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def plain_log_axis(axis: Any, low: float | None = None, high: float | None = None) -> None:
    """A log axis labelled in plain numbers (0.5, 0.7, 1, 1.5, 2), not powers of ten: a loss rarely
    spans a decade. The narrower the range ``low``-``high`` (default: the axis' view), the more of
    1, 1.5, 2, 3, 5, 7 times each power of ten are ticked, so a few labels always show."""
    from matplotlib.ticker import LogLocator

    if low is None or high is None:
        low, high = sorted(axis.get_view_interval())
    decades = math.log10(high / low) if low and high and low > 0 and high > low else 1.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))


# ------------------------------------------------------------------ y limits from the data


def metric_bounds(metric: str) -> tuple[float | None, float | None]:
    """What values ``metric`` can take: an accuracy lies in [0, 1]; iterations, losses, times and
    counts are never negative; anything else is unbounded."""
    name = metric.lower()
    if "accuracy" in name:
        return 0.0, 1.0
    if any(word in name for word in ("iteration", "loss", "seconds", "weights", "kept", "error")):
        return 0.0, None
    return None, None


@overload
def clip(values: Iterable[float], bounds: tuple[float | None, float | None]) -> list[float]: ...
@overload
def clip(values: Iterable[float | None], bounds: tuple[float | None, float | None]) -> list[float | None]: ...
def clip(values: Iterable[float | None], bounds: tuple[float | None, float | None]) -> list[Any]:
    """``values`` clipped into ``bounds`` (None values stay None)."""
    low, high = bounds
    out: list[Any] = []  # list[float] when no value is None (see the overloads)
    for value in values:
        if value is not None:
            value = value if low is None else max(low, value)
            value = value if high is None else min(high, value)
        out.append(value)
    return out


def drawn_y(ax: Axes) -> list[float]:
    """The y values (data units) of everything drawn on ``ax``: lines, filled bands, markers and
    reference lines; lines given in axes units (axvline) are left out."""
    import numpy as np

    values: list[Any] = []
    for line in ax.lines:
        if line.get_visible() and line.get_transform().contains_branch_seperately(ax.transData)[1]:
            values.append(np.asarray(line.get_ydata(), dtype=float).ravel())
    for collection in ax.collections:
        if not collection.get_visible():
            continue
        if isinstance(collection, PathCollection):  # scatter: the markers sit at their offsets
            offsets = np.asarray(collection.get_offsets(), dtype=float)
            if offsets.size:
                values.append(offsets[:, 1])
        elif collection.get_transform().contains_branch_seperately(ax.transData)[1]:
            values += [np.asarray(path.vertices, dtype=float)[:, 1] for path in collection.get_paths()]
    if not values:
        return []
    flat = np.concatenate(values)
    return flat[np.isfinite(flat)].tolist()


def fit_ylim(
    axes: Axes | Sequence[Axes], margin: float = 0.06, min_span: float | None = None, include: Iterable[float] = ()
) -> tuple[float, float] | None:
    """Set the y range of ``axes`` (one, or several sharing y) to everything drawn on them (and the
    values in ``include``, e.g. 0 for a count) plus ``margin`` of the span on each side, so no
    point, band or marker sits on or past the edge, and no fixed range (0-100%) flattens the data.
    A log axis gets its margin in log space. ``min_span`` (data units) keeps a flat series from
    filling the axes. Returns the limits."""
    axes = [cast("Axes", axes)] if hasattr(axes, "get_yscale") else list(axes)
    if not axes:
        return None
    values = [v for ax in axes for v in drawn_y(ax)] + [float(v) for v in include]
    log = axes[0].get_yscale() == "log"
    if log:
        values = [math.log10(v) for v in values if v > 0]
    if not values:
        return None
    low, high = min(values), max(values)
    span = high - low
    least = 0.05 if log else (min_span if min_span is not None else max(abs(high), 1e-9) * 0.02)
    if span < least:
        low, high = (low + high) / 2 - least / 2, (low + high) / 2 + least / 2
        span = least
    low, high = low - margin * span, high + margin * span
    if log:
        low, high = 10**low, 10**high
    for ax in axes:
        ax.set_ylim(low, high)
    return low, high


# ------------------------------------------------------------------ reference lines and legend keys


def reference_line(
    ax: Axes, y: float, label: str, colour: Any = "0.35", linestyle: Any = (0, (7, 3)), linewidth: float = 1.0
) -> LineCollection:
    """A horizontal reference line across the whole axes at ``y`` (e.g. the dense network's
    accuracy), labelled for the legend. It is a LineCollection, not a Line2D, so code that counts
    an axes' lines (one per series) is unaffected; :func:`fit_ylim` keeps it in view."""
    line = LineCollection(
        [[(0.0, y), (1.0, y)]],
        transform=ax.get_yaxis_transform(),
        colors=[colour],
        linestyles=[linestyle],
        linewidths=[linewidth],
        label=label,
        zorder=1.6,
    )
    ax.add_collection(line, autolim=False)
    return line


def reference_y(line: LineCollection) -> float:
    """The y of a :func:`reference_line`."""
    return float(line.get_segments()[0][0][1])


def band_key(colour: Any, alpha: float, line: Any) -> tuple[Patch, Line2D]:
    """A legend handle for a mean drawn over a band: the band's swatch (its colour and alpha) with
    the mean's line and marker on top, as drawn."""
    patch = Patch(facecolor=colour, alpha=alpha, edgecolor="none", linewidth=0)
    mean = Line2D(
        [],
        [],
        color=line.get_color(),
        linestyle=line.get_linestyle(),
        linewidth=line.get_linewidth(),
        marker=line.get_marker(),
        markersize=line.get_markersize(),
    )
    return patch, mean


def spread_levels(levels: Sequence[float], most: int = 8) -> list[float]:
    """At most ~``most`` of the (decreasing) ``levels`` for tick labels, far enough apart on a log
    axis not to overlap (runs of several models have close levels); the first and last always."""
    if len(levels) <= 2:
        return list(levels)
    gap = math.log(levels[0] / levels[-1]) / (most + 0.5)
    picked = [levels[0]]
    for level in levels[1:-1]:
        if math.log(picked[-1] / level) >= gap and math.log(level / levels[-1]) >= gap:
            picked.append(level)
    return picked + [levels[-1]]


def lighter(colour: Any, amount: float = 0.45) -> tuple[float, float, float]:
    """``colour`` mixed with ``amount`` of white."""
    r, g, b = mcolors.to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def legend_below(
    ax: Axes,
    ncol: int = 2,
    extra: Sequence[tuple[Any, str]] = (),
    entries: Sequence[tuple[Any, str]] | None = None,
    title: str | None = None,
) -> None:
    """The legend under the axes (lines that cross the whole plot leave no free inner corner);
    ``extra`` adds (handle, label) pairs such as proxies for bands; ``entries`` replaces the axes'
    own (handle, label) pairs; ``title`` heads the legend."""
    if entries is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        handles, labels = [h for h, _ in entries], [label for _, label in entries]
    handles, labels = handles + [h for h, _ in extra], labels + [label for _, label in extra]
    if handles:
        from matplotlib.legend_handler import HandlerTuple

        ax.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.17),
            ncol=min(ncol, len(labels)),
            fontsize="small",
            frameon=False,
            title=title,
            title_fontsize="small",
            handler_map={tuple: HandlerTuple(ndivide=1)},
        )


def layer_label(name: str) -> str:
    """'fc1.weight' -> 'fc1'; other parameters keep their full name."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def grid_shape(count: int, columns: int = 3) -> tuple[int, int]:
    """(rows, columns) of a grid holding ``count`` panels, at most ``columns`` wide."""
    columns = max(1, min(columns, count))
    return (count + columns - 1) // columns, columns


def pick_rounds(rounds: Sequence[int], most: int = 8) -> list[int]:
    """At most ``most`` of ``rounds``, evenly spread, always the first and the last."""
    rounds = sorted(rounds)
    if len(rounds) <= most:
        return rounds
    picks = {rounds[round(i * (len(rounds) - 1) / (most - 1))] for i in range(most)}
    return sorted(picks)


# ------------------------------------------------------------------ sources


@dataclass
class Source:
    """A run or study directory to draw, with its kind and a short label for legends and files."""

    path: Path
    kind: str
    label: str

    @cached_property
    def run(self) -> RunDir:
        return RunDir(self.path)

    @cached_property
    def study(self) -> StudyDir:
        return StudyDir(self.path)

    @cached_property
    def config(self) -> dict[str, Any]:
        if self.kind == STUDY:
            return self.study.study()
        config = self.run.config()
        return config if isinstance(config, dict) else {}

    @cached_property
    def rounds(self) -> list[dict[str, Any]]:
        return self.run.rounds() if self.kind == TICKET else []

    @cached_property
    def controls(self) -> dict[str, list[dict[str, Any]]]:
        return self.run.controls() if self.kind == TICKET else {}

    @cached_property
    def branches(self) -> dict[str, list[dict[str, Any]]]:
        """The branches run off this ticket search (``lth branch``), by name."""
        return self.run.branches() if self.kind == TICKET else {}

    @property
    def title(self) -> str:
        """'lenet-300-100 on digits' (runs) or 'NAME (robust study)' (studies)."""
        config = self.config
        if self.kind == STUDY:
            return f"{config.get('name') or self.path.name} ({config.get('kind', 'a')} study)"
        if "model" in config and "dataset" in config:
            return f"{config['model']} on {config['dataset']}"
        return self.label

    @property
    def round_indices(self) -> list[int]:
        return [int(r["round"]) for r in self.rounds]


def source_kind(path: Path) -> str:
    """find-ticket, supermask-eval, supermask-train, stability or study; LthError for anything else."""
    if not path.is_dir():
        raise LthError(f"{str(path)!r} is not a directory; give an lth run or study directory")
    if StudyDir.is_study(path):
        return STUDY
    if not (path / "config.yaml").is_file():
        raise LthError(f"{str(path)!r} is not an lth run or study directory (it has no config.yaml or study.yaml)")
    try:
        config = RunDir(path).config()
    except LthError:  # names the file and what is wrong with it
        raise
    except Exception as error:  # unreadable YAML: foreign damage or not ours
        raise LthError(f"the config.yaml of {str(path)!r} cannot be read ({type(error).__name__})") from None
    kind = config.get("kind", TICKET) if isinstance(config, dict) else None
    if kind == BRANCH:  # a branch has a ticket search's layout
        return TICKET
    if kind not in (TICKET, SUPERMASK_EVAL, SUPERMASK_TRAIN, STABILITY):
        raise LthError(
            f"{str(path)!r} holds a run of unknown kind {kind!r}; lth draws find-ticket, "
            "supermask-eval, supermask-train and stability runs and studies"
        )
    return kind


def open_sources(paths: Sequence[str | Path]) -> list[Source]:
    """Sources for run/study directories, labelled by directory name (parents added where names clash)."""
    if not paths:
        raise LthError("no run given; give one or more run or study directories")
    resolved = [Path(p) for p in paths]
    kinds = [source_kind(p) for p in resolved]
    labels = [p.resolve().name or str(p) for p in resolved]
    for depth in (2, 3):
        if len(set(labels)) == len(labels):
            break
        labels = ["/".join(p.resolve().parts[-depth:]) for p in resolved]
    return [Source(p, k, label) for p, k, label in zip(resolved, kinds, labels)]


def subject(sources: Sequence[Source]) -> str:
    """What a figure of ``sources`` is about: the run's title, or e.g. '2 runs, 1 study'."""
    if len(sources) == 1:
        return sources[0].title
    studies = sum(s.kind == STUDY for s in sources)
    runs = len(sources) - studies
    parts = [
        f"{runs} run{'s' * (runs != 1)}" if runs else "",
        f"{studies} stud{'ies' if studies != 1 else 'y'}" if studies else "",
    ]
    return ", ".join(p for p in parts if p)


def file_stem(stem: str, source: Source, sources: Sequence[Source]) -> str:
    """``stem`` for a figure of one source; with several sources, its label is appended."""
    if len(sources) <= 1:
        return stem
    return f"{stem}--{re.sub(r'[^A-Za-z0-9._-]+', '_', source.label).strip('_')}"
