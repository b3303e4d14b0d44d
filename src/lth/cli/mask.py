"""``lth mask``: a mask from the saved initial and final weights of any model."""

from __future__ import annotations

import click

from lth import jsonio
from lth.cli.main import cli
from lth.config import check_seed
from lth.errors import LthError
from lth.mask_from_weights import check_arguments, compute_mask, load_state_dict_file
from lth.masks import Mask, as_mask_tensor


@cli.command("mask")
@click.option(
    "--init",
    "init_path",
    type=str,
    required=True,
    metavar="INIT.pt",
    help="State dict at the rewind point (torch.save(model.state_dict())).",
)
@click.option(
    "--final",
    "final_path",
    type=str,
    metavar="FINAL.pt",
    help="State dict after training (not needed by criteria of w_i alone: large_init, small_init, random, "
    "snip, grad, grasp, synflow).",
)
@click.option("--criterion", type=str, metavar="NAME", default="large_final", show_default=True, help="Mask criterion.")
@click.option("--keep", type=float, help="Fraction of the (still kept) weights to keep, in (0, 1].")
@click.option("--prune-rate", type=float, help="Fraction of the (still kept) weights to remove, in [0, 1).")
@click.option(
    "--scope", type=str, metavar="layerwise|global", default="layerwise", show_default=True, help="layerwise or global."
)
@click.option(
    "--prev-mask",
    "prev_mask_path",
    type=str,
    metavar="MASK.pt",
    help="Mask of the previous round; pruned weights stay pruned.",
)
@click.option("--prune-biases", is_flag=True, help="Prune the biases of Linear/Conv layers too.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for tie-breaking and random criteria.")
@click.option(
    "--model",
    "model_name",
    type=str,
    metavar="NAME",
    help="Registered model the weights belong to: needed by snip, grad, grasp and synflow (see `lth models`).",
)
@click.option(
    "--dataset", type=str, metavar="NAME", help="Dataset for the model's shape, and the data snip/grad/grasp score on."
)
@click.option("--data-dir", type=str, help="Directory holding the dataset files.")
@click.option(
    "--prune-iterations",
    type=int,
    help="snip/grasp/synflow: prune in N iterations on an exponential schedule [synflow 100, others 1].",
)
@click.option(
    "--score-batches",
    type=int,
    default=10,
    show_default=True,
    help="snip/grad/grasp: training batches scored on (of the model recipe's batch size).",
)
@click.option(
    "--out",
    "out_path",
    type=str,
    required=True,
    metavar="MASK.pt",
    help="Where to write the mask (torch.save of bool tensors).",
)
@click.option("--quiet", "-q", is_flag=True, help="Summary without the per-layer densities.")
@click.option("--json", "as_json", is_flag=True, help='Print {"kept", "total", "density", "layers"} as JSON.')
def mask_command(
    init_path: str,
    final_path: str | None,
    criterion: str,
    keep: float | None,
    prune_rate: float | None,
    scope: str,
    prev_mask_path: str | None,
    prune_biases: bool,
    seed: int,
    model_name: str | None,
    dataset: str | None,
    data_dir: str | None,
    prune_iterations: int | None,
    score_batches: int,
    out_path: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Compute a mask from INIT and FINAL weights and write it to OUT.

    Model-based criteria (snip, grad, grasp, synflow) score the network itself: give --model and
    --dataset. Example: lth mask --init init.pt --criterion synflow --keep 0.01 --scope global
    --model lenet-300-100 --dataset fashion-mnist --out mask.pt
    """
    from lth.criteria import NEEDS_DERIVATIVE

    rate = check_arguments(criterion, keep, prune_rate, scope)  # fail fast, before reading files
    check_seed(seed, "--seed")
    model_based = criterion in NEEDS_DERIVATIVE
    _check_model_options(criterion, model_based, model_name, dataset, final_path, prune_iterations, score_batches)
    init = load_state_dict_file(init_path, "init", finite=True)
    final = init if final_path is None else load_state_dict_file(final_path, "final", finite=True)
    prev = None if prev_mask_path is None else load_state_dict_file(prev_mask_path, "previous mask")
    if prev is not None:
        prev = {k: as_mask_tensor(v, f"previous mask file {prev_mask_path!r}", k) for k, v in prev.items()}
    if model_based:
        from lth.init_pruning.saved_weights import mask_with_model
        from lth.mask_from_weights import prunable_names

        assert model_name is not None and dataset is not None
        previous = None if prev is None else Mask(prev)
        names = list(previous) if previous is not None else prunable_names(init, prune_biases)
        if previous is not None:
            previous.check_matches(init)
        if not names:
            raise LthError(
                "no prunable tensors found: expected Linear/Conv weights named '*.weight' with 2 or more dimensions"
            )
        mask = mask_with_model(
            init,
            criterion,
            model_name,
            dataset,
            rate=rate,
            scope=scope,
            names=names,
            prev_mask=previous,
            seed=seed,
            iterations=prune_iterations,
            batches=score_batches,
            data_dir=data_dir,
        )
    else:
        mask = compute_mask(
            init,
            final,
            criterion,
            keep=keep,
            prune_rate=prune_rate,
            scope=scope,
            prev_mask=prev,
            prune_biases=prune_biases,
            seed=seed,
        )
    try:
        mask.save(out_path)
    except OSError as error:
        raise LthError(f"cannot write mask file {out_path!r}: {error.strerror or error}") from None
    if as_json:
        click.echo(jsonio.dumps(summary(mask), indent=2))
        return
    line = f"mask: {mask.kept()} / {mask.size()} weights kept ({100 * mask.density():.2f}%) -> {out_path}"
    if not quiet:
        layers = ", ".join(f"{name} {100 * d:.2f}%" for name, d in mask.layer_density().items())
        line += f"; {layers}"
    click.echo(line)


def _check_model_options(
    criterion: str,
    model_based: bool,
    model_name: str | None,
    dataset: str | None,
    final_path: str | None,
    prune_iterations: int | None,
    score_batches: int,
) -> None:
    """The option rules of ``lth mask``, checked before any file is read."""
    from lth.data import DATASETS
    from lth.models import MODELS

    if model_based:
        if model_name is None or dataset is None:
            raise LthError(
                f"criterion {criterion!r} scores the network itself: give --model NAME and --dataset NAME "
                "(see `lth models` and `lth datasets`)"
            )
        MODELS.get(model_name)
        DATASETS.get(dataset)
    elif model_name is not None or dataset is not None or prune_iterations is not None:
        given = "--model" if model_name is not None else "--dataset" if dataset is not None else "--prune-iterations"
        raise LthError(f"{given} applies to the model-based criteria (snip, grad, grasp, synflow), not {criterion!r}")
    if final_path is None and criterion not in INIT_ONLY:
        raise LthError(
            f"criterion {criterion!r} compares initial and final weights: give --final FINAL.pt "
            f"(criteria of w_i alone: {', '.join(INIT_ONLY)})"
        )
    if prune_iterations is not None and prune_iterations < 1:
        raise LthError(f"--prune-iterations must be a whole number >= 1, got {prune_iterations}")
    if score_batches < 1:
        raise LthError(f"--score-batches must be a whole number >= 1, got {score_batches}")


#: Criteria that read only w_i (and the model): --final may be left out.
INIT_ONLY = ("large_init", "small_init", "random", "snip", "grad", "grasp", "synflow")


def summary(mask: Mask) -> dict[str, object]:
    """The documented JSON shape: kept, total, density and per-layer density."""
    return {
        "kept": mask.kept(),
        "total": mask.size(),
        "density": mask.density(),
        "layers": mask.layer_density(),
    }
