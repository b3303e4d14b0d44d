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
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

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


def new_figure(width: float = SIZE[0], height: float = SIZE[1], layout: str | None = "constrained") -> Figure:
    """A figure no pyplot state tracks (nothing to close, nothing leaks), drawn by Agg."""
    return Figure(figsize=(width, height), layout=layout)


def axes_or_new(ax: "Axes | None") -> "Axes":
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


def percent_axis(axis: Any) -> None:
    axis.set_major_formatter(FuncFormatter(percent))


def remaining_axis(ax: "Axes", levels: Iterable[float], label: str = "weights remaining (log scale)") -> None:
    """Weights remaining on a log x axis, decreasing to the right (as in the papers), ticks at the
    measured levels (at most ~8 labelled)."""
    levels = sorted({float(v) for v in levels if v and v > 0}, reverse=True)
    ax.set_xscale("log")
    if levels:
        ax.xaxis.set_major_locator(FixedLocator(spread_levels(levels)))
        if len(levels) == 1:
            ax.set_xlim(levels[0] * 1.25, levels[0] / 1.25)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(percent))
    ax.xaxis.set_minor_locator(NullLocator())  # the log decades' minor ticks would crowd the measured levels
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


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


def legend_below(ax: "Axes", ncol: int = 2, extra: Sequence[tuple[Any, str]] = ()) -> None:
    """The legend under the axes (lines that cross the whole plot leave no free inner corner);
    ``extra`` adds (handle, label) pairs such as proxies for bands."""
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = handles + [h for h, _ in extra], labels + [label for _, label in extra]
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=min(ncol, len(labels)),
                  fontsize="small", frameon=False)


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
        raise LthError(f"{str(path)!r} holds a run of unknown kind {kind!r}; lth draws find-ticket, "
                       "supermask-eval, supermask-train and stability runs and studies")
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
    parts = [f"{runs} run{'s' * (runs != 1)}" if runs else "",
             f"{studies} stud{'ies' if studies != 1 else 'y'}" if studies else ""]
    return ", ".join(p for p in parts if p)


def file_stem(stem: str, source: Source, sources: Sequence[Source]) -> str:
    """``stem`` for a figure of one source; with several sources, its label is appended."""
    if len(sources) <= 1:
        return stem
    return f"{stem}--{re.sub(r'[^A-Za-z0-9._-]+', '_', source.label).strip('_')}"
