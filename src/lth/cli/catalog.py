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
        if r.scope == "global":
            rates = f"global {r.prune_rate:g}"
        else:  # only the groups the model has: LeNet-300-100 has no conv layer to prune
            rate_of = {"fc": r.prune_rate_fc, "conv": r.prune_rate_conv, "output": r.prune_rate_output}
            rates = " / ".join(f"{group} {rate_of[group]:g}" for group in spec.groups or rate_of)
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
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also look here (as find-ticket --data-dir would) [$LTH_DATA_DIR, the cache, /usr/share/datasets].",
)
def datasets_command(data_dir: str | None) -> None:
    """List the registered datasets and where each one's files are on this machine."""
    from pathlib import Path

    from lth.data import DATASETS
    from lth.errors import LthError

    def where(source) -> str:
        try:
            found = source.locate(None if data_dir is None else Path(data_dir))
        except LthError as error:  # e.g. an incomplete --data-dir
            return "incomplete: " + str(error).split("; ")[0]
        return found if found is not None else "not here (downloaded on first use)"

    rows = [
        [
            name,
            "x".join(map(str, s.input_shape)),
            s.num_classes,
            s.train_size - s.val_size,
            s.val_size,
            s.test_size,
            where(s),
        ]
        for name, s in DATASETS.items()
    ]
    click.echo(tabulate(rows, headers=["dataset", "shape", "classes", "train", "val", "test", "files"]))
    click.echo("\n" + "\n".join(f"{name}: {s.description}" for name, s in DATASETS.items()))
