"""A finished (or partly finished) ticket search read back from its run directory, as the trunk
that branches (:mod:`lth.experiments.branches`) run off: its levels, masks, starting weights and
the scores of its dense round."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lth.config import TicketConfig, make_config, parse_duration, resolved
from lth.data import DATASETS, shared_dataset
from lth.errors import LthError
from lth.experiments.branch_kinds import masked
from lth.masks import Mask
from lth.store import RunDir


class Trunk:
    """A finished (or partly finished) ticket search read back from its run directory."""

    def __init__(self, path: str | Path) -> None:
        from lth.experiments.ticket_search import check_config

        if not (Path(path) / "config.yaml").is_file():
            raise LthError(f"run {str(path)!r} does not exist (no lth run directory with a config.yaml there)")
        self.run = RunDir.open(path)
        raw = self.run.config()
        kind = raw.get("kind", "find-ticket")
        if kind != "find-ticket":
            raise LthError(
                f"{str(path)!r} is a {kind} run, not a ticket search; branches and stability analyses "
                "run off the runs of `lth find-ticket` and the trials of `lth robust` / `lth session` studies"
            )
        try:
            self.config: TicketConfig = check_config(make_config(raw))
        except LthError as error:
            raise LthError(f"the config of {str(path)!r} cannot be used: {error}") from None
        self.rows = {row["round"]: row for row in self.run.rounds()}

    # -- levels -----------------------------------------------------------------------
    def levels(self) -> list[int]:
        """The levels (rounds) the trunk has finished, with their masks on disk."""
        return sorted(r for r in self.rows if self.run.mask_path(r).is_file())

    def level_mask(self, level: int) -> Mask:
        return self.run.load_mask(level)

    def level_start(self, level: int, mask: Mask) -> dict[str, Tensor]:
        """The trunk's starting weights of ``level`` (a full state dict)."""
        from lth.experiments.ticket_search import plain_rewind

        if level == 0:  # w_0, under an --init-mask if the search had one (as the search applies it)
            return {k: v.mul(mask[k].to(v.dtype)) if k in mask else v.clone() for k, v in self.init.items()}
        if plain_rewind(self.config):
            return masked(self.rewind_state, mask)
        return self.run.load_weights(f"start_round_{level:02d}")

    def check_stored(self, levels: list[int], kind: str) -> None:
        """LthError, before anything is written, when the trunk lacks a file the branch needs (runs
        made before lth stored round starts and w_f)."""
        from lth.experiments.ticket_search import plain_rewind

        config, weights = self.config, self.run.path / "weights"
        if not plain_rewind(config):
            for level in (level for level in levels if level > 0):
                if not (weights / f"start_round_{level:02d}.pt").is_file():
                    raise LthError(
                        f"run {str(self.run.path)!r} (mask1 {config.mask1}, mask0 {config.mask0}) did not "
                        f"store the starting weights of round {level} (weights/start_round_{level:02d}.pt); "
                        "rerun it with this version of lth to branch off it"
                    )
        if kind == "one-shot" and config.w_final != "end" and not (weights / "w_final_round_00.pt").is_file():
            raise LthError(
                f"run {str(self.run.path)!r} (w_final {config.w_final}) did not store the w_f of its dense "
                "round (weights/w_final_round_00.pt); rerun it with this version of lth for one-shot branches"
            )

    def level_rewind(self, level: int) -> dict[str, Tensor]:
        return self.init if level == 0 else self.rewind_state

    @cached_property
    def init(self) -> dict[str, Tensor]:
        return self.run.load_weights("init")

    @cached_property
    def rewind_state(self) -> dict[str, Tensor]:
        if (self.run.path / "weights" / "rewind.pt").is_file():
            return self.run.load_weights("rewind")
        return self.init

    @cached_property
    def data(self) -> Any:
        from lth.experiments.ticket_search import resolve_device

        config = self.config
        return shared_dataset(config.dataset, data_dir=config.data_dir, device=resolve_device(config.device))

    @cached_property
    def rewind_at(self) -> int:
        """The iteration the trunk's rounds after round 0 start training at."""
        ipe = self.data.train_x.shape[0] // self.config.batch_size
        return parse_duration(self.config.rewind, ipe, self.config.budget_iterations(ipe))

    # -- model --------------------------------------------------------------------------
    def fresh_state(self, seed: int) -> dict[str, Tensor]:
        """A new draw of the model's initialiser with ``seed`` (on the CPU)."""
        from lth.models import build_model

        source = DATASETS.get(self.config.dataset)
        return build_model(self.config.model, source.input_shape, source.num_classes, seed=seed).state_dict()

    @cached_property
    def pruned_names(self) -> list[str]:
        """The tensors the trunk prunes (a rate above 0), in the model's order."""
        from lth.models import build_model
        from lth.pruning import layer_rates, prunable_parameters

        config = self.config
        source = DATASETS.get(config.dataset)
        model = build_model(config.model, source.input_shape, source.num_classes, seed=0)
        groups = prunable_parameters(model, config.prune_biases, config.ignore_layers)
        if config.scope == "layerwise":
            rates = layer_rates(
                groups,
                resolved(config.prune_rate_fc, "prune_rate_fc"),
                resolved(config.prune_rate_conv, "prune_rate_conv"),
                resolved(config.prune_rate_output, "prune_rate_output"),
            )
        else:
            rate = resolved(config.prune_rate, "prune_rate")
            rates = {name: rate for name in groups}
        return [name for name in groups if rates.get(name, 0.0) > 0.0]

    def dense_scores(self, generator: torch.Generator) -> dict[str, Tensor]:
        """The trunk criterion's scores of the dense round-0 network (w_i: the rewind weights)."""
        from lth.criteria import compute_scores

        config = self.config
        final = self.run.load_weights("final_round_00" if config.w_final == "end" else "w_final_round_00")
        names = self.pruned_names
        dense = self.level_mask(0)
        scores = compute_scores(
            config.criterion,
            {n: self.rewind_state[n] for n in names},
            {n: final[n] for n in names},
            {n: dense[n] for n in names},
            generator,
            derivatives=self._derivatives(dense),
        )
        # A weight the dense round already had pruned (an --init-mask) must stay pruned.
        return {n: torch.where(dense[n], s, torch.full_like(s, -float("inf"))) for n, s in scores.items()}

    def _derivatives(self, mask: Mask) -> dict[str, dict[str, Tensor]]:
        """What a model-based criterion needs at the rewind weights under ``mask`` ({} for the others)."""
        from lth.criteria import NEEDS_DERIVATIVE
        from lth.data import Batcher
        from lth.experiments.ticket_search import _derivatives
        from lth.models import build_model

        if self.config.criterion not in NEEDS_DERIVATIVE:
            return {}

        config, data = self.config, self.data
        model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed)
        model = model.to(data.train_x.device)
        model.load_state_dict(self.rewind_state)
        mask.apply_(model)
        batcher = Batcher(data.train_x, data.train_y, config.batch_size, seed=config.seed)
        found = _derivatives(self.config.criterion, model, batcher, self.pruned_names, tuple(data.input_shape))
        return {kind: {k: v.cpu() for k, v in values.items()} for kind, values in found.items()}
