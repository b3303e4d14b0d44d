"""``lth models`` and ``lth datasets``: what exists, with defaults."""
from __future__ import annotations

import click
from tabulate import tabulate

from lth.cli.main import cli


@cli.command("models")
def models_command() -> None:
    """List the registered models with their paper recipes."""
    from lth.models import MODELS

    rows = []
    for name, spec in MODELS.items():
        r = spec.recipe
        rates = (
            f"global {r.prune_rate:g}" if r.scope == "global"
            else f"fc {r.prune_rate_fc:g} / conv {r.prune_rate_conv:g} / out {r.prune_rate_output:g}"
        )
        schedule = f"{r.optimizer} lr {r.lr:g}"
        if r.momentum:
            schedule += f" m {r.momentum:g}"
        if r.weight_decay:
            schedule += f" wd {r.weight_decay:g}"
        if r.milestones:
            schedule += f", /{1 / r.gamma:g} at {','.join(r.milestones)}"
        if r.warmup not in ("0it", "0"):
            schedule += f", warmup {r.warmup}"
        rows.append([name, spec.family, schedule, r.batch_size, r.budget, rates, r.initializer])
    click.echo(tabulate(rows, headers=["model", "family", "optimizer", "batch", "budget", "prune rates", "init"]))


@cli.command("datasets")
def datasets_command() -> None:
    """List the registered datasets."""
    from lth.data import DATASETS

    rows = [
        [name, "x".join(map(str, s.input_shape)), s.num_classes, s.train_size - s.val_size, s.val_size,
         s.test_size, s.description]
        for name, s in DATASETS.items()
    ]
    click.echo(tabulate(rows, headers=["dataset", "shape", "classes", "train", "val", "test", "description"]))
