"""``lth report RUN... --out report.html``: one self-contained HTML file (or Markdown + images)."""

from __future__ import annotations

import click

from lth.cli.main import cli


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--out", type=str, help="Report file [report.html, or report.md with --format md].")
@click.option(
    "--format",
    "fmt",
    type=str,
    help="html (one self-contained file) or md (Markdown + an image "
    "folder NAME_files/ beside it) [from the --out suffix, else html].",
)
def report_command(runs: tuple[str, ...], out: str | None, fmt: str | None) -> None:
    """Write a report on run and study directories, results first: per run or study a headline
    (the best ticket, i.e. the sparsest level at most 0.5 points below the dense accuracy, and the
    best-accuracy level, against dense and the controls), the per-round tables, controls and
    statistics over trials, every figure that applies, and last the configuration (settings that
    differ from the defaults, then the full configuration collapsed). Several runs are also
    compared on shared axes, after a summary of every headline.

    Example: lth report runs/a runs/b --out report.html
    """
    from lth.report import write_report

    written = write_report(list(runs), out, fmt)
    click.echo(str(written[0]))
