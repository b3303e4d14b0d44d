"""``lth plot RUN...``: figures of runs and studies, several overlaid on one figure."""

from __future__ import annotations

import click

from lth.cli.main import cli
from lth.errors import LthError


def parse_round(text: str | None) -> int | None:
    """``--round`` as an int (None when not given)."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise LthError(f"--round {text!r} is not a whole number; give a round index such as 1") from None
    if value < 0:
        raise LthError(f"--round {value} is invalid; rounds are numbered from 0")
    return value


def _kinds_help() -> str:
    from lth.plots import KINDS

    return "\n".join(f"  {name:<16} {kind.description}" for name, kind in KINDS.items())


@cli.command(
    "plot",
    help=f"""Draw figures of run or study directories (several are overlaid on one figure).

\b
Kinds (--kind, repeat or comma-separate; default all that apply):
{_kinds_help()}

Examples: lth plot runs/a runs/b --kind accuracy --out figs/;  lth plot runs/a --kind weights-scatter --round 3""",
)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--kind", "kinds", multiple=True, metavar="KIND", help="Plot kind(s) to draw [all].")
@click.option("--out", type=str, help="Output directory [the run directory for one run, else plots/].")
@click.option("--format", "formats", default="png,svg", show_default=True, help="Image formats: png, svg or png,svg.")
@click.option(
    "--round",
    "round_text",
    type=str,
    metavar="N",
    help="Round for weights-scatter, weights-hist (the pruning into round N) and first-layer [last].",
)
def plot_command(
    runs: tuple[str, ...], kinds: tuple[str, ...], out: str | None, formats: str, round_text: str | None
) -> None:
    from lth.plots import make_plots

    result = make_plots(list(runs), list(kinds) or None, out, formats.split(","), parse_round(round_text))
    for path in result.written:
        click.echo(str(path))
    for kind, source, reason in result.skipped:
        click.echo(f"lth: skipped {kind} for {str(source.path)!r}: {reason}", err=True)
