"""Reports on runs and studies: one self-contained HTML file, or Markdown with an image folder.

``content`` gathers the sections, results first (per run or study: a headline, the per-round or
statistics tables, the figures, then the configuration: non-default settings, the full one
collapsed); ``html`` and ``markdown`` render them. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lth.atomic import atomic_write_bytes, atomic_write_text
from lth.errors import LthError
from lth.report.blocks import Report
from lth.report.content import build_report
from lth.report.html import render_html
from lth.report.markdown import image_name, render_markdown

REPORT_FORMATS = ("html", "md")


def report_format(out: str | Path | None, fmt: str | None) -> str:
    """The format: given, else from the suffix of ``out`` (.md -> md), else html."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in REPORT_FORMATS:
            raise LthError(f"unknown report format {fmt!r}; choose html or md")
        return fmt
    return "md" if out is not None and Path(out).suffix.lower() in (".md", ".markdown") else "html"


def image_dir(out: Path) -> Path:
    """The folder of a Markdown report's images: ``report.md`` -> ``report_files/``."""
    return out.with_name(f"{out.stem}_files")


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, fmt: str | None = None) -> list[Path]:
    """Write a report on the given run/study directories to ``out`` (default ``report.html`` or
    ``report.md``); return the files written (the document first)."""
    fmt = report_format(out, fmt)
    target = Path(out) if out is not None else Path(f"report.{fmt}")
    if target.is_dir():
        raise LthError(f"--out {str(target)!r} is a directory; give a file name such as report.{fmt}")
    report = build_report(paths)
    try:
        if fmt == "html":
            atomic_write_text(target, render_html(report))
            return [target]
        folder = image_dir(target)
        written = []
        for figure in report.figures():
            path = folder / image_name(figure)
            atomic_write_bytes(path, figure.png)
            written.append(path)
        atomic_write_text(target, render_markdown(report, folder.name))
        return [target, *written]
    except OSError as error:
        raise LthError(f"cannot write the report to {str(target)!r}: {error.strerror or error}") from None


__all__ = ["REPORT_FORMATS", "Report", "build_report", "render_html", "render_markdown", "write_report"]
