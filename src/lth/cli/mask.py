"""``lth mask``: a mask from the saved initial and final weights of any model."""
from __future__ import annotations

from typing import Optional

import click

from lth import jsonio
from lth.cli.main import cli
from lth.config import check_seed
from lth.errors import LthError
from lth.mask_from_weights import check_arguments, compute_mask, load_state_dict_file
from lth.masks import Mask, as_mask_tensor


@cli.command("mask")
@click.option("--init", "init_path", type=str, required=True, metavar="INIT.pt", help="State dict at the rewind point (torch.save(model.state_dict())).")
@click.option("--final", "final_path", type=str, required=True, metavar="FINAL.pt", help="State dict after training.")
@click.option("--criterion", type=str, metavar="NAME", default="large_final", show_default=True, help="Mask criterion.")
@click.option("--keep", type=float, help="Fraction of the (still kept) weights to keep, in (0, 1].")
@click.option("--prune-rate", type=float, help="Fraction of the (still kept) weights to remove, in [0, 1).")
@click.option("--scope", type=str, metavar="layerwise|global", default="layerwise", show_default=True, help="layerwise or global.")
@click.option("--prev-mask", "prev_mask_path", type=str, metavar="MASK.pt", help="Mask of the previous round; pruned weights stay pruned.")
@click.option("--prune-biases", is_flag=True, help="Prune the biases of Linear/Conv layers too.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for tie-breaking and random criteria.")
@click.option("--out", "out_path", type=str, required=True, metavar="MASK.pt", help="Where to write the mask (torch.save of bool tensors).")
@click.option("--quiet", "-q", is_flag=True, help="Summary without the per-layer densities.")
@click.option("--json", "as_json", is_flag=True, help='Print {"kept", "total", "density", "layers"} as JSON.')
def mask_command(
    init_path: str,
    final_path: str,
    criterion: str,
    keep: Optional[float],
    prune_rate: Optional[float],
    scope: str,
    prev_mask_path: Optional[str],
    prune_biases: bool,
    seed: int,
    out_path: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Compute a mask from INIT and FINAL weights and write it to OUT."""
    check_arguments(criterion, keep, prune_rate, scope)  # fail fast, before reading files
    check_seed(seed, "--seed")
    init = load_state_dict_file(init_path, "init", finite=True)
    final = load_state_dict_file(final_path, "final", finite=True)
    prev = None if prev_mask_path is None else load_state_dict_file(prev_mask_path, "previous mask")
    if prev is not None:
        prev = {k: as_mask_tensor(v, f"previous mask file {prev_mask_path!r}", k) for k, v in prev.items()}
    mask = compute_mask(
        init, final, criterion, keep=keep, prune_rate=prune_rate, scope=scope,
        prev_mask=prev, prune_biases=prune_biases, seed=seed,
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


def summary(mask: Mask) -> dict[str, object]:
    """The documented JSON shape: kept, total, density and per-layer density."""
    return {
        "kept": mask.kept(),
        "total": mask.size(),
        "density": mask.density(),
        "layers": mask.layer_density(),
    }
