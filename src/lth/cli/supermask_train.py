"""``lth supermask train MODEL DATASET``: learn a supermask over frozen weights."""

from __future__ import annotations

from datetime import datetime

import click

from lth import jsonio
from lth.cli.supermask import supermask
from lth.store import output_dir


@supermask.command("train")
@click.argument("model")
@click.argument("dataset")
@click.option(
    "--method",
    type=str,
    default="bernoulli",
    show_default=True,
    help="bernoulli (Zhou et al.: sampled masks) or edge-popup (Ramanujan et al.: top-k by |score|).",
)
@click.option(
    "--weights",
    type=str,
    help="Frozen weights: init, signed_constant or signed_kaiming_constant "
    "[init for bernoulli, signed_kaiming_constant for edge-popup].",
)
@click.option("--score-init", type=float, help="Initial score of every weight, bernoulli only [0, so p = 0.5].")
@click.option("--dynamic-scaling", is_flag=True, help="Scale each layer by size / kept count every forward.")
@click.option("--keep", type=float, help="Fraction of each layer kept by edge-popup, in (0, 1] [0.5].")
@click.option("--iterations", type=int, help="Training budget in iterations [2000].")
@click.option("--epochs", type=float, help="Training budget in epochs (instead of --iterations).")
@click.option("--batch-size", type=int, help="Mini-batch size [250 bernoulli, 128 edge-popup].")
@click.option("--optimizer", type=str, default="sgd", show_default=True, help="sgd or adam.")
@click.option("--lr", type=float, help="Learning rate of the scores [sgd: 100 bernoulli, 0.1 edge-popup; adam: 0.001].")
@click.option("--momentum", type=float, help="SGD momentum [0.9].")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the weights, scores, sampling and data order."
)
@click.option(
    "--eval-every", type=int, default=100, show_default=True, help="Evaluate validation and test every N iterations."
)
@click.option("--device", type=str, default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--data-dir", type=str, help="Directory holding the dataset files (else $LTH_DATA_DIR, cache, download).")
@click.option("--out", type=str, help="Run directory [runs/supermask-METHOD-MODEL-DATASET-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (supermask_train.json) as JSON.")
def supermask_train_command(
    model: str,
    dataset: str,
    method: str,
    weights: str | None,
    score_init: float | None,
    dynamic_scaling: bool,
    keep: float | None,
    iterations: int | None,
    epochs: float | None,
    batch_size: int | None,
    optimizer: str,
    lr: float | None,
    momentum: float | None,
    seed: int,
    eval_every: int,
    device: str,
    data_dir: str | None,
    out: str | None,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Learn a supermask of MODEL on DATASET: the weights stay frozen, only per-weight scores train.

    Writes config.yaml, status.json, metrics.csv, supermask_train.json and mask.pt (the
    thresholded expected mask for bernoulli, the top-k mask for edge-popup).

    Example: lth supermask train lenet-300-100 mnist --method bernoulli --dynamic-scaling
    """
    from lth.supermasks.train import SUMMARY_FILE, run_supermask_training

    with output_dir(out, f"supermask-{method}-{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}") as out_path:
        run = run_supermask_training(
            model,
            dataset,
            method,
            weights=weights,
            score_init=score_init,
            dynamic_scaling=dynamic_scaling,
            keep=keep,
            iterations=iterations,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            momentum=momentum,
            seed=seed,
            eval_every=eval_every,
            device=device,
            data_dir=data_dir,
            out=out_path,
            overwrite=overwrite,
            progress=not quiet and not as_json,
        )
    result = run.result
    if as_json:
        click.echo(jsonio.dumps({**result.summary(), "run_dir": str(out_path)}, indent=2))
        return
    if quiet:
        return
    line = (
        f"{method} supermask of {model} on {dataset}: test accuracy {100 * result.test_accuracy_expected:.2f}% "
        f"({'thresholded expected' if method == 'bernoulli' else 'top-k'} mask)"
    )
    if result.test_accuracy_sampled_mean is not None:
        line += (
            f", {100 * result.test_accuracy_sampled_mean:.2f}% ± {100 * (result.test_accuracy_sampled_std or 0):.2f}%"
            f" over {len(result.test_accuracy_sampled)} sampled masks"
        )
    click.echo(f"{line}; {100 * result.density:.2f}% of the weights kept")
    click.echo("  " + ", ".join(f"{name} {100 * d:.2f}%" for name, d in result.layers.items()))
    click.echo(f"results in {out_path}/ ({SUMMARY_FILE}, mask.pt)")
