"""The results index: one SQLite file per runs root listing every run directory in it.

The run directories stay the source of truth; the index is a cache of what they say (kind,
config, status, times, headline metrics) that makes listing, filtering and comparing hundreds
of runs instant. It is updated whenever a run writes its status (start, resume, end), and
``lth runs reindex`` rebuilds it from the directories. Several processes may write into one
runs root at once: SQLite serialises the writes (WAL journal, generous busy timeout), and a
run's row is written only by that run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lth import jsonio
from lth.errors import LthError
from lth.store.ownership import check_owned, remove_owned
from lth.store.run_dir import STATUS_LISTENERS, RunDir, runs_root
from lth.store.stability_rows import read_entries
from lth.store.study_dir import StudyDir
from lth.store.supermask_rows import read_rows

INDEX_FILE = "lth-index.sqlite"
SCHEMA_VERSION = 1
_COLUMNS = (
    "id",
    "path",
    "kind",
    "name",
    "model",
    "dataset",
    "status",
    "started",
    "finished",
    "duration",
    "weights_remaining",
    "test_accuracy",
    "config",
    "metrics",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,          -- relative to the runs root
    kind TEXT NOT NULL,                 -- find-ticket | branch | robust | session | supermask-eval | supermask-train
    name TEXT, model TEXT, dataset TEXT,
    status TEXT, started TEXT, finished TEXT,
    duration REAL,                      -- seconds from start to finish
    weights_remaining REAL,             -- of the last finished round (find-ticket, studies)
    test_accuracy REAL,                 -- headline: at early stop, last round (studies: mean)
    config TEXT NOT NULL,               -- JSON
    metrics TEXT NOT NULL               -- JSON: headline metrics of this kind
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def _retry(action: Callable[[], Any], attempts: int = 20) -> Any:
    """Run ``action``, retrying while another process holds a lock SQLite does not wait for
    (e.g. a journal-mode switch); the busy timeout covers the ordinary waits."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def run_id(relative_path: str) -> str:
    """A short id that depends only on where the run lives, so ``reindex`` keeps ids stable."""
    return hashlib.sha1(relative_path.encode()).hexdigest()[:8]


def describe_run(path: Path) -> dict[str, Any] | None:
    """The index row of a run or study directory, read from its files; None if it is neither."""
    if StudyDir.is_study(path):
        study = StudyDir(path)
        description, status = study.study(), study.status()
        first = description["experiments"][0]["runs"][0]["config"] if description["experiments"] else {}
        config = {"kind": description["kind"], "name": description.get("name"), **description.get("spec", {})}
        summary = [
            r
            for r in study.summary()  # the tickets' (not their controls') accuracy
            if r["metric"] == "test_accuracy_at_early_stop" and r["line"] == "ticket"
        ]
        last = max((r["round"] for r in summary), default=None)
        best = [r for r in summary if r["round"] == last]
        metrics: dict[str, Any] = {
            "runs_total": status.get("runs_total"),
            "runs_complete": status.get("runs_complete"),
            "experiments": len(description["experiments"]),
        }
        row = dict(
            kind=description["kind"],
            name=description.get("name"),
            model=first.get("model"),
            dataset=first.get("dataset"),
            config=config,
            metrics=metrics,
            weights_remaining=best[0]["weights_remaining"] if best else None,
            test_accuracy=max(r["mean"] for r in best) if best else None,
        )
    elif (path / "config.yaml").is_file():
        run = RunDir(path)
        try:
            config = run.config()
        except yaml.YAMLError:
            return None
        if not isinstance(config, dict):
            return None
        status = run.status()
        kind = config.get("kind", "find-ticket")
        metrics = {}
        weights_remaining = test_accuracy = None
        if kind in ("find-ticket", "branch"):
            rounds = run.rounds()
            if rounds:
                last = rounds[-1]
                weights_remaining, test_accuracy = last["weights_remaining"], last["test_accuracy_at_early_stop"]
                metrics = {
                    "rounds": len(rounds),
                    "final_test_accuracy": last["final_test_accuracy"],
                    "early_stop_iteration": last["early_stop_iteration"],
                    "dense_test_accuracy": rounds[0]["test_accuracy_at_early_stop"],
                }
        elif kind == "supermask-train":
            summary_path = path / "supermask_train.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
                weights_remaining, test_accuracy = summary.get("density"), summary.get("test_accuracy_expected")
                metrics = {k: summary.get(k) for k in ("test_accuracy_sampled_mean", "test_accuracy_sampled_std")}
        elif kind == "supermask-eval":
            rows = read_rows(run) if (path / "supermask_eval.json").is_file() else []
            if rows:
                top = max(rows, key=lambda r: r["test_accuracy"])
                test_accuracy, weights_remaining = top["test_accuracy"], top["weights_remaining"]
                metrics = {"best": {k: top[k] for k in ("criterion", "keep", "weights")}, "cells": len(rows)}
        elif kind == "stability":
            entries = read_entries(run)
            metrics = {
                "entries": len(entries),
                "stable": sum(bool(e.get("stable")) for e in entries),
                "max_instability_test": max((e["instability_test"] for e in entries), default=None),
            }
            if entries:
                # the sparsest level, at its latest rewind point: the children's mean test accuracy
                sparsest = min(entries, key=lambda e: (e["weights_remaining"], -e["rewind_iteration"]))
                weights_remaining = sparsest["weights_remaining"]
                error = sparsest.get("child_test_error")
                test_accuracy = 1 - error if isinstance(error, (int, float)) and not isinstance(error, bool) else None
        row = dict(
            kind=kind,
            name=config.get("name"),
            model=config.get("model"),
            dataset=config.get("dataset"),
            config=config,
            metrics=metrics,
            weights_remaining=weights_remaining,
            test_accuracy=test_accuracy,
        )
    else:
        return None
    started, finished = status.get("started"), status.get("finished")
    duration = None
    if started and finished:
        duration = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return {
        **row,
        "status": status.get("status", "unknown"),
        "started": started,
        "finished": finished,
        "duration": duration,
    }


class RunIndex:
    """The index of one runs root (the directory holding the run directories)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX_FILE

    # -- connection -----------------------------------------------------------------
    def _connect(self, repairing: bool = False) -> sqlite3.Connection:
        """A connection in autocommit mode (WAL journal, long busy timeout); a corrupt file gives an
        LthError (``repairing``: the sqlite3.DatabaseError itself, for :meth:`reindex`)."""
        if not self.path.exists():  # SQLite would create it 0644 at most; create it as the umask says
            from lth.atomic import current_umask

            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666 & ~current_umask()))
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 60000")
            # Switching the journal and creating the table take write locks: only when needed,
            # so that concurrent writers mostly just read here.
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                _retry(lambda: connection.execute("PRAGMA journal_mode = WAL"))
            if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone() is None:
                _retry(lambda: connection.executescript(_SCHEMA))
        except sqlite3.OperationalError:
            connection.close()
            raise
        except sqlite3.DatabaseError:
            connection.close()
            if repairing:
                raise
            raise LthError(
                f"results index {str(self.path)!r} is corrupt or not an lth index; "
                f"rebuild it with `lth runs reindex --root {self.root}`"
            ) from None
        return connection

    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with closing(self._connect()) as connection:
            try:
                cursor = connection.execute(sql, params)
                names = [c[0] for c in cursor.description]
                rows = [dict(zip(names, values)) for values in cursor.fetchall()]
            except sqlite3.DatabaseError:
                raise LthError(
                    f"results index {str(self.path)!r} is corrupt; rebuild it with "
                    f"`lth runs reindex --root {self.root}`"
                ) from None
        for row in rows:
            bad = None
            for column in ("config", "metrics"):
                try:
                    row[column] = json.loads(row[column]) if isinstance(row[column], str) else None
                except (ValueError, RecursionError):
                    row[column] = None
                if not isinstance(row[column], dict):
                    bad = bad or column
            numbers = ("weights_remaining", "test_accuracy", "duration")
            bad = bad or next((c for c in numbers if not isinstance(row.get(c), (int, float, type(None)))), None)
            bad = bad or next((c for c in ("id", "path", "kind") if not isinstance(row.get(c), str)), None)
            if bad:
                raise LthError(
                    f"results index {str(self.path)!r} is damaged: the {bad} of run {row.get('path')!r} "
                    f"is not what lth writes; rebuild it with `lth runs reindex --root {self.root}`"
                )
        return rows

    # -- writing ----------------------------------------------------------------------
    def key(self, run_path: str | Path) -> str:
        """How the index names a run: its path relative to the root when inside it, else absolute."""
        resolved, root = Path(run_path).resolve(), self.root.resolve()
        return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)

    def register(self, run_path: str | Path) -> str | None:
        """Insert or update the row of the run at ``run_path`` (inside this root or elsewhere); return its id."""
        run_path = Path(run_path)
        row = describe_run(run_path)
        if row is None:
            return None
        key = self.key(run_path)
        self.root.mkdir(parents=True, exist_ok=True)

        def write() -> None:
            with closing(self._connect()) as connection:
                self._upsert(connection, key, row)

        _retry(write)
        return run_id(key)

    @staticmethod
    def _upsert(connection: sqlite3.Connection, relative: str, row: dict[str, Any]) -> None:
        values = {
            **row,
            "id": run_id(relative),
            "path": relative,
            "config": jsonio.dumps(row["config"], default=str),
            "metrics": jsonio.dumps(row["metrics"], default=str),
        }
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "id")
        connection.execute(
            f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders}) ON CONFLICT(id) DO UPDATE SET {updates}",
            tuple(values[c] for c in _COLUMNS),
        )

    def reindex(self) -> tuple[int, list[tuple[str, str]]]:
        """Rebuild the index from the run directories; return (runs indexed, [(path, why)] of damaged ones).

        The rebuild is one write transaction on the index file itself, so processes registering
        runs meanwhile wait for it (SQLite's lock) and lose nothing. Runs registered from outside
        the root are kept while their directories exist. Only an index SQLite cannot open is
        replaced; it is kept beside as ``lth-index.sqlite.corrupt-TIME``.
        """
        if not self.root.is_dir():
            raise LthError(f"runs root {str(self.root)!r} does not exist")
        try:
            return _retry(self._rebuild)
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
                raise LthError(
                    f"results index {str(self.path)!r} stayed locked by another process; try again"
                ) from None
            self._set_aside()
            return _retry(self._rebuild)

    def _rebuild(self) -> tuple[int, list[tuple[str, str]]]:
        """Read every run first (no lock held), then apply the result in one short write transaction.

        Inside it, runs whose files changed since they were read are read again, rows of runs
        registered meanwhile are kept, and rows of directories that are gone are dropped; so a
        writer registering a run at any moment neither waits long nor loses its row.
        """
        with closing(self._connect(repairing=True)) as connection:
            listed = [r[0] for r in connection.execute("SELECT path FROM runs")]
        found = list(_run_dirs(self.root))
        keys = {self.key(path) for path in found}
        # runs registered deeper in the root or outside it (--out elsewhere) stay while they exist
        paths = [*found, *(self.root / key for key in listed if key not in keys)]
        damaged: dict[str, str] = {}
        scanned: dict[str, tuple[Path, tuple, dict[str, Any]]] = {}

        def read(path: Path) -> None:
            key, signature = self.key(path), _signature(path)
            try:
                row = describe_run(path)
            except Exception as error:  # a damaged run must not stop the repair of the others
                damaged[key] = _reason(error)
                scanned.pop(key, None)
                return
            damaged.pop(key, None)
            if row is not None:
                scanned[key] = (path, signature, row)

        for path in paths:
            read(path)
        with closing(self._connect(repairing=True)) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for path, signature, _ in list(scanned.values()):
                    if _signature(path) != signature:  # written since it was read
                        read(path)
                for (key,) in connection.execute("SELECT path FROM runs").fetchall():
                    if key in damaged or (key not in scanned and not _is_run(self.root / key)):
                        connection.execute("DELETE FROM runs WHERE path = ?", (key,))
                for key, (_, _, row) in scanned.items():
                    self._upsert(connection, key, row)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return len(scanned), sorted(damaged.items())

    def _set_aside(self) -> None:
        """Move a corrupt index (and its journal files) aside, never deleting them."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, source.with_name(f"{source.name}.corrupt-{stamp}"))
        print(
            f"lth: warning: the results index {str(self.path)!r} could not be opened; kept it as "
            f"{INDEX_FILE}.corrupt-{stamp} and built a new one",
            file=sys.stderr,
        )

    def remove(self, identifier: str) -> tuple[dict[str, Any], list[Path]]:
        """Delete a run: lth's files in its directory, then its row; return (row, entries kept).

        Only a directory inside the runs root that carries lth's marker is touched, never one
        an lth process is using, never through a symbolic link; files lth did not write stay.
        """
        row = self.get(identifier)
        target = self.root / row["path"]
        root = self.root.resolve()
        if os.path.isabs(row["path"]) or not target.resolve().is_relative_to(root) or target.resolve() == root:
            raise LthError(
                f"run {row['id']} is at {str(target)!r}, outside the runs root {str(self.root)!r}; "
                "lth runs rm deletes only runs inside the root (delete it yourself, then run "
                "`lth runs reindex`)"
            )
        if any(
            part.is_symlink()
            for part in [target, *target.parents]
            if part.resolve().is_relative_to(root) and part.resolve() != root
        ):
            raise LthError(
                f"run {row['id']} is at {str(target)!r}, reached through a symbolic link; "
                "lth runs rm deletes only real directories"
            )
        kept: list[Path] = []
        if target.exists():
            layout = check_owned(target, "run directory")
            kept = remove_owned(target, layout)
        # Runs inside it (a study's trials, a search's branches) are gone with it, unless kept.
        inside = [
            r["id"]
            for r in self._rows("SELECT * FROM runs")
            if r["path"].startswith(row["path"].rstrip("/") + "/") and not (self.root / r["path"]).exists()
        ]
        with closing(self._connect()) as connection:
            _retry(
                lambda: connection.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in [row["id"], *inside]])
            )
        return row, kept

    # -- reading ----------------------------------------------------------------------
    def all(self) -> list[dict[str, Any]]:
        """Every row, with the status of unfinished runs refreshed from their directories."""
        rows = self._rows("SELECT * FROM runs ORDER BY started, path")
        for row in rows:
            if row["status"] not in ("complete",):
                try:
                    fresh = describe_run(self.root / row["path"])
                except Exception as error:  # a damaged run is listed as such, not a crash of the listing
                    row["status"], row["damage"] = "damaged", _reason(error)
                    continue
                if fresh is None:
                    row["status"] = "missing"
                elif fresh["status"] != row["status"]:
                    self.register(self.root / row["path"])
                    row.update({**fresh, "id": row["id"], "path": row["path"]})
        return rows

    def get(self, identifier: str) -> dict[str, Any]:
        """The row whose id, id prefix, path or name is ``identifier``."""
        rows = self.all()
        exact = [r for r in rows if identifier in (r["id"], r["path"], r["name"])]
        matches = exact or [r for r in rows if r["id"].startswith(identifier)]
        if not matches:
            raise LthError(
                f"no run {identifier!r} in the index of {str(self.root)!r}; "
                "`lth runs list` shows the ids (or `lth runs reindex` if runs are missing)"
            )
        if len(matches) > 1:
            raise LthError(f"run id {identifier!r} is ambiguous: it matches {', '.join(r['id'] for r in matches)}")
        return matches[0]


def _signature(path: Path) -> tuple:
    """What changes when a run writes: the (mtime, size, inode) of the files its row is read from."""
    out: list[tuple[int, int, int] | None] = []
    for name in ("status.json", "config.yaml", "rounds.json", "study.yaml", "summary.json", "stability.json"):
        try:
            stat = (path / name).stat()
            out.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _is_run(path: Path) -> bool:
    """Whether ``path`` still holds a run or study (cheap: no file is parsed)."""
    try:
        return (path / "config.yaml").is_file() or (path / "study.yaml").is_file()
    except OSError:
        return False


def _reason(error: BaseException) -> str:
    """A damaged run's error as a short line."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if isinstance(error, LthError) else f"{type(error).__name__}: {text}"[:300]


def _run_dirs(root: Path) -> Iterator[Path]:
    """Run and study directories directly inside ``root`` (a study's trials belong to the study)."""
    for path in sorted(root.iterdir()):
        if path.is_dir() and _is_run(path):
            yield path


def inside_study(path: Path) -> bool:
    return any(StudyDir.is_study(parent) for parent in list(path.resolve().parents)[:2])


def index_run(path: str | Path) -> None:
    """Keep the index of the runs root (:func:`~lth.store.run_dir.runs_root`) in step with the run
    at ``path``, wherever it is (called on every status write).

    Runs inside a study are indexed through the study. A broken index never stops a run: it
    gets a warning, and ``lth runs reindex`` repairs it.
    """
    path = Path(path)
    if os.environ.get("LTH_NO_INDEX") or inside_study(path):
        return
    try:
        RunIndex(runs_root()).register(path)
    except (LthError, sqlite3.Error, OSError) as error:
        print(f"lth: warning: run not indexed ({error})", file=sys.stderr)


STATUS_LISTENERS.append(index_run)  # every status write (RunDir, StudyDir) updates the index
