"""``lth branch RUN KIND``: an ablation run off a finished ticket search (or every trial of a study)."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from lth import jsonio
from lth.cli.find_ticket import config_options
from lth.cli.main import cli

_KINDS_HELP = """\b
Kinds (each at every chosen level of the trunk):
  random-reinit  the level's mask, fresh weights from the model's initialiser
  random-prune   a random mask with the level's per-layer (--scope global: overall) sparsity, the trunk's rewind weights
  shuffle-mask   the level's mask permuted within each layer, the trunk's rewind weights
  flip-sign      the level's mask and starting weights, kept weights' signs inverted
  one-shot       the dense trunk pruned once to the level's sparsity by its criterion, rewound
  retrain        the level's mask and starting weights, trained with the overrides given
"""


def _training_overrides(function: Any) -> Any:
    from lth.experiments.branches import OVERRIDABLE

    return config_options(function, keys=OVERRIDABLE)


@cli.command("branch", epilog=_KINDS_HELP)
@click.argument("run_dir", metavar="RUN")
@click.argument("kind")
@click.option("--levels", type=str, help="Levels (rounds) of the trunk to branch at, e.g. 0-3,7 [all it has].")
@click.option("--seed", type=int, help="Seed of the branch's random draws [the trunk's; a study's trial i: SEED + i].")
@click.option("--scope", type=str, help="random-prune and one-shot: layerwise or global [the trunk's scope].")
@click.option("--model", type=str, help="The trunk's model (a branch cannot change it; given only to check).")
@click.option(
    "--dataset",
    type=str,
    help="Train on another dataset of the same input shape and classes (ticket transfer) [the trunk's].",
)
@_training_overrides
@click.option("--overwrite", is_flag=True, help="Replace an existing branch of the same name.")
@click.option("--resume", is_flag=True, help="Continue an unfinished branch of the same name (a finished one is kept).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the trunk with its branches as JSON (as `lth show --json`)."
)
@click.pass_context
def branch_command(
    ctx: click.Context,
    run_dir: str,
    kind: str,
    levels: str | None,
    seed: int | None,
    scope: str | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    as_json: bool,
    **values: Any,
) -> None:
    """Run a branch of KIND off the ticket search in RUN, or off every trial of the study in RUN.

    The branch uses the trunk's data, model and recipe unless training flags override them
    (another dataset must have the same input shape and classes). It lands in
    RUN/branches/NAME/ (NAME: the kind and its options), resumes like any run (`lth resume`)
    and shows beside the ticket in `lth show RUN`, its plots and `lth report`.

    Example: lth branch runs/lenet shuffle-mask --levels 1-5
    """
    from lth.errors import LthError
    from lth.experiments.branches import BranchResult, branch
    from lth.store.study_dir import StudyDir

    if resume and overwrite:
        raise LthError("--resume continues a branch and --overwrite replaces it; give one of them")
    overrides = {
        key: value for key, value in values.items() if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE
    }
    progress = not quiet and not as_json
    result = branch(
        run_dir,
        kind,
        levels=levels,
        seed=seed,
        scope=scope,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        **overrides,
    )
    if StudyDir.is_study(run_dir):
        from lth.cli.study import report_study

        report_study(StudyDir(run_dir), quiet, as_json)
        return
    from lth.cli.show import print_table, run_json
    from lth.store import RunDir

    trunk = RunDir.open(run_dir)
    if as_json:
        click.echo(jsonio.dumps(run_json(trunk), indent=2))
    elif not quiet:
        print_table(trunk)
        assert isinstance(result, BranchResult)  # one run (not a study): one branch
        click.echo(f"branch {result.name} in {result.run_dir.path}/")
