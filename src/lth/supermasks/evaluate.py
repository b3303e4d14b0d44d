"""Supermasks at initialisation (Zhou et al. 2019, SPEC 5): evaluate masked, untrained networks.

For every (criterion, fraction kept, weights transform) cell: a one-shot mask of the dense net
from the criterion's scores of (w_i, w_f), the kept weights set from w_i by the transform (``init``
= the initial values, or any mask-1 action such as ``signed_constant``), pruned weights 0, all
other parameters and buffers at their initial values; then accuracy and loss WITHOUT training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lth.actions import (
    MASK1_COMBINATIONS,
    MASK1_NAMES,
    LayerState,
    Mask1Options,
    fresh_draw,
    mask1_values,
    validate_actions,
)
from lth.config import TicketConfig, make_config
from lth.criteria import ALIASES, CRITERIA, CRITERION_NAMES, RANKED_CRITERIA, compute_scores
from lth.data import Batcher, DataBundle, load_dataset
from lth.errors import LthError
from lth.experiments import find_ticket, resolve_device
from lth.masks import Mask
from lth.models import MODELS, build_model
from lth.plots import plot_supermask_run
from lth.progress import progress_bar
from lth.pruning import prunable_parameters, prune
from lth.store import RunDir
from lth.store.ownership import created_and_locked, remove_owned
from lth.store.run_dir import check_name, runs_root
from lth.store.supermask_rows import (  # noqa: F401  (re-exported)
    ROW_FIELDS,
    ROWS_CSV,
    ROWS_JSON,
    read_rows,
    write_rows,
)
from lth.training.evaluate import evaluate

KIND = "supermask-eval"
#: Training accuracy and loss are measured on at most this many (the first) training examples.
TRAIN_EVAL_LIMIT = 10_000
#: 1.0, 0.8, 0.64, ... 0.8**24 (~0.47%): the geometric ladder of fractions kept.
DEFAULT_KEEPS: list[float] = [round(0.8**k, 12) for k in range(25)]
DEFAULT_WEIGHTS: list[str] = ["init", "signed_constant", "rand_signed_constant"]
#: ``init`` (the initial values on the kept positions) and every mask-1 action name.
WEIGHT_TRANSFORMS: list[str] = ["init", *MASK1_NAMES]
SCOPES = ("layerwise", "global")
#: The mask-1 modifiers used when none are given: every option at its default.
DEFAULT_OPTIONS = Mask1Options()


# ------------------------------------------------------------------ validation


def resolve_criteria(names: Sequence[str] | None) -> list[str]:
    """Canonical criterion names (aliases resolved, duplicates dropped); default RANKED_CRITERIA."""
    if names is None:
        return list(RANKED_CRITERIA)
    if not names:
        raise LthError("no criterion given; choose from: " + ", ".join(CRITERION_NAMES))
    for name in names:
        if name not in CRITERIA:
            allowed = ", ".join(CRITERION_NAMES + [f"{a} (= {t})" for a, t in ALIASES.items()])
            raise LthError(f"unknown criterion {name!r}; choose from: {allowed}")
    return list(dict.fromkeys(ALIASES.get(name, name) for name in names))


def check_keeps(keeps: Sequence[float] | None) -> list[float]:
    """Fractions kept, each in (0, 1] (duplicates dropped); default DEFAULT_KEEPS."""
    if keeps is None:
        return list(DEFAULT_KEEPS)
    if not keeps:
        raise LthError("no fraction to keep given; give fractions in (0, 1], e.g. 1.0,0.5,0.1")
    for keep in keeps:
        if not 0.0 < keep <= 1.0:
            raise LthError(f"fraction kept {keep!r} is outside (0, 1]; give fractions like 1.0,0.5,0.1")
    return list(dict.fromkeys(float(k) for k in keeps))


def check_weights(names: Sequence[str] | None, options: Mask1Options = DEFAULT_OPTIONS) -> list[str]:
    """Weights transforms (``init`` or a mask-1 name), checked with ``options``; default DEFAULT_WEIGHTS."""
    if names is None:
        names = DEFAULT_WEIGHTS
    if not names:
        raise LthError("no weights transform given; choose from: " + ", ".join(WEIGHT_TRANSFORMS))
    for name in names:
        if name not in WEIGHT_TRANSFORMS:
            raise LthError(f"unknown weights transform {name!r}; choose from: {', '.join(WEIGHT_TRANSFORMS)}")
        validate_actions(_action(name), "zero", options)
    return list(dict.fromkeys(names))


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise LthError(f"unknown scope {scope!r}; choose layerwise or global")
    return scope


def _action(transform: str) -> str:
    return "rewind" if transform == "init" else transform


def _needs_fresh(transform: str) -> bool:
    return MASK1_COMBINATIONS.get(transform, (transform, False))[0] == "reinit"


def _generator(seed: int, *parts: str) -> torch.Generator:
    """A CPU generator seeded from (seed, parts): each cell's randomness is independent of the grid."""
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# ------------------------------------------------------------------ the grid


class SupermaskGrid:
    """One model's w_i, w_f (and gradient at init) prepared once; masks, weights and metrics per cell.

    ``w_init`` is the full initial state dict (non-prunable parameters and buffers keep these
    values); ``w_final`` needs the prunable parameters. Every cell's randomness is seeded from
    ``seed`` and the cell's labels, so a cell does not depend on the rest of the grid or its order.
    """

    def __init__(
        self,
        model_name: str,
        data: DataBundle,
        w_init: Mapping[str, torch.Tensor],
        w_final: Mapping[str, torch.Tensor],
        seed: int = 0,
        *,
        options: Mask1Options = DEFAULT_OPTIONS,
        prune_biases: bool = False,
        ignore_layers: Sequence[str] = (),
        batch_size: int = 60,
    ) -> None:
        MODELS.get(model_name)
        self.model_name, self.data, self.seed, self.options, self.batch_size = (
            model_name,
            data,
            seed,
            options,
            batch_size,
        )
        device = data.train_x.device
        self.model = build_model(model_name, data.input_shape, data.num_classes, seed=seed).to(device)
        self.init_state = {key: value.to(device) for key, value in w_init.items()}
        try:
            self.model.load_state_dict(self.init_state)
        except RuntimeError as error:
            lines = str(error).splitlines()
            raise LthError(f"the initial weights do not fit model {model_name!r}: {lines[-1].strip()}") from None
        self.names = list(prunable_parameters(self.model, prune_biases, ignore_layers))
        missing = [name for name in self.names if name not in w_final]
        if missing:
            raise LthError(f"the final weights lack parameter {missing[0]!r} of model {model_name!r}")
        self.w_init = {name: self.init_state[name] for name in self.names}
        self.w_final = {name: w_final[name].to(device=device, dtype=self.w_init[name].dtype) for name in self.names}
        self.ones = Mask.ones(self.w_init)
        self._scores: dict[str, dict[str, torch.Tensor]] = {}
        self._derivatives: dict[str, dict[str, torch.Tensor]] = {}
        self._fresh: dict[str, torch.Tensor] | None = None

    def derivatives(self, criterion: str) -> dict[str, dict[str, torch.Tensor]]:
        """What a model-based criterion (snip, grad, grasp, synflow) needs at w_i, on the first
        training batch (:mod:`lth.init_pruning.derivatives`); computed once per kind."""
        from lth.criteria import NEEDS_DERIVATIVE
        from lth.init_pruning.derivatives import criterion_derivatives

        field = NEEDS_DERIVATIVE.get(criterion)
        if field is None:
            return {}
        if field not in self._derivatives:
            self.model.load_state_dict(self.init_state)
            batch = Batcher(self.data.train_x, self.data.train_y, self.batch_size, seed=self.seed).batch(0)
            self._derivatives.update(
                criterion_derivatives(criterion, self.model, self.names, [batch], self.data.input_shape)
            )
        return {field: self._derivatives[field]}

    def fresh(self) -> dict[str, torch.Tensor]:
        """A fresh initialiser draw (another seed) for the reinit-type transforms, drawn once."""
        if self._fresh is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=_generator(self.seed, "reinit")))
            model = build_model(self.model_name, self.data.input_shape, self.data.num_classes, seed=seed)
            self._fresh = {k: v.to(self.data.train_x.device) for k, v in model.state_dict().items()}
        return self._fresh

    def scores(self, criterion: str) -> dict[str, torch.Tensor]:
        name = resolve_criteria([criterion])[0]
        if name not in self._scores:
            derivatives = self.derivatives(name)
            generator = _generator(self.seed, "scores", name)
            self._scores[name] = compute_scores(
                name, self.w_init, self.w_final, self.ones, generator, derivatives=derivatives
            )
        return self._scores[name]

    def mask(self, criterion: str, keep: float, scope: str = "layerwise") -> Mask:
        """One-shot mask of the dense net keeping ``keep`` of each layer (layerwise) or of all (global).

        Each layer (or the pool) loses ``round((1 - keep) * n)`` of its n weights. The same
        tie-breaking draws serve every keep, so the masks of one criterion are nested.
        """
        check_keeps([keep])
        rates = {name: 1.0 - keep for name in self.names}
        return prune(
            self.scores(criterion),
            self.ones,
            rates,
            check_scope(scope),
            _generator(self.seed, "ties", resolve_criteria([criterion])[0]),
        )

    def state(self, mask: Mapping[str, torch.Tensor], transform: str) -> dict[str, torch.Tensor]:
        """The full state dict of a cell: transformed w_i on kept entries, 0 on pruned, the rest w_i."""
        check_weights([transform], self.options)
        generator = _generator(self.seed, "weights", transform)
        fresh = self.fresh() if _needs_fresh(transform) else None
        state = dict(self.init_state)
        for name in self.names:
            layer = LayerState(
                self.w_init[name],
                self.w_final[name],
                mask[name].bool(),
                generator,
                fresh=fresh_draw(fresh, name) if fresh is not None else None,
            )
            state[name] = mask1_values(_action(transform), layer, self.options)
        return state

    def evaluate(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[train loss, train accuracy, test loss, test accuracy] (a tensor, no host sync).

        Train metrics use the first ``TRAIN_EVAL_LIMIT`` (10,000) training examples when the
        training split is larger.
        """
        self.model.load_state_dict(state)
        data = self.data
        train = evaluate(self.model, data.train_x[:TRAIN_EVAL_LIMIT], data.train_y[:TRAIN_EVAL_LIMIT])
        return torch.cat([train, evaluate(self.model, data.test_x, data.test_y)])


def evaluate_supermasks(
    model_name: str,
    data: DataBundle,
    w_init: Mapping[str, torch.Tensor],
    w_final: Mapping[str, torch.Tensor],
    criteria: Sequence[str] | None = None,
    keeps: Sequence[float] | None = None,
    weights: Sequence[str] | None = None,
    scope: str = "layerwise",
    seed: int = 0,
    *,
    options: Mask1Options = DEFAULT_OPTIONS,
    prune_biases: bool = False,
    ignore_layers: Sequence[str] = (),
    batch_size: int = 60,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per (criterion, keep, weights) cell: accuracy and loss of the masked, untrained net.

    See ``SupermaskGrid`` for the cell definition. Train metrics use the first 10,000 training
    examples when the training split is larger. ``batch_size`` is the size of the one training
    batch whose gradient the snip/grad criteria use. ``weights_remaining`` is the realised
    density of the mask over the prunable parameters.
    """
    criteria, keeps = resolve_criteria(criteria), check_keeps(keeps)
    weights, scope = check_weights(weights, options), check_scope(scope)
    grid = SupermaskGrid(
        model_name,
        data,
        w_init,
        w_final,
        seed,
        options=options,
        prune_biases=prune_biases,
        ignore_layers=ignore_layers,
        batch_size=batch_size,
    )
    cells: list[tuple[str, float, str, float]] = []
    metrics: list[torch.Tensor] = []
    bar = progress_bar(
        total=len(criteria) * len(keeps) * len(weights),
        desc="supermasks",
        disable=not progress,
        unit="cell",
        dynamic_ncols=True,
        mininterval=0.5,
    )
    for criterion in criteria:
        for keep in keeps:
            mask = grid.mask(criterion, keep, scope)
            density = mask.density()
            for transform in weights:
                metrics.append(grid.evaluate(grid.state(mask, transform)))
                cells.append((criterion, keep, transform, density))
                bar.update()
    bar.close()
    values = torch.stack(metrics).cpu().tolist()
    return [
        {
            "criterion": c,
            "keep": k,
            "weights": w,
            "test_accuracy": test_acc,
            "train_accuracy": train_acc,
            "test_loss": test_loss,
            "train_loss": train_loss,
            "weights_remaining": d,
        }
        for (c, k, w, d), (train_loss, train_acc, test_loss, test_acc) in zip(cells, values)
    ]


# ------------------------------------------------------------------ run directories


def is_supermask_run(run: RunDir) -> bool:
    return run.config().get("kind") == KIND


def load_finished_run(
    path: str | Path,
) -> tuple[RunDir, dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(run, config, w_i, w_f) of a finished ticket run: weights/init.pt and weights/final_round_00.pt."""
    if not Path(path).is_dir():
        raise LthError(f"--from {str(path)!r} is not a directory; give a finished find-ticket run directory")
    run = RunDir.open(path)
    config = run.config()
    if not isinstance(config, dict) or config.get("kind") == KIND:
        raise LthError(f"--from {str(path)!r} is not a ticket run; give a finished find-ticket run directory")
    weights = []
    for tag in ("init", "final_round_00"):
        if not (run.path / "weights" / f"{tag}.pt").is_file():
            raise LthError(f"--from {str(path)!r} is not a finished run: it has no weights/{tag}.pt")
        try:
            weights.append(run.load_weights(tag))
        except Exception as error:  # corrupt or not a torch file
            raise LthError(f"cannot read weights/{tag}.pt of {str(path)!r}: {error}") from None
    return run, config, weights[0], weights[1]


@dataclass
class SupermaskEvalResult:
    """What ``run_supermask_eval`` wrote: the run's config, its rows and its directory."""

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    run_dir: RunDir
    #: How w_f was had: "trained", "reused" (a stored dense training, see DENSE_STORE_DIR) or "from" (--from).
    dense: str = "trained"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: The dense trainings of ``lth supermask eval`` kept for reuse, in the runs root
#: (:func:`~lth.store.run_dir.runs_root`); one file per dense recipe (see :mod:`lth.experiments.dense_trunk`).
DENSE_STORE_DIR = ".lth-dense"


def dense_store_path() -> Path:
    return runs_root() / DENSE_STORE_DIR


def run_supermask_eval(
    config: TicketConfig | None,
    criteria: Sequence[str] | None = None,
    keeps: Sequence[float] | None = None,
    weights: Sequence[str] | None = None,
    scope: str = "layerwise",
    seed: int | None = None,
    options: Mask1Options = DEFAULT_OPTIONS,
    from_run: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    share_trunk: bool = True,
) -> SupermaskEvalResult:
    """The whole ``lth supermask eval`` command: w_i/w_f, the grid, rows and plots in ``out``.

    Without ``from_run`` the dense net of ``config`` is trained once (``find_ticket`` with
    rounds=0) into ``<out>/dense``; with it, that finished run's weights are used and ``config``
    defaults to its stored one (pass one to change e.g. device or data_dir; model and dataset
    must match). ``seed`` (default: the config's) seeds the masks' tie-breaking and the transforms.
    ``out`` defaults to ``runs/<name>``, the name to ``MODEL-DATASET-supermask-TIMESTAMP``.

    ``share_trunk``: the dense training is kept in ``RUNS_ROOT/.lth-dense/`` (keyed by every
    setting that can change it, :func:`lth.experiments.dense_trunk.dense_trunk_key`), and a later
    evaluation with the same dense recipe (any criteria, keeps, weights, scope or output) reuses
    it instead of training again: ``<out>/dense`` is then the same, bit for bit, as if trained.
    ``status.json`` records ``dense``: ``trained``, ``reused`` or ``from``.
    """
    criteria, keeps = resolve_criteria(criteria), check_keeps(keeps)
    weights, scope = check_weights(weights, options), check_scope(scope)
    source: RunDir | None = None
    if from_run is not None:
        source, stored, w_init, w_final = load_finished_run(from_run)
        stored = {k: v for k, v in stored.items() if k in TicketConfig.model_fields}
        if config is None:
            config = make_config({**stored, "name": None})
        elif (config.model, config.dataset) != (stored.get("model"), stored.get("dataset")):
            raise LthError(
                f"--from {str(from_run)!r} is a run of {stored.get('model')} on {stored.get('dataset')}, "
                f"not of {config.model} on {config.dataset}"
            )
    elif config is None:
        raise LthError("give a configuration (MODEL DATASET) or a finished run to reuse (--from RUN_DIR)")
    spec = MODELS.get(config.model)
    seed = config.seed if seed is None else seed
    name = config.name or f"{config.model}-{config.dataset}-supermask-{datetime.now():%Y%m%d-%H%M%S}"
    out_path = Path(out) if out is not None else runs_root() / check_name(name)
    # Everything that can be checked is checked (data included) before the file system is touched.
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, data_dir=config.data_dir, device=device)
    batch_size = config.batch_size or spec.recipe.batch_size
    existed = out_path.exists()
    with created_and_locked(out_path, lambda: RunDir.create(out_path, overwrite=overwrite)) as run:  # one writer
        started = _now()
        if source is None:
            dense = config.model_copy(update=dict(rounds=0, one_shot=False, keep=None, controls=[], name=name))
            from lth.experiments.dense_trunk import DenseStore

            store = DenseStore(dense_store_path()) if share_trunk else None
            try:
                ticket = find_ticket(dense, out=run.path / "dense", progress=progress, dense_store=store)
            except LthError:  # a bad training setting: leave no half-made run behind (only lth's files go)
                remove_owned(run.path)
                if existed:
                    run.path.mkdir(parents=True, exist_ok=True)
                raise
            source, config = ticket.run_dir, ticket.config
            assert source is not None  # find_ticket was given a directory (out=...)
            w_init, w_final = source.load_weights("init"), source.load_weights("final_round_00")
            how = ticket.dense or "trained"
        else:
            config = config.with_recipe(spec.recipe)
            how = "from"
        written = {
            "kind": KIND,
            **config.model_dump(),
            "name": name,
            "supermask": {
                "criteria": criteria,
                "keeps": keeps,
                "weights": weights,
                "scope": scope,
                "seed": seed,
                "keep_sign": options.keep_sign,
                "rescale": options.rescale,
                "jitter_sd": options.jitter_sd,
                "constant": options.constant,
                "source": str(source.path),
                "train_eval_limit": TRAIN_EVAL_LIMIT,
            },
        }
        run.write_config(written)
        run.write_status(status="running", started=started, device=str(device))
        rows = evaluate_supermasks(
            config.model,
            data,
            w_init,
            w_final,
            criteria,
            keeps,
            weights,
            scope,
            seed,
            options=options,
            prune_biases=config.prune_biases,
            ignore_layers=config.ignore_layers,
            batch_size=batch_size,
            progress=progress,
        )
        write_rows(run, rows)
        plot_supermask_run(run)
        run.write_status(status="complete", started=started, finished=_now(), device=str(device), dense=how)
        return SupermaskEvalResult(written, rows, run, how)
