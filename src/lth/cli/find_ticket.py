"""``lth find-ticket MODEL DATASET``: iterative magnitude pruning with rewinding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from lth import jsonio
from lth.cli.main import cli
from lth.cli.show import print_table, run_json
from lth.config import load_config_file, make_config
from lth.errors import LthError
from lth.store import default_run_dir
from lth.store.run_dir import check_name

# CLI options that map one-to-one onto TicketConfig keys (dashes become underscores).
_CONFIG_OPTIONS = [
    click.option(
        "--data-dir", type=str, help="Directory holding the dataset files (else $LTH_DATA_DIR, cache, download)."
    ),
    click.option("--rounds", type=int, help="Pruning rounds after the dense round 0 [15]."),
    click.option("--prune-rate", type=float, help="Fraction of the kept weights pruned per round, all groups."),
    click.option("--prune-rate-fc", type=float, help="Rate for hidden fully connected layers (layerwise)."),
    click.option("--prune-rate-conv", type=float, help="Rate for convolutional layers (layerwise)."),
    click.option("--prune-rate-output", type=float, help="Rate for the output layer (layerwise)."),
    click.option("--scope", type=str, help="layerwise or global pruning [model recipe]."),
    click.option("--ignore-layers", type=str, help="Comma-separated layers to leave dense, e.g. fc1,fc3."),
    click.option("--prune-biases", is_flag=True, default=None, help="Prune biases too."),
    click.option("--criterion", type=str, help="Mask criterion, e.g. large_final, movement, lfss [large_final]."),
    click.option("--w-final", type=str, help="Which weights are w_f: end, early-stop, or a step like 2000it [end]."),
    click.option(
        "--mask1",
        type=str,
        help="Mask-1 action on kept weights: rewind, reinit, random_reinit, "
        "random_reshuffle, constant, jitter, signed_reinit, signed_reshuffle, signed_constant, "
        "rand_signed_constant [rewind].",
    ),
    click.option("--keep-sign", is_flag=True, default=None, help="Kept weights take the sign of w_i."),
    click.option("--rescale", is_flag=True, default=None, help="Scale kept weights by layer size / kept count."),
    click.option("--jitter-sd", type=float, help="Standard deviation of the jitter action [0.01]."),
    click.option("--constant", type=float, help="Magnitude of the constant actions [std of the layer's init]."),
    click.option(
        "--mask0",
        type=str,
        help="Mask-0 action on pruned weights: zero, freeze_init, freeze_init_zero_mask, freeze_init_zero_all [zero].",
    ),
    click.option("--one-shot", is_flag=True, default=None, help="Prune once, to --keep, instead of iteratively."),
    click.option("--keep", type=float, help="Fraction of the weights kept by --one-shot pruning, in (0, 1]."),
    click.option(
        "--init-mask", type=str, help="Start from this mask (lth mask file, e.g. from `lth mask` or a supermask)."
    ),
    click.option(
        "--prune-at-init",
        type=str,
        help="Prune at initialisation before round 0: snip, grasp, synflow, "
        "magnitude or random (see `lth prune-at-init`).",
    ),
    click.option("--init-keep", type=float, help="Fraction of the weights --prune-at-init keeps, in (0, 1]."),
    click.option(
        "--init-ablation",
        type=str,
        help="Sanity check of the --prune-at-init mask: none, shuffle, reinit or invert [none].",
    ),
    click.option(
        "--prune-iterations",
        type=int,
        help="Iterations of pruning at initialisation, on an exponential schedule [synflow 100, others 1].",
    ),
    click.option("--score-batches", type=int, help="Training batches snip and grasp score on at initialisation [10]."),
    click.option("--controls", type=str, help="Comma-separated controls run beside the ticket: reinit,random-prune."),
    click.option("--rewind", type=str, help="Rewind point: 0, 500it, 2ep or a fraction like 0.05 of the budget [0]."),
    click.option("--iterations", type=int, help="Training budget per round in iterations."),
    click.option("--epochs", type=float, help="Training budget per round in epochs."),
    click.option("--batch-size", type=int, help="Mini-batch size."),
    click.option("--optimizer", type=str, help="adam or sgd."),
    click.option("--lr", type=float, help="Learning rate."),
    click.option("--momentum", type=float, help="SGD momentum."),
    click.option("--nesterov/--no-nesterov", default=None, help="Nesterov momentum."),
    click.option("--weight-decay", type=float, help="L2 weight decay."),
    click.option("--milestones", type=str, help="Comma-separated LR drops, e.g. 80ep,120ep."),
    click.option("--gamma", type=float, help="LR factor at each milestone."),
    click.option("--warmup", type=str, help="Linear LR warmup length, e.g. 10000it or 1ep."),
    click.option("--seed", type=int, help="Seed of initialisation, data order and tie-breaking [0]."),
    click.option("--eval-every", type=int, help="Evaluate validation and test every N iterations [100]."),
    click.option(
        "--checkpoint-every",
        type=int,
        help="Iterations between checkpoints inside a round; 0 checkpoints at round boundaries only [1000].",
    ),
    click.option(
        "--vectorize",
        type=str,
        help="Train networks side by side in one vectorised step: the controls "
        "beside the ticket, and with `lth robust` up to K trials: auto (on a GPU, models without batch "
        "norm or dropout; a CPU gains nothing), off, or K [auto].",
    ),
    click.option("--device", type=str, help="auto, cpu or cuda [auto]."),
    click.option(
        "--precision",
        type=str,
        help="fp32, or bf16 autocast of the forward passes (weights, gradients and "
        "optimizer stay fp32; for GPUs with bf16 tensor cores) [fp32].",
    ),
    click.option(
        "--compile/--no-compile",
        default=None,
        help="Run forward passes through torch.compile (pays on a GPU; tens of seconds to compile) [no].",
    ),
    click.option(
        "--channels-last/--no-channels-last",
        default=None,
        help="NHWC memory layout for conv nets (faster cuDNN convolutions on GPUs) [no].",
    ),
    click.option(
        "--log",
        type=str,
        help="Mirror metrics to tensorboard and/or mlflow (comma-separated; "
        "needs pip install 'lth[tensorboard]' / 'lth[mlflow]').",
    ),
    click.option("--name", type=str, help="Run name (default: MODEL-DATASET-TIMESTAMP)."),
]


def _option_name(option: Callable[[Any], Any]) -> str:
    """The parameter name of a ``click.option(...)`` decorator (click records it on the function)."""
    decorated: Any = option(lambda: None)
    return decorated.__click_params__[0].name


CONFIG_KEYS = [_option_name(option) for option in _CONFIG_OPTIONS]


def config_options(function: Any, keys: Sequence[str] | None = None) -> Any:
    """Add the config options (only those named in ``keys``, when given) to a click command."""
    for option, key in reversed(list(zip(_CONFIG_OPTIONS, CONFIG_KEYS))):
        if keys is None or key in keys:
            function = option(function)
    return function


def gather_config(ctx: click.Context, model: str, dataset: str, config_file: str | None) -> dict[str, Any]:
    """Config file values, overridden by the flags given on the command line."""
    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for key in CONFIG_KEYS:
        if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE:
            values[key] = ctx.params[key]
    values["model"], values["dataset"] = model, dataset
    return values


@cli.command("find-ticket")
@click.argument("model")
@click.argument("dataset")
@config_options
@click.option("--config", "config_file", type=str, help="YAML file with the same keys; flags override it.")
@click.option("--out", type=str, help="Run directory [runs/NAME].")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option(
    "--resume", is_flag=True, help="Continue the unfinished run in --out (same config) instead of refusing it."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (as `lth show --json`).")
@click.pass_context
def find_ticket_command(
    ctx: click.Context,
    model: str,
    dataset: str,
    config_file: str | None,
    out: str | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    as_json: bool,
    **_: Any,
) -> None:
    """Find a winning ticket of MODEL on DATASET by iterative magnitude pruning.

    Example: lth find-ticket lenet-300-100 fashion-mnist --rounds 5
    """
    from lth.experiments import find_ticket

    config = make_config(gather_config(ctx, model, dataset, config_file))
    if config.name is not None:
        check_name(config.name)
    if resume and overwrite:
        raise LthError("--resume continues a run and --overwrite replaces it; give one of them")
    if resume and out is None:
        raise LthError("--resume needs --out DIR, the run directory to continue")
    progress = not quiet and not as_json
    if out is not None:
        result = find_ticket(config, out=Path(out), overwrite=overwrite, progress=progress, resume=resume)
    else:
        with default_run_dir(config.name or f"{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}") as path:
            config.name = path.name
            result = find_ticket(config, out=path, progress=progress)
    report(result.run_dir, quiet, as_json)


def report(run_dir: Any, quiet: bool, as_json: bool) -> None:
    """Print a finished run as a table (or JSON)."""
    if as_json:
        click.echo(jsonio.dumps(run_json(run_dir), indent=2))
    elif not quiet:
        print_table(run_dir)
        click.echo(f"results and plots in {run_dir.path}/")
