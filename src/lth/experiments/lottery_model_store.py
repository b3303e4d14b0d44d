"""What a :class:`~lth.experiments.lottery_model.LotteryModel` keeps, and its directory on disk.

The row layouts, copies of weights and masks, and :func:`save_experiment` /
:func:`load_experiment` behind :meth:`LotteryModel.save` and :meth:`LotteryModel.load`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth import jsonio
from lth.atomic import atomic_torch_save, atomic_write_csv, atomic_write_text
from lth.data.user_data import as_bundle, resolve_device
from lth.errors import LthError
from lth.experiments.lottery_model_checks import listing, short_error
from lth.experiments.lottery_settings import Initializer, make_settings
from lth.masks import Mask

if TYPE_CHECKING:
    from lth.experiments.lottery_model import LotteryModel

ROW_KEYS = (
    "round",
    "weights_remaining",
    "kept_weights",
    "total_weights",
    "layers",
    "early_stop_iteration",
    "val_accuracy_at_early_stop",
    "test_accuracy_at_early_stop",
    "final_val_accuracy",
    "final_test_accuracy",
    "final_test_loss",
    "seconds",
)
METRIC_KEYS = ("round", "iteration", "split", "loss", "accuracy")
SAVE_FORMAT = 1


def clone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of a state dict."""
    return {k: v.detach().clone() for k, v in state.items()}


def state_to(state: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """A state dict's tensors, detached, on ``device``."""
    return {k: v.detach().to(device) for k, v in state.items()}


def mask_copy(mask: Mask) -> Mask:
    """A CPU copy of ``mask``."""
    return Mask({name: m.detach().cpu().clone() for name, m in mask.items()})


def row_copy(row: dict) -> dict:
    """A copy of a summary row (its per-layer densities copied too)."""
    return dict(row, layers=dict(row["layers"]))


# ------------------------------------------------------------------ saving


def save_experiment(experiment: LotteryModel, path: str | Path) -> Path:
    """Write ``experiment`` to directory ``path``, every file atomically (see :meth:`LotteryModel.save`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LthError(f"cannot save to {str(path)!r}: it exists and is not a directory")
    settings = asdict(experiment._settings)
    initializer = experiment._settings.initializer
    settings["initializer"] = initializer if isinstance(initializer, str) else None
    meta = {
        "format": SAVE_FORMAT,
        "settings": settings,
        "callable_initializer": callable(initializer),
        "dataset": experiment._dataset,
        "round": experiment._round,
        "trained": experiment._trained,
        "needs_start": experiment._needs_start,
        "has_rewind": experiment._rewind_state is not None,
    }
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LthError(f"cannot write to {str(path)!r}: {error.strerror}") from None
    from lth.store.lock import run_lock

    with run_lock(path):  # one writer at a time: another process saving here is a one-line LthError
        _write(experiment, path, meta, earlier_save=is_saved_experiment(path))
    return path


def is_saved_experiment(path: Path) -> bool:
    """Whether ``path`` holds a save of :func:`save_experiment` (its ``settings.json``)."""
    try:
        meta = json.loads((path / "settings.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == SAVE_FORMAT and "settings" in meta


def _write(experiment: LotteryModel, path: Path, meta: dict, earlier_save: bool) -> None:
    """The files of a save; masks of rounds an earlier save had and this one has not are removed,
    only when ``path`` held an earlier save (never files in a directory lth did not write)."""
    try:
        atomic_write_text(path / "settings.json", jsonio.dumps(meta, indent=2) + "\n")
    except OSError as error:
        raise LthError(f"cannot write to {str(path)!r}: {error.strerror}") from None
    atomic_write_text(path / "rounds.json", jsonio.dumps(experiment._rows, indent=2) + "\n")
    atomic_write_text(path / "controls.json", jsonio.dumps(experiment._control_rows, indent=2) + "\n")
    atomic_write_csv(path / "metrics.csv", METRIC_KEYS, experiment._metrics)
    for stale in (path / "masks").glob("round_*.pt") if earlier_save else ():  # rounds of the earlier save, now gone
        index = stale.stem.removeprefix("round_")
        if index.isdigit() and int(index) not in experiment._masks:
            stale.unlink()
    for r, mask in experiment._masks.items():
        mask.save(path / "masks" / f"round_{r:02d}.pt")
    experiment._mask.save(path / "masks" / "current.pt")
    states = {
        "init": experiment._init_state,
        "start": experiment._start_state,
        "current": experiment._module.state_dict(),
    }
    if experiment._rewind_state is not None:
        states["rewind"] = experiment._rewind_state
    if experiment._w_final is not None:
        states["final"] = experiment._w_final
    for tag, state in states.items():
        atomic_torch_save(state_to(state, "cpu"), path / "weights" / f"{tag}.pt")
    atomic_torch_save({"state": experiment._generator.get_state()}, path / "generator.pt")


# ------------------------------------------------------------------ loading


def load_experiment(
    cls: type[LotteryModel],
    path: str | Path,
    model: nn.Module,
    data: Any = None,
    *,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    initializer: Initializer = None,
) -> LotteryModel:
    """Restore a saved experiment into ``model`` as a ``cls`` (see :meth:`LotteryModel.load`)."""
    path = Path(path)
    try:
        meta = json.loads((path / "settings.json").read_text())
    except FileNotFoundError:
        raise LthError(f"{str(path)!r} is not a saved LotteryModel (no settings.json)") from None
    except (OSError, ValueError) as error:
        raise LthError(f"cannot read {str(path / 'settings.json')!r}: {short_error(error)}") from None
    if not isinstance(meta, dict) or meta.get("format") != SAVE_FORMAT:
        raise LthError(f"{str(path)!r} holds an unknown save format; expected format {SAVE_FORMAT}")
    if not isinstance(model, nn.Module):
        raise LthError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    values = dict(meta["settings"])
    if device is not None:
        values["device"] = device
    if progress is not None:
        values["progress"] = progress
    if initializer is not None:
        values["initializer"] = initializer
    settings = make_settings(**values)
    source = data if data is not None else meta.get("dataset")
    bundle = None
    if source is not None:
        bundle = as_bundle(
            source, resolve_device(settings.device), val_size=settings.val_size, data_dir=settings.data_dir
        )
    obj = cls.__new__(cls)
    obj._setup(model, bundle, settings, source if isinstance(source, str) else None)
    dev = obj._device

    def weights(tag: str) -> dict[str, torch.Tensor]:
        try:
            return state_to(torch.load(path / "weights" / f"{tag}.pt", map_location="cpu", weights_only=True), dev)
        except FileNotFoundError:
            raise LthError(f"saved experiment {str(path)!r} lacks weights/{tag}.pt") from None

    try:
        obj._module.load_state_dict(weights("current"))
    except RuntimeError as error:
        raise LthError(f"the model does not match the saved experiment: {short_error(error)}") from None
    obj._init_state = weights("init")
    obj._start_state = weights("start")
    obj._rewind_state = weights("rewind") if meta["has_rewind"] else None
    obj._w_final = weights("final") if (path / "weights" / "final.pt").is_file() else None
    current = Mask.load(path / "masks" / "current.pt")
    current.check_matches(dict(obj._module.named_parameters()))
    if list(current) != list(obj._groups):
        raise LthError(
            f"the saved mask covers {listing(list(current))}, but the model's prunable parameters "
            f"are {listing(list(obj._groups))}"
        )
    obj._mask = current.to(dev)
    obj._rows = json.loads((path / "rounds.json").read_text())
    if (path / "controls.json").is_file():  # absent in saves from before controls
        obj._control_rows = _read_controls(path / "controls.json")
    obj._metrics = _read_metrics(path / "metrics.csv")
    obj._masks = {row["round"]: Mask.load(path / "masks" / f"round_{row['round']:02d}.pt") for row in obj._rows}
    obj._round, obj._trained, obj._needs_start = meta["round"], meta["trained"], meta["needs_start"]
    obj._generator.set_state(torch.load(path / "generator.pt", weights_only=True)["state"])
    return obj


def _read_controls(path: Path) -> dict[str, list[dict]]:
    """``controls.json``: the controls' rows by name."""
    controls = json.loads(path.read_text())
    if not isinstance(controls, dict) or not all(
        isinstance(rows, list) and all(isinstance(r, dict) and "round" in r for r in rows) for rows in controls.values()
    ):
        raise LthError(f"{str(path)!r} must map control names to lists of rows")
    return {str(name): rows for name, rows in controls.items()}


def _read_metrics(path: Path) -> list[dict]:
    """``metrics.csv``: the learning curves' rows."""
    with path.open(newline="") as handle:
        return [
            {
                "round": int(m["round"]),
                "iteration": int(m["iteration"]),
                "split": m["split"],
                "loss": float(m["loss"]),
                "accuracy": float(m["accuracy"]),
            }
            for m in csv.DictReader(handle)
        ]
