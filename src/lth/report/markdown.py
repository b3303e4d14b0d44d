"""A report as Markdown (GitHub pipe tables) with its figures as PNG files in a folder beside it."""

from __future__ import annotations

from html import escape

from lth.report.blocks import Details, Figure, Heading, Report, Table, Text


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> str:
    lines = [f"*{_escape(table.caption)}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def image_name(figure: Figure) -> str:
    return f"{figure.name}.png"


def render_markdown(report: Report, image_dir: str) -> str:
    """The document; figures are linked as ``image_dir/NAME.png`` (relative to the .md file)."""
    parts = [f"# {report.title}", "", f"_{report.generated}_", "", "Contents:", ""]
    parts += [f"- [{s.title}](#{s.anchor})" for s in report.sections]
    for section in report.sections:
        parts += ["", f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        parts += _blocks(section.blocks, image_dir)
    return "\n".join(parts).rstrip() + "\n"


def _blocks(blocks: list, image_dir: str) -> list[str]:
    """The lines of ``blocks``; a :class:`Details` as an HTML ``<details>`` element, which GitHub
    renders collapsed (the blank lines around its content let the Markdown inside be read)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts += [f"### {block.text}", ""]
        elif isinstance(block, Text):
            parts += [f"**{block.text}**" if block.strong else block.text, ""]
        elif isinstance(block, Table):
            parts += [_table(block), ""]
        elif isinstance(block, Figure):
            parts += [
                f"![{_escape(block.caption)}]({image_dir}/{image_name(block)})",
                "",
                f"*{_escape(block.caption)}*",
                "",
            ]
        elif isinstance(block, Details):
            parts += [
                "<details>",
                f"<summary>{escape(block.summary)}</summary>",
                "",
                *_blocks(block.blocks, image_dir),
                "</details>",
                "",
            ]
    return parts
