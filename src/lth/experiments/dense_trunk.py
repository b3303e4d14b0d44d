"""A shared dense trunk: round 0 (the dense training) of experiments that differ only in pruning.

Experiments of a session that share model, data, seed, initialisation and the whole training
recipe but differ in how they prune (criterion, mask-1/mask-0 actions and their options, prune
rates, scope, rounds, controls, name, loggers, ...) train exactly the same round 0. A
:class:`DenseStore` keeps that training once, content-addressed by :func:`dense_trunk_key`:
a hash of every config field that can influence round 0. The key is built from an explicit
:data:`EXCLUDED` list of pruning-only and output-only fields, so a config field added later is
part of the key unless someone decides otherwise. The rewind point and ``w_final`` are in the
key: they decide what round 0 captures.

An entry holds what later rounds depend on after round 0: the round's result (metrics rows,
headline numbers, ``best_state`` under ``--w-final early-stop``), the model's state at the end,
the snapshots captured (rewind point, w_f point) and the global torch RNG state (and CUDA's, on
a GPU). A search that finds its key restores all of it and carries on as if it had trained,
bit for bit (see :meth:`lth.experiments.ticket_search._Search.train_ticket`); its round 0 in
``rounds.json`` reports the ``seconds`` that the stored training took.

Writes are atomic (:func:`lth.atomic.atomic_torch_save`): two processes training the same key
at once both write the same bits, and readers see one whole file or none. A damaged or foreign
entry is a miss, with a one-line warning, and is trained (and written) again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from lth.atomic import atomic_torch_save
from lth.config import TicketConfig
from lth.errors import LthError, warn
from lth.training import RoundResult

#: Config fields that cannot influence round 0: pruning-only (they act from round 1 on, or on
#: the masks only) and output-only fields. Every other field is part of the key.
EXCLUDED = frozenset(
    {
        # pruning: what is pruned, how much, by which scores, how the next round starts
        "rounds",
        "prune_rate",
        "prune_rate_fc",
        "prune_rate_conv",
        "prune_rate_output",
        "scope",
        "ignore_layers",
        "prune_biases",  # round 0's mask is all ones: no parameter is masked in training
        "criterion",
        "mask1",
        "keep_sign",
        "rescale",
        "jitter_sd",
        "constant",
        "mask0",
        "one_shot",
        "keep",
        "controls",  # controls start at round 1
        # output: where and how results are written, never what they are
        "name",
        "log",
        "checkpoint_every",
        # side-by-side training of controls and trials: round 0 of a lone search trains alone
        "vectorize",
        # replaced in the key: by the device actually used, and by the content of the round-0 mask
        "device",
        "init_mask",
    }
)
FORMAT = 1
SUFFIX = ".pt"
_RESULT_FIELDS = tuple(f.name for f in fields(RoundResult) if f.name != "best_state")


def dense_trunk_key(
    config: TicketConfig,
    device: torch.device | str = "cpu",
    mask: Mapping[str, torch.Tensor] | None = None,
    data: Any = None,
) -> str:
    """The hex SHA-256 naming round 0 of ``config`` (with its model's recipe filled in).

    ``device``: the device the search trains on (``auto`` resolved). ``mask``: the round-0
    mask of an ``--init-mask`` run (its tensors enter the key; None or all ones: a dense start).
    ``data``: the :class:`~lth.data.DataBundle` trained on; a fingerprint of it (shapes and the
    bytes of up to 256 evenly spaced examples of each split) enters the key, so that dataset
    files replaced under the same name do not bring back a stale training.
    The lth and torch versions and the device's kind (CUDA device name, CPU instruction set)
    are part of the key too: a trunk is reused only where training it again gives the same bits.
    """
    from lth import __version__

    device = torch.device(device)
    values = {key: value for key, value in config.model_dump().items() if key not in EXCLUDED}
    values["init_mask"] = _mask_digest(mask)
    values["device"] = device.type
    values["data"] = None if data is None else data_fingerprint(data)
    values["platform"] = {
        "lth": __version__,
        "torch": torch.__version__,
        "format": FORMAT,
        "hardware": _hardware(device),
    }
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def trunk_signature(config: TicketConfig) -> str:
    """What :func:`dense_trunk_key` hashes that the config alone tells (the device as asked, the
    ``--init-mask`` path): configs of different signatures never share round 0. A study uses it
    to give the store only to trials that have a partner (``lth robust``'s trials, all of other
    seeds, store nothing)."""
    values = {
        key: value
        for key, value in config.model_dump().items()
        if key not in EXCLUDED or key in ("device", "init_mask")
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(data: Any, rows: int = 256) -> str:
    """SHA-256 of a dataset's split shapes and dtypes and of up to ``rows`` evenly spaced examples per split."""
    digest = hashlib.sha256()
    for split in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        tensor = getattr(data, split)
        digest.update(f"{split}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        if tensor.shape[0]:
            index = torch.linspace(0, tensor.shape[0] - 1, min(rows, tensor.shape[0])).round().long()
            sample = tensor[index.to(tensor.device)].detach().to("cpu").contiguous()
            digest.update(sample.view(torch.uint8).numpy().tobytes())
    digest.update(f"augment:{getattr(data, 'augment', None)}".encode())
    return digest.hexdigest()


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # pragma: no cover - torch < 2.0
        return "cpu"


def _mask_digest(mask: Mapping[str, torch.Tensor] | None) -> str | None:
    if mask is None or all(bool(m.all()) for m in mask.values()):
        return None
    digest = hashlib.sha256()
    for name in sorted(mask):
        tensor = mask[name].detach().to("cpu", torch.bool).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class DenseEntry:
    """One stored round 0, on the CPU: see the module's docstring."""

    def __init__(
        self,
        result: RoundResult,
        model: dict[str, torch.Tensor],
        snapshots: dict[int, dict[str, torch.Tensor]],
        torch_rng: torch.Tensor,
        cuda_rng: torch.Tensor | None = None,
    ) -> None:
        self.result, self.model, self.snapshots = result, model, snapshots
        self.torch_rng, self.cuda_rng = torch_rng, cuda_rng


class DenseStore:
    """Round-0 trainings in a directory, one file per key (``KEY.pt``), written atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, key: str) -> Path:
        return self.path / f"{key}{SUFFIX}"

    def save(
        self,
        key: str,
        result: RoundResult,
        model: Mapping[str, torch.Tensor],
        snapshots: Mapping[int, Mapping[str, torch.Tensor]],
        torch_rng: torch.Tensor,
        cuda_rng: torch.Tensor | None = None,
    ) -> None:
        """Store round 0 under ``key``. A failed write (e.g. a full disk) is a warning: sharing is
        an optimisation, and the search it belongs to goes on."""
        entry = {
            "format": FORMAT,
            "key": key,
            "result": {name: getattr(result, name) for name in _RESULT_FIELDS},
            "best_state": _cpu(result.best_state),
            "model": _cpu(model),
            "snapshots": {int(t): _cpu(state) for t, state in snapshots.items()},
            "torch_rng": torch_rng.clone(),
            "cuda_rng": None if cuda_rng is None else cuda_rng.clone(),
        }
        try:
            atomic_torch_save(entry, self.file(key))
        except (OSError, LthError) as error:
            warn(f"the dense training was not stored for reuse in {self.path} ({error})")

    def load(
        self, key: str, model: Mapping[str, torch.Tensor], points: list[int], keep_best: bool, cuda: bool = False
    ) -> DenseEntry | None:
        """The entry of ``key``; None when there is none, or (with a warning) when it is damaged or
        does not fit: ``model`` is the state dict its tensors must match, ``points`` the iterations
        it must hold snapshots of, ``keep_best`` whether it must hold a best state."""
        path = self.file(key)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return _entry(data, key, model, points, keep_best, cuda)
        except Exception as error:  # noqa: BLE001 - whatever is wrong with it, it is a miss
            text = (str(error).strip().splitlines() or [""])[0][:120]
            warn(
                f"ignoring the damaged stored dense training {path} ({type(error).__name__}: {text}); "
                "training round 0 again"
            )
            return None


def _cpu(state: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: v.detach().cpu().clone() for k, v in state.items()}


def _check_state(what: str, state: Any, model: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or set(state) != set(model):
        raise ValueError(f"its {what} does not hold this model's tensors")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != model[name].shape or value.dtype != model[name].dtype:
            raise ValueError(f"its {what} has {name!r} of another shape or type than this model's")
    return state


def _entry(
    data: Any, key: str, model: Mapping[str, torch.Tensor], points: list[int], keep_best: bool, cuda: bool
) -> DenseEntry:
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        raise ValueError("it is not a stored dense training of this key and format")
    values = data["result"]
    if not isinstance(values, dict) or set(values) != set(_RESULT_FIELDS):
        raise ValueError("its round result is incomplete")
    rows = values["metrics"]
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise ValueError("its metrics are not a list of rows")
    if not all(
        isinstance(values[name], (int, float)) and not isinstance(values[name], bool)
        for name in _RESULT_FIELDS
        if name != "metrics"
    ):
        raise ValueError("its headline numbers are not numbers")
    best = data["best_state"]
    if keep_best != (best is not None):
        raise ValueError("its best state does not fit --w-final")
    snapshots = data["snapshots"]
    if not isinstance(snapshots, dict) or sorted(snapshots) != sorted(points):
        raise ValueError("its snapshots are not those of the rewind and w_f points")
    rng = data["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise ValueError("its torch RNG state is not one")
    cuda_rng = data["cuda_rng"]
    if cuda and not isinstance(cuda_rng, torch.Tensor):
        raise ValueError("it lacks the CUDA RNG state")
    result = RoundResult(**values, best_state=None if best is None else _check_state("best state", best, model))
    return DenseEntry(
        result,
        _check_state("model", data["model"], model),
        {t: _check_state(f"snapshot {t}", s, model) for t, s in snapshots.items()},
        rng,
        cuda_rng if cuda else None,
    )
