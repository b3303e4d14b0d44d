"""``lth robust`` (one experiment over many seeds) and ``lth session`` (a grid of experiments)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from lth import jsonio
from lth.cli.find_ticket import config_options, gather_config
from lth.cli.main import cli
from lth.config import make_config
from lth.errors import LthError
from lth.experiments.limits import MAX_RUNS, check_max_runs
from lth.store import output_dir
from lth.store.run_dir import check_name


def backend_options(command: Any) -> Any:
    """``--backend`` and its options (local | process | ray), for the study commands."""
    options = [
        click.option(
            "--backend",
            type=str,
            help="Where trials run: local (this process), process (a local process pool), ray (a Ray "
            "cluster), or auto: process with one worker per CPU when there are 2+ CPUs, 2+ trials and no "
            "GPU, else local [$LTH_BACKEND, else auto].",
        ),
        click.option("--workers", type=int, help="process: worker processes [one per CPU]."),
        click.option("--ray-address", type=str, help="ray: the cluster to join (auto, HOST:PORT) [a local Ray]."),
        click.option("--cpus-per-trial", type=float, help="ray: CPUs each trial reserves [1]."),
        click.option("--gpus-per-trial", type=float, help="ray: GPUs each trial reserves, fractions allowed [0]."),
        click.option(
            "--no-shared-fs",
            is_flag=True,
            default=None,
            help="ray: workers do not see the study directory; stream trials and checkpoints to this "
            "machine [detected per trial].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def gather_backend(values: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(backend name, its options) from the command's keyword arguments (they are removed from ``values``)."""
    name = values.pop("backend", None)
    options = {
        "workers": values.pop("workers", None),
        "address": values.pop("ray_address", None),
        "cpus_per_trial": values.pop("cpus_per_trial", None),
        "gpus_per_trial": values.pop("gpus_per_trial", None),
        "shared_fs": False if values.pop("no_shared_fs", None) else None,
    }
    return name, {k: v for k, v in options.items() if v is not None}


def _check_flags(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise LthError("--resume continues a study and --overwrite replaces it; give one of them")


@cli.command("robust")
@click.argument("model")
@click.argument("dataset")
@click.option("--trials", type=int, default=5, show_default=True, help="Repetitions; trial i uses seed SEED + i.")
@click.option(
    "--max-runs", type=int, help=f"The most runs (trials) the study may have [{MAX_RUNS}]; raise it for a bigger study."
)
@config_options
@click.option("--config", "config_file", type=str, help="YAML file with find-ticket keys; flags override it.")
@click.option("--out", type=str, help="Study directory [runs/robust-MODEL-DATASET-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace an existing study directory.")
@click.option("--resume", is_flag=True, help="Continue the study in --out: only unfinished trials run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the study as JSON (as `lth show --json`).")
@backend_options
@click.pass_context
def robust_command(
    ctx: click.Context,
    model: str,
    dataset: str,
    trials: int,
    max_runs: int | None,
    config_file: str | None,
    out: str | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Repeat a ticket search of MODEL on DATASET over --trials seeds; report mean, spread and 95% CI per level.

    Takes every find-ticket option. Example: lth robust lenet-300-100 mnist --trials 5 --rounds 10
    """
    from lth.experiments.study import robust_experiment, run_study

    _check_flags(resume, overwrite)
    backend, backend_opts = gather_backend(kwargs)
    values = gather_config(ctx, model, dataset, config_file)
    config = make_config(values)
    if config.name is not None:
        check_name(config.name, "study name")
    vectorize = config.vectorize  # trials side by side (and each trial's controls beside its ticket)
    experiment = robust_experiment(config, trials, check_max_runs(max_runs, "--max-runs"))
    name = config.name or f"robust-{model}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    if resume and out is None:
        raise LthError("--resume needs --out DIR, the study directory to continue")
    spec = {"base": {k: v for k, v in values.items() if v is not None}, "trials": trials}
    with output_dir(out, name) as out_path:
        result = run_study(
            "robust",
            [experiment],
            out_path,
            spec,
            name=name,
            overwrite=overwrite,
            resume=resume,
            progress=not quiet and not as_json,
            vectorize=vectorize,
            backend=backend,
            backend_options=backend_opts,
        )
    report_study(result.study_dir, quiet, as_json)


@cli.command("session")
@click.argument("spec_file", metavar="SESSION.yaml")
@click.option("--out", type=str, help="Study directory [runs/session-NAME-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace an existing study directory.")
@click.option(
    "--vectorize",
    type=str,
    default="auto",
    show_default=True,
    help="How many trials train side by side in one vectorised step: a number, auto (up to 16 on a "
    "GPU; models without batch norm or dropout; none on a CPU, where it does not pay) or off.",
)
@click.option("--resume", is_flag=True, help="Continue the session in --out: only unfinished trials run.")
@click.option(
    "--max-runs",
    type=int,
    help="The most runs (experiments x trials) the session may have "
    f"[the file's max_runs, else {MAX_RUNS}]; raise it for a bigger session.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON (as `lth show --json`).")
@click.option(
    "--no-share-trunk",
    is_flag=True,
    help="Train round 0 (the dense training) in every experiment, even where it is the same training "
    "[shared once per trial, as share_trunk: true in the file].",
)
@backend_options
def session_command(
    spec_file: str,
    out: str | None,
    overwrite: bool,
    vectorize: str,
    resume: bool,
    max_runs: int | None,
    quiet: bool,
    as_json: bool,
    no_share_trunk: bool,
    **kwargs: Any,
) -> None:
    """Run the grid of experiments described in SESSION.yaml (base config x grid x trials).

    \b
    Example file:
      name: criteria-vs-actions
      base: {model: lenet-300-100, dataset: mnist, rounds: 10}
      grid: {criterion: [large_final, movement], mask1: [rewind, signed_constant]}
      trials: 3

    A session of more runs (experiments x trials) than --max-runs allows is refused before
    anything is built. Experiments that differ only in pruning (criterion, actions, rates,
    rounds, controls, ...) train round 0 once per trial and share it (bit-identical to training
    it again); --no-share-trunk turns that off.
    """
    from lth.experiments.session_spec import load_session_spec
    from lth.experiments.study import run_study

    _check_flags(resume, overwrite)
    backend, backend_opts = gather_backend(kwargs)
    spec = load_session_spec(spec_file)
    experiments = spec.experiments(None if max_runs is None else check_max_runs(max_runs, "--max-runs"))
    name = check_name(spec.name or Path(spec_file).stem, "session name")
    if resume and out is None:
        raise LthError("--resume needs --out DIR, the study directory to continue")
    with output_dir(out, f"session-{name}-{datetime.now():%Y%m%d-%H%M%S}") as out_path:
        result = run_study(
            "session",
            experiments,
            out_path,
            spec.model_dump(),
            name=name,
            overwrite=overwrite,
            resume=resume,
            progress=not quiet and not as_json,
            vectorize=vectorize,
            backend=backend,
            backend_options=backend_opts,
            share_trunk=spec.share_trunk and not no_share_trunk,
        )
    report_study(result.study_dir, quiet, as_json)
    if not quiet and not as_json:
        click.echo(dense_line(result))


def dense_line(result: Any) -> str:
    """``round 0 (dense): trained 2, reused 4`` for a study's run (``(not shared)`` when sharing was off)."""
    return f"round 0 (dense): trained {result.dense_trained}, reused {result.dense_reused}" + (
        "" if result.share_trunk else " (not shared)"
    )


def study_json(study: Any) -> dict[str, Any]:
    """{"kind", "name", "status", "experiments": [{"name", "settings", "runs": [{"trial", "path", "status",
    "rounds"}]}], "summary": [per experiment, line (ticket, reinit, random-prune, branch:NAME), round and
    metric statistics]}."""
    description = study.study()
    experiments = []
    for experiment in description["experiments"]:
        runs = []
        for entry in experiment["runs"]:
            run = study.run(entry["path"])
            runs.append(
                {
                    "trial": entry["trial"],
                    "path": entry["path"],
                    "seed": entry["config"]["seed"],
                    "status": run.status().get("status", "not started"),
                    "rounds": run.rounds(),
                }
            )
        experiments.append({"name": experiment["name"], "settings": experiment["settings"], "runs": runs})
    return {
        "kind": description["kind"],
        "name": description.get("name"),
        "status": study.status(),
        "experiments": experiments,
        "summary": study.summary(),
    }


def print_study(study: Any) -> None:
    """Per experiment, line (the ticket, then its controls, then branches) and level: test accuracy
    at early stop, mean ± CI half-width [min, max]."""
    from tabulate import tabulate

    from lth.store.study_dir import line_order

    description, status = study.study(), study.status()
    click.echo(
        f"{description['kind']} {description.get('name') or study.path.name}: "
        f"{status.get('runs_complete', 0)}/{status.get('runs_total', '?')} runs complete ({status.get('status')})"
    )
    rows = study.summary()
    by_key = {(r["experiment"], r["line"], r["round"], r["metric"]): r for r in rows}
    experiments = list(dict.fromkeys(r["experiment"] for r in rows))
    keys = sorted(
        (key for key in by_key if key[3] == "test_accuracy_at_early_stop"),
        key=lambda k: (experiments.index(k[0]), line_order(k[1]), k[2]),
    )
    table: list[list[Any]] = []
    for experiment, line, round_index, metric in keys:
        r = by_key[(experiment, line, round_index, metric)]
        final = by_key.get((experiment, line, round_index, "final_test_accuracy"))
        es = by_key.get((experiment, line, round_index, "early_stop_iteration"))
        if table and table[-1][:2] != [experiment, line]:
            table.append([""] * 9)  # a blank row between lines
        table.append(
            [
                experiment,
                line,
                round_index,
                f"{100 * r['weights_remaining']:.2f}%",
                r["trials"],
                _mean_ci(r),
                f"[{100 * r['min']:.2f}, {100 * r['max']:.2f}]",
                _mean_ci(final) if final else "",
                f"{es['mean']:.0f}" if es else "",
            ]
        )
    headers = [
        "experiment",
        "line",
        "round",
        "weights left",
        "trials",
        "test acc @ES (mean ± 95% CI)",
        "[min, max]",
        "final test acc",
        "early-stop it",
    ]
    align: tuple[str, ...] = ("left", "left") + ("right",) * 7
    if len(experiments) == 1:  # a robust study: one experiment, no column for it
        table, headers, align = [row[1:] for row in table], headers[1:], align[1:]
    click.echo(tabulate(table, headers=headers, colalign=align))


def _mean_ci(row: dict[str, Any]) -> str:
    if row["ci95_high"] is None:
        return f"{100 * row['mean']:.2f}%"
    return f"{100 * row['mean']:.2f} ± {100 * (row['ci95_high'] - row['mean']):.2f}%"


def report_study(study: Any, quiet: bool, as_json: bool) -> None:
    if as_json:
        click.echo(jsonio.dumps(study_json(study), indent=2))
    elif not quiet:
        print_any_study(study)
        click.echo(f"results and plots in {study.path}/")


def print_any_study(study: Any) -> None:
    """The table of a study of any kind (a pruning-at-init study's is per method, ablation and keep)."""
    if study.study().get("kind") == "prune-at-init":
        from lth.cli.prune_at_init import print_prune_at_init_study

        print_prune_at_init_study(study)
    else:
        print_study(study)
