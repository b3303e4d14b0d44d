"""A report as one self-contained HTML file: inline CSS, figures as base64 PNG data URIs, no
scripts and no external resources (it opens offline, from anywhere)."""

from __future__ import annotations

import base64
import re
from html import escape

from lth.report.blocks import Details, Figure, Heading, Report, Table, Text

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d1f21; max-width: 1180px; margin: 0 auto; padding: 1.2em 1.6em 3em; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-bottom: 0.2em; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.5em; color: #333; }
.meta { color: #57606a; font-size: 0.9em; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.6em 1.2em; }
nav ul { margin: 0.3em 0; padding-left: 1.2em; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.4em 0 1em; }
caption { text-align: left; font-weight: 600; padding: 0.2em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.settings td:first-child { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: nowrap; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.88em; margin-top: 0.3em; }
p.headline { font-size: 1.05em; font-weight: 600; margin: 0.4em 0; }
details { margin: 0.4em 0 1em; }
details > summary { cursor: pointer; font-weight: 600; color: #333; }
""".strip()

_NUMERIC = re.compile(r"^[-+]?[\d,.]+(%| ± [\d.]+%?)?$|^\[[-\d., ]+\]$")


def _cell(value: str, numbers: bool) -> str:
    css = ' class="num"' if numbers and _NUMERIC.match(value) else ""
    return f"<td{css}>{escape(value)}</td>"


def _table(table: Table) -> str:
    settings = table.headers[:1] in (["setting"], ["result"])  # key-value lists: left-aligned
    css = ' class="settings"' if settings else ""
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "\n".join("<tr>" + "".join(_cell(str(c), not settings) for c in row) + "</tr>" for row in table.rows)
    return (
        f'<div class="scroll"><table{css}>{caption}<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="{escape(figure.name)}"><img src="data:image/png;base64,{data}" '
        f'alt="{escape(figure.caption)}"><figcaption>{escape(figure.caption)}</figcaption></figure>'
    )


def _blocks(blocks: list) -> list[str]:
    """The elements of ``blocks``; a :class:`Details` as a ``<details>`` element, collapsed."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h3>{escape(block.text)}</h3>")
        elif isinstance(block, Text):
            css = ' class="headline"' if block.strong else ""
            parts.append(f"<p{css}>{escape(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Figure):
            parts.append(_figure(block))
        elif isinstance(block, Details):
            parts += [f"<details><summary>{escape(block.summary)}</summary>", *_blocks(block.blocks), "</details>"]
    return parts


def render_html(report: Report) -> str:
    """The whole document as a string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>{escape(report.title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(report.title)}</h1>",
        f'<p class="meta">{escape(report.generated)}</p>',
        "<nav><strong>Contents</strong><ul>",
        *(f'<li><a href="#{escape(s.anchor)}">{escape(s.title)}</a></li>' for s in report.sections),
        "</ul></nav>",
    ]
    for section in report.sections:
        parts.append(f'<section id="{escape(section.anchor)}">')
        parts.append(f"<h2>{escape(section.title)}</h2>")
        parts += _blocks(section.blocks)
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
