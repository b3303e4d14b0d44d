"""The blocks a report is made of, independent of its format (HTML, Markdown), and the number
formats they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Heading:
    text: str


@dataclass
class Text:
    """A paragraph; ``strong`` ones (a headline) are set in bold."""

    text: str
    strong: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """One image: ``name`` is a file stem unique within the report."""

    name: str
    png: bytes
    caption: str


@dataclass
class Details:
    """Blocks shown collapsed under a one-line ``summary`` (an HTML ``<details>`` element, in the
    Markdown report too: GitHub renders it)."""

    summary: str
    blocks: list[Any] = field(default_factory=list)


Block = Heading | Text | Table | Figure | Details


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    generated: str
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in _walk(s.blocks) if isinstance(b, Figure)]


def _walk(blocks: Sequence[Any]) -> list[Any]:
    """``blocks`` and, in their order, the blocks inside every :class:`Details` among them."""
    out: list[Any] = []
    for block in blocks:
        out.append(block)
        if isinstance(block, Details):
            out += _walk(block.blocks)
    return out


def pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""


def scalar(value: Any) -> str:
    """A config value as YAML would write it (lists joined)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(scalar(v) for v in value) if value else "[]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
