"""Reading the JSON and YAML files lth keeps (and the user's YAML) defensively.

Every problem becomes one :class:`~lth.errors.LthError` line naming the file and what is wrong:
unreadable, not UTF-8, empty, not parsing, nested too deeply, expanding through YAML aliases
into a huge structure (a "billion laughs"), or holding the wrong kind of value.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lth.errors import LthError

MAX_VALUES = 1_000_000  # at least this many values are allowed; a YAML alias bomb expands to billions
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: ~9x faster, as safe
DAMAGED_HINT = "restore it from a copy or run the experiment again"

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict = 2, 4, 4, 4
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 60, 60, 40


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in bounded time however big (or
    self-referencing) ``value`` is."""
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def count_values(data: Any, limit: int = MAX_VALUES) -> int:
    """How many values ``data`` holds, counting a shared list/dict (a YAML alias) every time it
    appears; stops early and returns ``limit + 1`` once past ``limit`` (or on a cycle)."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (list, dict)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        sizes[key] = limit + 1  # a container reached again while counting it: a cycle
        total = 1
        for item in value.values() if isinstance(value, dict) else value:
            total += size(item)
            if total > limit:
                break
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    try:
        return size(data)
    except RecursionError:
        return limit + 1


def damaged(path: str | Path, problem: str, hint: str = DAMAGED_HINT) -> LthError:
    """The error for a file lth wrote that has since been damaged."""
    return LthError(f"{str(path)!r} is damaged: {problem}; {hint}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


def parse_text(text: str, fmt: str) -> Any:
    """Parse ``text`` as ``json`` or ``yaml``; raise ValueError with a short reason when it does not."""
    try:
        return json.loads(text) if fmt == "json" else yaml.load(text, Loader=_SafeLoader)
    except json.JSONDecodeError as error:
        raise ValueError(f"it is not valid JSON ({error.msg}: line {error.lineno}, column {error.colno})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"it is not valid YAML ({_yaml_problem(error)})") from None
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def read_document(
    path: str | Path,
    expected: type | tuple[type, ...],
    check: Callable[[Any], str | None] | None = None,
    hint: str = DAMAGED_HINT,
) -> Any:
    """The parsed content of the JSON (``*.json``) or YAML file ``path``, of type ``expected``.

    ``check(data)`` may return a description of what else is wrong with it. Raises LthError
    ("'PATH' is damaged: WHAT; HINT") for anything unreadable or unexpected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise damaged(path, "it is not UTF-8 text", hint) from None
    except IsADirectoryError:
        raise damaged(path, "it is a directory, not a file", hint) from None
    except OSError as error:
        raise LthError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    if not text.strip():
        raise damaged(path, "it is empty", hint)
    fmt = "json" if path.suffix == ".json" else "yaml"
    try:
        data = parse_text(text, fmt)
    except ValueError as error:
        raise damaged(path, str(error), hint) from None
    # Without aliases a file holds fewer values than characters: more means an alias bomb. (A big
    # study's study.yaml holds millions of values, legitimately.)
    limit = max(MAX_VALUES, len(text))
    if fmt == "yaml" and count_values(data, limit) > limit:
        raise damaged(path, f"it expands to more than {limit} values (YAML aliases)", hint)
    if not isinstance(data, expected):
        raise damaged(path, f"it holds {_kind(data)}, not {_kind_name(expected)}", hint)
    problem = check(data) if check is not None else None
    if problem:
        raise damaged(path, problem, hint)
    return data


_KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true/false",
    type(None): "nothing",
}


def _kind_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_KINDS.get(t, t.__name__) for t in types)


def _kind(value: Any) -> str:
    return next((name for t, name in _KINDS.items() if type(value) is t), f"a {type(value).__name__}")


def is_number(value: Any) -> bool:
    """An int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(rows: list[Any], fields: dict[str, Callable[[Any], bool]], what: str = "row") -> str | None:
    """What is wrong with the first bad entry of ``rows`` (each a mapping with ``fields``
    passing their checks), or None."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return f"{what} {i} is {_kind(row)}, not a mapping"
        for name, ok in fields.items():
            if name not in row:
                return f"{what} {i} lacks {name!r}"
            if not ok(row[name]):
                return f"{what} {i} has {name} = {brief(row[name], 40)}"
    return None
