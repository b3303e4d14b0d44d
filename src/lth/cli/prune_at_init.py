"""``lth prune-at-init MODEL DATASET``: prune at initialisation, then train, over methods, fractions
kept, ablations and trials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from lth.cli.find_ticket import config_options, gather_config
from lth.cli.main import cli
from lth.cli.study import backend_options, gather_backend
from lth.errors import LthError
from lth.experiments.limits import MAX_RUNS, check_max_runs

#: The find-ticket options a pruning-at-init study takes (the rest are IMP's).
STUDY_KEYS = (
    "data_dir",
    "scope",
    "ignore_layers",
    "prune_biases",
    "prune_iterations",
    "score_batches",
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
    "log",
    "name",
)


@cli.command("prune-at-init")
@click.argument("model")
@click.argument("dataset")
@click.option(
    "--method",
    "methods",
    type=str,
    default="synflow",
    show_default=True,
    help="Comma-separated methods: snip, grasp, synflow, magnitude, random (or all).",
)
@click.option(
    "--keep",
    "keeps",
    type=str,
    default="0.1,0.03,0.01,0.003",
    show_default=True,
    help="Comma-separated fractions of the weights kept, each in (0, 1].",
)
@click.option(
    "--ablation",
    "ablations",
    type=str,
    default="none",
    show_default=True,
    help="Comma-separated sanity checks: none (the method's mask), shuffle, reinit, invert.",
)
@click.option("--trials", type=int, default=1, show_default=True, help="Repetitions; trial i uses seed SEED + i.")
@click.option("--compare", multiple=True, metavar="RUN", help="An IMP run or study to draw on the same axes (repeat).")
@click.option("--max-runs", type=int, help=f"The most runs the study may have [{MAX_RUNS}].")
@lambda command: config_options(command, STUDY_KEYS)
@click.option("--config", "config_file", type=str, help="YAML file with these keys; flags override it.")
@click.option("--out", type=str, help="Study directory [runs/prune-at-init-MODEL-DATASET-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace an existing study directory.")
@click.option("--resume", is_flag=True, help="Continue the study in --out: only unfinished runs run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the study as JSON (as `lth show --json`).")
@backend_options
@click.pass_context
def prune_at_init_command(
    ctx: click.Context,
    model: str,
    dataset: str,
    methods: str,
    keeps: str,
    ablations: str,
    trials: int,
    compare: tuple[str, ...],
    max_runs: int | None,
    config_file: str | None,
    out: str | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Prune MODEL at initialisation, then train it on DATASET with the model's recipe: one run per
    method x --keep x --ablation x trial, summarised over trials and plotted (test accuracy against
    weights remaining, one line per method, ablations dashed).

    \b
    Methods (scores, higher kept): snip |g*w| and grasp w*Hg on --score-batches training batches
    [10]; synflow (data-free) |w|*dR/d|w|, in --prune-iterations [100] on an exponential schedule;
    magnitude |w|; random. --prune-iterations N makes any method iterative. --scope global [default]
    or layerwise. Ablations (Frankle et al. 2021): shuffle the mask within each layer, reinit the
    kept weights, invert (keep the lowest scores, same count per layer).

    Example: lth prune-at-init lenet-300-100 fashion-mnist --method all --keep 0.1,0.01 --ablation none,shuffle
    """
    from lth.cli.study import _check_flags, report_study
    from lth.experiments.init_pruning_study import (
        build_experiments,
        parse_ablations,
        parse_keeps,
        parse_methods,
        run_prune_at_init,
    )
    from lth.store import output_dir
    from lth.store.run_dir import check_name

    _check_flags(resume, overwrite)
    backend, backend_opts = gather_backend(kwargs)
    chosen = parse_methods(methods)
    fractions = parse_keeps(keeps)
    checks = parse_ablations(ablations)
    base = gather_config(ctx, model, dataset, config_file)
    limit = None if max_runs is None else check_max_runs(max_runs, "--max-runs")
    build_experiments(base, chosen, fractions, checks, trials, limit)  # every config checked before anything is written
    name = base.get("name") or f"prune-at-init-{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    check_name(name, "study name")
    if resume and out is None:
        raise LthError("--resume needs --out DIR, the study directory to continue")
    with output_dir(out, name) as out_path:
        result = run_prune_at_init(
            base,
            chosen,
            fractions,
            checks,
            trials,
            out_path,
            compare=compare,
            name=name,
            overwrite=overwrite,
            resume=resume,
            progress=not quiet and not as_json,
            backend=backend,
            backend_options=backend_opts,
            max_runs=limit,
        )
    report_study(result.study_dir, quiet, as_json)


def print_prune_at_init_study(study: Any) -> None:
    """Per method, ablation and fraction kept: test accuracy at early stop (mean ± CI half-width
    [min, max]), the final one, and how many runs lost a whole layer (layer collapse)."""
    from tabulate import tabulate

    from lth.cli.study import _mean_ci
    from lth.experiments.init_pruning_study import collapsed_runs
    from lth.store.study_dir import ABLATION_PREFIX, line_order

    description, status = study.study(), study.status()
    click.echo(
        f"{description['kind']} {description.get('name') or study.path.name}: "
        f"{status.get('runs_complete', 0)}/{status.get('runs_total', '?')} runs complete ({status.get('status')})"
    )
    rows = study.summary()
    by_key = {(r["experiment"], r["line"], r["round"], r["metric"]): r for r in rows}
    methods = list(dict.fromkeys(r["experiment"] for r in rows))
    keys = sorted(
        (k for k in by_key if k[3] == "test_accuracy_at_early_stop"),
        key=lambda k: (methods.index(k[0]), line_order(k[1]), k[2]),
    )
    collapsed = collapsed_runs(study)
    table: list[list[Any]] = []
    for method, line, level, metric in keys:
        r = by_key[(method, line, level, metric)]
        final = by_key.get((method, line, level, "final_test_accuracy"))
        ablation = line[len(ABLATION_PREFIX) :] if line.startswith(ABLATION_PREFIX) else "none"
        if table and table[-1][:2] != [method, ablation]:
            table.append([""] * 9)
        lost = collapsed.get((method, ablation, float(r.get("keep", 0.0))), 0)
        table.append(
            [
                method,
                ablation,
                f"{100 * r.get('keep', r['weights_remaining']):g}%",
                f"{100 * r['weights_remaining']:.2f}%",
                r["trials"],
                _mean_ci(r),
                f"[{100 * r['min']:.2f}, {100 * r['max']:.2f}]",
                _mean_ci(final) if final else "",
                f"{lost}/{r['trials']}" if lost else "",
            ]
        )
    headers = [
        "method",
        "ablation",
        "keep",
        "weights left",
        "trials",
        "test acc @ES (mean ± 95% CI)",
        "[min, max]",
        "final test acc",
        "layer collapse",
    ]
    click.echo(tabulate(table, headers=headers, colalign=("left", "left") + ("right",) * 7))
