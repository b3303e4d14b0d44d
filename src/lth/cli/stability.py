"""``lth stability``: instability analysis / linear mode connectivity of a dense network or a ticket search."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from lth import jsonio
from lth.cli.find_ticket import config_options
from lth.cli.main import cli
from lth.cpus import available_cpus

#: The training flags of the command (the recipe of the dense network analysed).
TRAINING_KEYS = (
    "data_dir",
    "iterations",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "milestones",
    "gamma",
    "warmup",
    "seed",
    "eval_every",
    "checkpoint_every",
    "vectorize",
    "device",
    "precision",
    "compile",
    "channels_last",
    "name",
)


def _training_options(function: Any) -> Any:
    return config_options(function, keys=TRAINING_KEYS)


@cli.command("stability")
@click.argument("model", required=False)
@click.argument("dataset", required=False)
@click.option("--from", "from_run", type=str, help="A finished ticket search: analyse its levels with its own recipe.")
@click.option("--levels", type=str, help="With --from: the levels (rounds) to analyse, e.g. 0,3,7 [all it has].")
@click.option(
    "--rewind",
    type=str,
    help="Rewind points k: iterations (500 or 500it), epochs (2ep) or fractions "
    "of the budget (0.05), comma-separated [0; with --from the search's own rewind point].",
)
@click.option(
    "--copies",
    type=int,
    default=2,
    show_default=True,
    help="Children trained from each k with their own data order; every pair is interpolated.",
)
@click.option("--points", type=int, default=31, show_default=True, help="Evenly spaced points along each path.")
@click.option(
    "--path-train-size",
    type=int,
    default=10_000,
    show_default=True,
    help="Training examples (a fixed subset) the paths are evaluated on, beside the test set.",
)
@click.option(
    "--stable-threshold",
    type=float,
    default=2.0,
    show_default=True,
    help="Stable at k when the mean test instability is at most this many percentage points.",
)
@click.option(
    "--bn-reset/--no-bn-reset",
    default=True,
    show_default=True,
    help="Recompute BatchNorm statistics on training data at every point of a path.",
)
@click.option(
    "--trials",
    type=int,
    default=1,
    show_default=True,
    help="Independent repetitions (trial i: seed + i) pooled into the statistics.",
)
@click.option(
    "--backend",
    type=str,
    default="local",
    show_default=True,
    help="Where the children of each k train: local (this process: one after another on a CPU, side by "
    "side on a GPU) or process (a local process pool, for multi-core CPUs).",
)
@click.option("--workers", type=int, help="process: worker processes [one per CPU, at most --copies].")
@_training_options
@click.option("--config", "config_file", type=str, help="YAML file of training settings; flags override it.")
@click.option("--out", type=str, help="Run directory [with --from: RUN/stability; else runs/NAME].")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--resume", is_flag=True, help="Continue the unfinished analysis in --out instead of refusing it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (as `lth show --json`).")
@click.pass_context
def stability_command(
    ctx: click.Context,
    model: str | None,
    dataset: str | None,
    from_run: str | None,
    levels: str | None,
    rewind: str | None,
    copies: int,
    points: int,
    path_train_size: int,
    stable_threshold: float,
    bn_reset: bool,
    trials: int,
    backend: str,
    workers: int | None,
    config_file: str | None,
    out: str | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    as_json: bool,
    **_: Any,
) -> None:
    """Instability analysis: is the network stable to SGD noise from rewind point k on?

    For each k, the network trains from its start to k once, then --copies children train from
    there to the end of the budget with different data orders; the error along the linear path
    between every two children is measured. Instability = the highest error on the path minus the
    mean of its ends (Frankle et al. 2020); stable when at most --stable-threshold points.

    \b
    Examples:
      lth stability lenet-300-100 fashion-mnist --rewind 0,100,500,2000 --iterations 5000
      lth stability --from runs/lenet --levels 0,7,13 --rewind 0,500
    """
    from lth.cli.find_ticket import gather_config
    from lth.config import make_config
    from lth.errors import LthError
    from lth.experiments.branches import parse_levels
    from lth.experiments.stability import (
        StabilitySettings,
        _threshold_fraction,
        parse_rewind_points,
        run_stability,
    )
    from lth.store.run_dir import check_name

    if resume and overwrite:
        raise LthError("--resume continues an analysis and --overwrite replaces it; give one of them")
    if resume and out is None and from_run is None:
        raise LthError("--resume needs --out DIR, the run directory to continue")
    given = {
        key: ctx.params[key] for key in TRAINING_KEYS if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE
    }
    config = None
    if from_run is not None:
        if model is not None or dataset is not None:
            raise LthError(f"--from analyses the model and dataset of {from_run!r}; do not give MODEL DATASET too")
        if config_file is not None:
            raise LthError("--config sets a recipe; with --from the ticket search's own recipe is used")
    else:
        if model is None or dataset is None:
            raise LthError("give MODEL DATASET (e.g. lth stability lenet-300-100 fashion-mnist) or --from RUN")
        if levels is not None:
            raise LthError("--levels needs --from RUN (a ticket search); without it the dense network is analysed")
        config = make_config(gather_config(ctx, model, dataset, config_file))
        if config.name is not None:
            check_name(config.name)
    settings = StabilitySettings(
        rewind=None if rewind is None else parse_rewind_points(rewind),
        copies=copies,
        points=points,
        path_train_size=path_train_size,
        stable_threshold=_threshold_fraction(stable_threshold),
        batch_norm_reset=bn_reset,
        trials=trials,
        levels=None if levels is None else parse_levels(levels),
    )
    progress = not quiet and not as_json
    out_path = out
    if out_path is None and config is not None and config.name is not None:
        from lth.store.run_dir import runs_root

        out_path = str(runs_root() / config.name)
    result = run_stability(
        config,
        settings,
        from_run,
        out_path,
        overwrite,
        resume,
        progress,
        overrides=given if from_run is not None else None,
        workers=stability_workers(backend, workers, copies),
    )
    report_stability(result.run_dir, quiet, as_json)


def stability_workers(backend: str, workers: int | None, copies: int = 2) -> int | None:
    """The worker processes of ``--backend`` (None: local), LthError for a bad value."""
    from lth.errors import LthError

    if backend not in ("local", "process"):
        raise LthError(f"unknown --backend {backend!r} for lth stability; choose local or process")
    if backend == "local":
        if workers is not None:
            raise LthError("--workers applies to --backend process")
        return None
    if workers is not None and workers < 1:
        raise LthError(f"--workers must be a whole number >= 1, got {workers}")
    return workers or max(1, min(available_cpus(), copies))


def report_stability(run: Any, quiet: bool, as_json: bool) -> None:
    """Print a stability run's table (or its JSON)."""
    from lth.cli.show import print_table, run_json

    if as_json:
        click.echo(jsonio.dumps(run_json(run), indent=2))
    elif not quiet:
        print_table(run)
        click.echo(f"results and plots in {run.path}/")
