"""``lth runs``: list, show, compare, remove and reindex the runs of a runs root."""

from __future__ import annotations

import json
import math
import operator
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click
from tabulate import tabulate

from lth import jsonio
from lth.cli.main import cli
from lth.errors import LthError

_ROOT = click.option(
    "--root",
    type=str,
    default=lambda: os.environ.get("LTH_RUNS_ROOT", "runs"),
    show_default="$LTH_RUNS_ROOT or runs",
    help="The runs root (the directory holding the runs).",
)
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    "=": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(r"([^<>!=]*)(==|>=|<=|!=|=|>|<)(.*)", re.DOTALL)  # KEY, the first operator, VALUE
_NUMERIC_COLUMNS = ("weights_remaining", "test_accuracy", "duration")
_LIST_COLUMNS = (
    "id",
    "kind",
    "name",
    "model",
    "dataset",
    "status",
    "weights_remaining",
    "test_accuracy",
    "started",
    "duration",
)


def _index(root: str):
    from lth.store.index import RunIndex

    if not os.path.isdir(root):
        raise LthError(f"runs root {root!r} does not exist; give --root DIR or set $LTH_RUNS_ROOT")
    return RunIndex(root)


def _value(row: dict[str, Any], key: str) -> Any:
    if key in row and key not in ("config", "metrics"):
        return row[key]
    if key in row["config"]:
        return row["config"][key]
    return row["metrics"].get(key)


def _keys(rows: list[dict[str, Any]]) -> set[str]:
    keys = {k for k in _LIST_COLUMNS} | {"path", "finished"}
    for row in rows:
        keys |= set(row["config"]) | set(row["metrics"])
    return keys


def _column_type(rows: list[dict[str, Any]], key: str) -> str:
    """How --where reads values for ``key``: ``number``, ``boolean`` or ``text`` (from the index
    columns' types, else from the values the rows hold)."""
    if key in _NUMERIC_COLUMNS:
        return "number"
    if key in _LIST_COLUMNS or key in ("path", "finished"):
        return "text"
    values = [value for value in (_value(row, key) for row in rows) if value is not None]
    if values and all(isinstance(value, bool) for value in values):
        return "boolean"
    if values and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return "number"
    return "text"


def _texts(value: Any) -> set[str]:
    """The ways a user may write ``value`` after KEY= (a list as a,b or [a, b] or JSON)."""
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
        return {",".join(items), ", ".join(items), f"[{', '.join(items)}]", json.dumps(value, default=str)}
    if isinstance(value, dict):
        return {json.dumps(value, default=str), str(value)}
    return {str(value)}


def _wanted(condition: str, key: str, kind: str, symbol: str, text: str) -> Any:
    """The value of a --where condition read as ``key``'s type (None: "no value", for = and !=)."""
    ordering = symbol not in ("=", "==", "!=")
    if text.lower() in ("", "null", "none"):
        if ordering:
            raise LthError(f"--where {condition!r} compares {key} with no value; give one after {symbol}")
        return None
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            raise LthError(f"--where {condition!r}: {key} is numeric and {text!r} is not a number")
        return number
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise LthError(f"--where {condition!r}: {key} is true or false, not {text!r}")
        if ordering:
            raise LthError(f"--where {condition!r}: {key} is true or false; compare it with = or !=")
        return text.lower() == "true"
    return text


def _filter(rows: list[dict[str, Any]], conditions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows meeting every KEY<op>VALUE condition; VALUE is read as KEY's type (see :func:`_column_type`)."""
    known = _keys(rows)
    for condition in conditions:
        match = _CONDITION.match(condition)
        if match is None:
            raise LthError(f"cannot read filter {condition!r}; write KEY=VALUE (or !=, <, <=, >, >=)")
        key, symbol, text = match.group(1).strip().replace("-", "_"), match.group(2), match.group(3).strip()
        if key not in known:
            raise LthError(f"unknown key {key!r} in --where; known keys: {', '.join(sorted(known))}")
        kind = _column_type(rows, key)
        wanted = _wanted(condition, key, kind, symbol, text)
        compare = _OPERATORS[symbol]

        def keep(
            row: dict[str, Any],
            key: str = key,
            kind: str = kind,
            wanted: Any = wanted,
            text: str = text,
            compare: Callable[[Any, Any], bool] = compare,
        ) -> bool:
            value = _value(row, key)
            if compare in (operator.eq, operator.ne):
                if wanted is None:
                    same = value is None or (isinstance(value, str) and value == text)
                elif kind == "number":
                    same = isinstance(value, (int, float)) and not isinstance(value, bool) and value == wanted
                elif kind == "boolean":
                    same = value is wanted
                else:
                    same = value is not None and wanted in _texts(value)
                return same if compare is operator.eq else not same
            if kind == "number":
                return isinstance(value, (int, float)) and not isinstance(value, bool) and compare(value, wanted)
            return value is not None and compare(str(value), wanted)

        rows = [row for row in rows if keep(row)]
    return rows


def _percent(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


@cli.group("runs")
def runs() -> None:
    """Find, compare and remove runs through the results index of a runs root."""


@runs.command("list")
@_ROOT
@click.option(
    "--where",
    "conditions",
    multiple=True,
    help="Filter KEY=VALUE (or !=, <, <=, >, >=) on a column, config key or metric; repeatable.",
)
@click.option("--sort", type=str, default="started", show_default=True, help="Sort key; prefix - for descending.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def list_command(root: str, conditions: tuple[str, ...], sort: str, as_json: bool) -> None:
    """List the runs in the runs root (find-ticket, robust, session, supermask, stability).

    Example: lth runs list --where criterion=movement --where rounds>=10 --sort -test_accuracy
    """
    rows = _index(root).all()
    rows = _filter(rows, conditions)
    key, reverse = sort.lstrip("-").replace("-", "_"), sort.startswith("-")
    if rows and key not in _keys(rows):
        raise LthError(f"unknown sort key {key!r}; known keys: {', '.join(sorted(_keys(rows)))}")
    rows.sort(
        key=lambda r: (_value(r, key) is None, _value(r, key) if _value(r, key) is not None else 0), reverse=reverse
    )
    if as_json:
        click.echo(jsonio.dumps(rows, indent=2, default=str))
        return
    table = [
        [
            r["id"],
            r["kind"],
            r["name"] or r["path"],
            r["model"],
            r["dataset"],
            r["status"],
            _percent(r["weights_remaining"]),
            _percent(r["test_accuracy"]),
            (r["started"] or "")[:19],
            "" if r["duration"] is None else f"{r['duration']:.0f}s",
        ]
        for r in rows
    ]
    click.echo(
        tabulate(
            table,
            headers=[
                "id",
                "kind",
                "name",
                "model",
                "dataset",
                "status",
                "weights left",
                "test acc",
                "started",
                "duration",
            ],
        )
    )


@runs.command("show")
@click.argument("run_id")
@_ROOT
@click.option("--json", "as_json", is_flag=True, help="Print the index row and the run as JSON.")
def show_command(run_id: str, root: str, as_json: bool) -> None:
    """Show one run by id (or id prefix, name or path): its index entry and its results."""
    from lth.cli.show import print_run, run_or_study_json

    index = _index(root)
    row = index.get(run_id)
    path = index.root / row["path"]
    if as_json:
        click.echo(jsonio.dumps({"index": row, **run_or_study_json(path)}, indent=2, default=str))
        return
    click.echo(f"{row['id']}  {row['path']}  ({row['kind']}, {row['status']})")
    print_run(path)


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@_ROOT
@click.option(
    "--metric",
    type=str,
    default="test_accuracy_at_early_stop",
    show_default=True,
    help="Per-level metric to put side by side.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(run_ids: tuple[str, ...], root: str, metric: str, as_json: bool) -> None:
    """Compare runs side by side: the config keys that differ, then the metric per weights-remaining level."""
    from lth.store.compare import compare_runs

    if len(run_ids) < 2:
        raise LthError("compare needs at least two run ids")
    index = _index(root)
    rows = [index.get(identifier) for identifier in run_ids]
    for row in rows:
        if row["kind"] == "stability":  # its results are per (level, rewind point), not per round
            raise LthError(
                f"run {row['id']} ({row['path']}) is a stability run: lth runs compare compares ticket "
                f"searches and studies round by round; see its results with `lth runs show {row['id']}` "
                "or `lth report`"
            )
    known = _known_metrics(index.root, rows)
    if known and metric not in known:
        raise LthError(f"unknown metric {metric!r} for --metric; these runs have: {', '.join(sorted(known))}")
    result = compare_runs(index.root, rows, metric)
    if as_json:
        click.echo(jsonio.dumps(result, indent=2, default=str))
        return
    labels = [row["id"] for row in rows]
    if result["config_differences"]:
        click.echo("config differences:")
        click.echo(
            tabulate(
                [[key, *[_short(v) for v in values]] for key, values in result["config_differences"].items()],
                headers=["key", *labels],
            )
        )
    else:
        click.echo("config differences: none")
    click.echo("")
    click.echo(f"{metric} per level:")
    # Every line of a run (its controls, branches) gets its own column of values; its weights
    # left only where they differ from those of its run's (or study experiment's) first column.
    first: dict[str, int] = {}
    weights = []
    for i, group in enumerate(result["column_groups"]):
        j = first.setdefault(group, i)
        if i == j or any(
            level["weights_remaining"][i] not in (None, level["weights_remaining"][j]) for level in result["levels"]
        ):
            weights.append(i)
    headers = ["round", *[f"{result['columns'][i]} weights left" for i in weights], *result["columns"]]
    table = [
        [
            level["round"],
            *[_percent(level["weights_remaining"][i]) for i in weights],
            *[_percent(v) for v in level["values"]],
        ]
        for level in result["levels"]
    ]
    click.echo(tabulate(table, headers=headers))


def _known_metrics(root: Any, rows: list[dict[str, Any]]) -> set[str]:
    """The per-level metrics the runs have: numeric keys of a run's rounds, a study's summary metrics."""
    from lth.documents import is_number
    from lth.store.run_dir import RunDir
    from lth.store.study_dir import StudyDir

    known: set[str] = set()
    for row in rows:
        path = root / row["path"]
        if StudyDir.is_study(path):
            known |= {entry["metric"] for entry in StudyDir(path).summary()}
        else:
            known |= {k for r in RunDir(path).rounds() for k, v in r.items() if is_number(v) and k != "round"}
    return known


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


@runs.command("rm")
@click.argument("run_ids", nargs=-1, required=True)
@_ROOT
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rm_command(run_ids: tuple[str, ...], root: str, yes: bool) -> None:
    """Delete runs: lth's files in their directories, and their index entries.

    Only run and study directories inside the runs root that lth created (they carry its marker)
    are touched, never one that a running lth process holds; files lth did not write are kept.
    """
    from lth.store.ownership import describe_kept

    index = _index(root)
    rows = [index.get(identifier) for identifier in run_ids]
    if not yes:
        if not sys.stdin.isatty():
            raise LthError("lth runs rm deletes run directories; pass --yes to confirm when not at a terminal")
        click.confirm(f"delete {', '.join(r['path'] for r in rows)}?", abort=True)
    for row in rows:
        _, kept = index.remove(row["id"])
        click.echo(f"removed {row['id']} ({row['path']})")
        if kept:
            click.echo(
                f"lth: warning: kept {len(kept)} entries that lth did not write: {describe_kept(kept)}", err=True
            )


@runs.command("reindex")
@_ROOT
def reindex_command(root: str) -> None:
    """Rebuild the index from the run directories (also repairs a corrupt index).

    Damaged runs do not stop it: the others are indexed and the damaged ones listed.
    """
    count, damaged = _index(root).reindex()
    click.echo(f"indexed {count} runs in {root}")
    for path, reason in damaged:
        click.echo(f"lth: warning: not indexed, damaged: {path}: {reason}", err=True)
