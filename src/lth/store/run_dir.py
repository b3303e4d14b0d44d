"""The layout of one run directory; the only code that knows file names."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lth import jsonio
from lth.atomic import atomic_torch_save, atomic_write_csv, atomic_write_text
from lth.documents import damaged, read_document, row_problem
from lth.errors import LthError
from lth.store.file_checks import (
    METRIC_FIELDS,
    ROUND_FIELDS,
    checkpoint_problem,
    metric_row,
    status_problem,
    tensor_map_problem,
)

if TYPE_CHECKING:  # torch is imported by the methods that read or write tensors: reading a run's
    import torch  # tables (``lth show``, ``lth runs``) stays free of it

    from lth.masks import Mask


PRUNE_AT_INIT_FILE = "prune_at_init.json"

#: Called with the directory of every run or study that wrote its ``status.json``. The results
#: index (:mod:`lth.store.index`) adds itself when ``lth.store`` is imported.
STATUS_LISTENERS: list[Callable[[Path], None]] = []


def status_written(path: Path) -> None:
    """Tell the :data:`STATUS_LISTENERS` that ``path`` wrote its status."""
    for listener in STATUS_LISTENERS:
        listener(path)


class RunDir:
    """A directory holding one run: config, metrics, per-round summary, masks, weights, plots.

    Layout::

        config.yaml            the resolved configuration
        .lth-dir.json          lth's marker: only a marked directory is ever replaced or deleted
        .lth-lock              held by the process writing the run (lth.store.lock)
        status.json            {"status": "running"|"complete"|"diverged"|"failed", "started": ...,
                               "finished": ..., "error": ...}
        metrics.csv            round, iteration, split (train/val/test), loss, accuracy
        rounds.json            per-round summary (what ``lth show`` prints)
        masks/round_NN.pt      the mask trained in round NN ({param name: bool tensor})
        weights/init.pt        the initial state dict (w_0)
        weights/rewind.pt      the state dict at the rewind point (when rewinding to k > 0)
        weights/final_round_NN.pt  the state dict at the end of round NN
        controls/NAME/         each control (reinit, random-prune): its metrics.csv, rounds.json, masks/
        branches/NAME/         each branch run off this search (lth branch): a run directory of its own
        checkpoint.pt          the latest resume point (while the run is unfinished)
        *.png                  plots
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """Make a fresh run directory, marked as lth's; refuse an existing non-empty one unless
        ``overwrite``, and then replace only an lth run's own files (see :mod:`lth.store.ownership`)."""
        from lth.store.ownership import claim_directory

        return cls(claim_directory(path, "run", overwrite))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / "config.yaml").is_file():
            raise LthError(f"{str(path)!r} is not an lth run directory (no config.yaml)")
        return run

    # -- writing ----------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def write_status(self, **fields: Any) -> None:
        """Write ``status.json`` and update the runs root's results index."""
        atomic_write_text(self.path / "status.json", jsonio.dumps(fields, indent=2) + "\n")
        status_written(self.path)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_csv(self.path / "metrics.csv", METRIC_FIELDS, rows)

    def write_rounds(self, rounds: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / "rounds.json", jsonio.dumps(rounds, indent=2) + "\n")

    def write_prune_at_init(self, summary: dict[str, Any]) -> None:
        """``prune_at_init.json``: how ``--prune-at-init`` chose the round-0 mask (method, keep,
        ablation, iterations, kept per iteration, fraction kept per layer, collapsed layers)."""
        atomic_write_text(self.path / PRUNE_AT_INIT_FILE, jsonio.dumps(summary, indent=2) + "\n")

    def prune_at_init(self) -> dict[str, Any]:
        """``prune_at_init.json`` ({} for a run that did not prune at initialisation)."""
        path = self.path / PRUNE_AT_INIT_FILE
        if not path.is_file():
            return {}
        from lth.documents import read_document

        return read_document(path, dict, lambda d: None if isinstance(d.get("layers"), dict) else "it has no layers")

    def logged_round(self) -> int:
        """The last round handed to the run's loggers (-1: none), so that a resumed run does not
        log again a round it retrains after a kill that came between logging and checkpointing."""
        try:
            return int(json.loads((self.path / "logged.json").read_text())["round"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return -1

    def write_logged_round(self, round_index: int) -> None:
        atomic_write_text(self.path / "logged.json", jsonio.dumps({"round": round_index}) + "\n")

    def save_mask(self, round_index: int, mask: Mask) -> None:
        mask.save(self.mask_path(round_index))

    def weights_path(self, tag: str) -> Path:
        return self.path / "weights" / f"{tag}.pt"

    def save_weights(self, tag: str, state: dict[str, torch.Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, self.weights_path(tag))

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace the resume point atomically: a kill at any moment leaves the old or the new one.

        Then call the listeners of :func:`checkpoint_listener` (a Ray worker without a shared
        filesystem sends the directory to the driver there).
        """
        atomic_torch_save(state, self.checkpoint_path)
        for listener in list(_CHECKPOINT_LISTENERS):
            listener(self)

    def remove_checkpoint(self) -> None:
        self.checkpoint_path.unlink(missing_ok=True)

    def remove_temporary_files(self) -> None:
        """Delete the temporary files (``.NAME.tmp``) of atomic writes that a kill interrupted."""
        for debris in self.path.glob(".*.tmp"):
            debris.unlink(missing_ok=True)

    def control(self, name: str) -> RunDir:
        """The sub-directory holding one control's results (same layout as the ticket's)."""
        return RunDir(self.path / "controls" / name)

    # -- reading ----------------------------------------------------------------------
    def controls(self) -> dict[str, list[dict[str, Any]]]:
        """Per-round summaries of every control run beside the ticket."""
        root = self.path / "controls"
        if not root.is_dir():
            return {}
        return {path.name: RunDir(path).rounds() for path in sorted(root.iterdir()) if path.is_dir()}

    def branch(self, name: str) -> RunDir:
        """The sub-directory holding one branch run off this ticket search (same layout as a run)."""
        return RunDir(self.path / "branches" / name)

    def branches(self) -> dict[str, list[dict[str, Any]]]:
        """Per-level summaries of every branch run off this search (``branches/NAME/rounds.json``),
        by branch name; a branch that has not finished a level yet maps to []."""
        root = self.path / "branches"
        if not root.is_dir():
            return {}
        return {
            path.name: RunDir(path).rounds()
            for path in sorted(root.iterdir())
            if path.is_dir() and not path.is_symlink() and (path / "config.yaml").is_file()
        }

    def lines(self) -> dict[str, list[dict[str, Any]]]:
        """Every line of results of this run, by name: ``ticket``, each control (``reinit``,
        ``random-prune``) and each branch as ``branch:NAME``; each a list of per-round rows."""
        lines = {"ticket": self.rounds(), **self.controls()}
        lines.update({f"branch:{name}": rows for name, rows in self.branches().items()})
        return lines

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest resume point, or None if the run never wrote one."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            import torch

            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as error:  # a checkpoint is only ever replaced atomically; this is foreign damage
            raise LthError(
                f"checkpoint {str(self.checkpoint_path)!r} cannot be read ({type(error).__name__}); "
                "the run cannot be resumed"
            ) from None
        problem = checkpoint_problem(state)
        if problem:
            raise damaged(self.checkpoint_path, problem, "the run cannot be resumed")
        return state

    def mask_path(self, round_index: int) -> Path:
        return self.path / "masks" / f"round_{round_index:02d}.pt"

    def config(self) -> dict[str, Any]:
        """``config.yaml``: a mapping naming at least the model and the dataset (LthError if damaged)."""

        def check(config: dict[str, Any]) -> str | None:
            missing = [key for key in ("model", "dataset") if not isinstance(config.get(key), str)]
            return f"it has no {missing[0]!r} name" if missing else None

        return read_document(self.path / "config.yaml", dict, check)

    def status(self) -> dict[str, Any]:
        """``status.json`` ({} before the run wrote one; LthError if damaged)."""
        path = self.path / "status.json"
        if not path.is_file():
            return {}
        return read_document(path, dict, status_problem)

    def rounds(self) -> list[dict[str, Any]]:
        """``rounds.json`` ([] before the first round ended; LthError if damaged)."""
        path = self.path / "rounds.json"
        if not path.is_file():
            return []
        return read_document(path, list, lambda rows: row_problem(rows, ROUND_FIELDS, "entry"))

    def metrics(self) -> list[dict[str, Any]]:
        """``metrics.csv`` as typed rows ([] before the first evaluation; LthError if damaged)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None:
                    raise damaged(path, "it is empty")
                missing = [name for name in METRIC_FIELDS if name not in (reader.fieldnames or ())]
                if missing:
                    raise damaged(
                        path, f"its header lacks the column {missing[0]!r} (expected {','.join(METRIC_FIELDS)})"
                    )
                rows = []
                for line, row in enumerate(reader, start=2):
                    rows.append(metric_row(path, line, row))
                return rows
        except UnicodeDecodeError:
            raise damaged(path, "it is not UTF-8 text") from None
        except csv.Error as error:
            raise damaged(path, f"it is not valid CSV ({error})") from None

    def load_mask(self, round_index: int) -> Mask:
        from lth.masks import Mask

        return Mask.load(self.mask_path(round_index))

    def load_weights(self, tag: str) -> dict[str, torch.Tensor]:
        """The state dict saved as ``weights/TAG.pt`` (LthError if missing or damaged)."""
        import torch

        path = self.weights_path(tag)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise LthError(f"weights file {str(path)!r} does not exist") from None
        except Exception as error:  # truncated, not a torch file, or holding other objects
            raise damaged(path, f"torch cannot load it ({type(error).__name__})") from None
        problem = tensor_map_problem(data)
        if problem:
            raise damaged(path, problem)
        return data

    def __fspath__(self) -> str:
        return os.fspath(self.path)


_CHECKPOINT_LISTENERS: list[Callable[[RunDir], Any]] = []


@contextmanager
def checkpoint_listener(listener: Callable[[RunDir], Any]) -> Iterator[None]:
    """Call ``listener(run)`` after every checkpoint any run directory writes while the context is open."""
    _CHECKPOINT_LISTENERS.append(listener)
    try:
        yield
    finally:
        _CHECKPOINT_LISTENERS.remove(listener)


def runs_root() -> Path:
    """The runs root: ``$LTH_RUNS_ROOT``, else ``runs`` in the working directory. Runs without an
    ``--out`` go there, and its results index lists every run (also those written elsewhere)."""
    return Path(os.environ.get("LTH_RUNS_ROOT") or "runs")


def check_name(name: str, what: str = "run name") -> str:
    """``name`` if it is a single path component (a directory name inside the runs root)."""
    if not isinstance(name, str) or not name.strip():
        raise LthError(f"{what} {name!r} is empty; give a name such as my-run")
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or name != name.strip():
        raise LthError(
            f"{what} {name!r} is not a single directory name: no '/', '\\', NUL, leading or trailing "
            "spaces, '.' or '..' (use --out DIR to write elsewhere)"
        )
    if len(name.encode()) > 200:
        raise LthError(f"{what} {name[:40]!r}... is {len(name.encode())} bytes long; at most 200 are allowed")
    return name


@contextmanager
def default_run_dir(name: str, root: str | Path | None = None) -> Iterator[Path]:
    """Reserve ``root/name`` (or ``name-2``, ``name-3``, ... if taken) for a new run, atomically.

    ``root``: the runs root (default :func:`runs_root`); ``name`` must be a single path
    component. Two processes started in the same second get different directories. If the body
    fails before writing anything, the empty reservation is removed again.
    """
    check_name(name)
    root = Path(root) if root is not None else runs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LthError(f"cannot create the runs directory {str(root)!r}: {error.strerror}") from None
    for attempt in range(1, 10_000):
        path = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise LthError(f"cannot create run directory {str(path)!r}: {error.strerror}") from None
    try:
        yield path
    except BaseException:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        raise


@contextmanager
def output_dir(out: str | Path | None, default_name: str) -> Iterator[Path]:
    """``out`` as given, or a fresh reservation ``RUNS_ROOT/default_name[-N]`` (see :func:`default_run_dir`)."""
    if out is not None:
        yield Path(out)
        return
    with default_run_dir(default_name) as path:
        yield path
