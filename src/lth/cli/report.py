"""``lth report RUN... --out report.html``: one self-contained HTML file (or Markdown + images)."""
from __future__ import annotations

from typing import Optional

import click

from lth.cli.main import cli


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--out", type=str, help="Report file [report.html, or report.md with --format md].")
@click.option("--format", "fmt", type=str, help="html (one self-contained file) or md (Markdown + an image "
              "folder NAME_files/ beside it) [from the --out suffix, else html].")
def report_command(runs: tuple[str, ...], out: Optional[str], fmt: Optional[str]) -> None:
    """Write a report on run and study directories: configs, per-round tables, controls, statistics
    over trials and every figure that applies (several runs are also compared on shared axes).

    Example: lth report runs/a runs/b --out report.html
    """
    from lth.report import write_report

    written = write_report(list(runs), out, fmt)
    click.echo(str(written[0]))
