"""A report as Markdown (GitHub pipe tables) with its figures as PNG files in a folder beside it."""
from __future__ import annotations

from lth.report.content import Figure, Heading, Report, Table, Text


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
        for block in section.blocks:
            if isinstance(block, Heading):
                parts += [f"### {block.text}", ""]
            elif isinstance(block, Text):
                parts += [block.text, ""]
            elif isinstance(block, Table):
                parts += [_table(block), ""]
            elif isinstance(block, Figure):
                parts += [f"![{_escape(block.caption)}]({image_dir}/{image_name(block)})", "",
                          f"*{_escape(block.caption)}*", ""]
    return "\n".join(parts).rstrip() + "\n"
