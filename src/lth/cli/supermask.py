"""``lth supermask ...``: supermasks; ``lth supermask eval`` evaluates masked, untrained networks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from lth import jsonio
from lth.cli.find_ticket import config_options, gather_config
from lth.cli.main import cli
from lth.cli.show import print_table, run_json
from lth.config import TicketConfig, make_config
from lth.errors import LthError
from lth.store import output_dir
from lth.store.run_dir import check_name

#: find-ticket options that set up the dense training (and which parameters are prunable).
DENSE_KEYS = (
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
    "eval_every",
    "device",
    "name",
    "ignore_layers",
    "prune_biases",
)
#: find-ticket options that modify the weights transforms (mask-1 options).
TRANSFORM_KEYS = ("keep_sign", "rescale", "jitter_sd", "constant")
#: What may change when a finished run is reused with --from.
FROM_KEYS = ("data_dir", "device", "name")


@cli.group("supermask")
def supermask() -> None:
    """Supermasks: masks that make an untrained network perform (Zhou et al. 2019)."""


def dense_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """find-ticket's options for the dense training and the mask-1 modifiers (no pruning ones)."""
    order = {key: index for index, key in enumerate(DENSE_KEYS + TRANSFORM_KEYS)}
    probe = config_options(lambda: None)
    params = sorted((p for p in probe.__click_params__ if p.name in order), key=lambda p: order[p.name])
    # click keeps decorator-added parameters in reverse order of declaration, in an attribute it
    # adds to the function (unknown to the type of a plain callable).
    function.__click_params__ = getattr(function, "__click_params__", []) + params[::-1]  # type: ignore[attr-defined]
    return function


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.replace(" ", "").split(",") if part]


def _keeps(text: str | None) -> list[float] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise LthError(f"cannot read --keep {text!r}; give fractions in (0, 1] like 1.0,0.5,0.1") from None


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@supermask.command("eval")
@click.argument("model", required=False)
@click.argument("dataset", required=False)
@dense_options
@click.option(
    "--config",
    "config_file",
    type=str,
    help="YAML file with find-ticket keys for the dense training; flags override it.",
)
@click.option(
    "--from",
    "from_run",
    type=str,
    metavar="RUN_DIR",
    help="Reuse a finished run's weights/init.pt (w_i), weights/final_round_00.pt (w_f) and config "
    "instead of training.",
)
@click.option(
    "--criteria",
    type=str,
    help="Comma-separated mask criteria (aliases allowed; snip, grad too) [all ranked criteria].",
)
@click.option(
    "--keep", "keep_text", type=str, help="Comma-separated fractions kept, in (0, 1] [1.0, 0.8, 0.64, ... 0.8^24]."
)
@click.option(
    "--weights",
    "weights_text",
    type=str,
    help="Comma-separated weights transforms: init or a mask-1 action [init,signed_constant,rand_signed_constant].",
)
@click.option(
    "--scope",
    type=str,
    default="layerwise",
    show_default=True,
    help="layerwise (each layer keeps the fraction) or global.",
)
@click.option("--seed", type=int, help="Seed of the dense net, tie-breaking and transforms [0, or the --from run's].")
@click.option("--out", type=str, help="Run directory [runs/MODEL-DATASET-supermask-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (as `lth show --json`).")
@click.option(
    "--no-share-trunk",
    is_flag=True,
    help="Train the dense net even if an earlier eval stored the same dense training [reuse it from "
    "RUNS_ROOT/.lth-dense].",
)
@click.pass_context
def eval_command(
    ctx: click.Context,
    model: str | None,
    dataset: str | None,
    config_file: str | None,
    from_run: str | None,
    criteria: str | None,
    keep_text: str | None,
    weights_text: str | None,
    scope: str,
    seed: int | None,
    out: str | None,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
    no_share_trunk: bool,
    **_: Any,
) -> None:
    """Evaluate supermasks at initialisation of MODEL on DATASET, without training.

    For each criterion x fraction kept x weights transform: a one-shot mask of the dense net,
    the transformed initial weights on the kept entries, test and train accuracy untrained.

    The dense training (w_f) is kept in RUNS_ROOT/.lth-dense: a later eval with the same dense
    recipe reuses it (bit-identical) whatever its grid; --no-share-trunk trains anew.

    Example: lth supermask eval lenet-300-100 fashion-mnist --criteria lfss,lf --weights signed_constant
    """
    from lth.actions import Mask1Options
    from lth.supermasks.evaluate import run_supermask_eval

    values = gather_config(ctx, model or "", dataset or "", config_file)
    transform = {key: values.pop(key) for key in TRANSFORM_KEYS if key in values}
    options = Mask1Options(**{key: value for key, value in transform.items() if value is not None})
    config: TicketConfig | None = None
    if from_run is not None:
        extra = [key for key in values if key not in (*FROM_KEYS, "model", "dataset")]
        if extra:
            raise LthError(
                f"{_flag(extra[0])} does not apply with --from: the run's own training config is reused "
                f"(only {', '.join(_flag(k) for k in FROM_KEYS)} may change)"
            )
        if (model is None) != (dataset is None):
            raise LthError("give both MODEL and DATASET, or neither with --from")
        from lth.supermasks.evaluate import load_finished_run

        stored = load_finished_run(from_run)[1]
        if model is not None and (model, dataset) != (stored.get("model"), stored.get("dataset")):
            raise LthError(
                f"--from {from_run!r} is a run of {stored.get('model')} on {stored.get('dataset')}, "
                f"not of {model} on {dataset}"
            )
        stored = {key: value for key, value in stored.items() if key in TicketConfig.model_fields}
        overrides = {key: values[key] for key in FROM_KEYS if key in values}
        config = make_config({**stored, "name": None, **overrides})
    else:
        if model is None or dataset is None:
            raise LthError("give MODEL and DATASET to train the dense net, or reuse a finished run with --from RUN_DIR")
        for key in ("rounds", "one_shot", "keep", "controls"):  # pruning keys of a config file
            values.pop(key, None)
        if seed is not None:
            values["seed"] = seed
        config = make_config({**values, "rounds": 0})
    if config.name is None:
        config.name = f"{config.model}-{config.dataset}-supermask-{datetime.now():%Y%m%d-%H%M%S}"
    check_name(config.name)
    with output_dir(out, config.name) as out_path:
        result = run_supermask_eval(
            config,
            criteria=_split(criteria),
            keeps=_keeps(keep_text),
            weights=_split(weights_text),
            scope=scope,
            seed=seed,
            options=options,
            from_run=from_run,
            out=out_path,
            overwrite=overwrite,
            progress=not quiet and not as_json,
            share_trunk=not no_share_trunk,
        )
    if as_json:
        click.echo(jsonio.dumps(run_json(result.run_dir), indent=2))
    elif not quiet:
        print_table(result.run_dir)
        if result.dense != "from":
            click.echo(
                f"dense training (w_f): {result.dense}"
                + (" (stored by an earlier eval with the same dense recipe)" if result.dense == "reused" else "")
            )
        click.echo(f"results and plots in {out_path}/")


from lth.cli import supermask_train  # noqa: E402,F401  (adds `lth supermask train` to the group above)
