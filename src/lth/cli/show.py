"""``lth show RUN_DIR``: the per-round table, or the run as JSON."""

from __future__ import annotations

from typing import Any

import click
from tabulate import tabulate

from lth import jsonio
from lth.cli.main import cli
from lth.store import RunDir

SUPERMASK_KIND = "supermask-eval"  # the ``kind`` in config.yaml of ``lth supermask eval`` runs
STABILITY_KIND = "stability"  # the ``kind`` in config.yaml of ``lth stability`` runs


def run_json(run: RunDir) -> dict[str, Any]:
    """The documented JSON shape: {"config": {...}, "rounds": [...], "controls": {...}, "branches": {NAME: [...]},
    "status": {...}, "prune_at_init": {...}} (controls, branches and prune_at_init only when the run has some);
    for a supermask-eval run {"config": {...}, "supermask_eval": [rows...], "status": {...}};
    for a stability run {"config": {...}, "stability": [entries...], "status": {...}}."""
    if run.config().get("kind") == STABILITY_KIND:
        from lth.experiments.stability import read_entries

        return {"config": run.config(), "stability": read_entries(run), "status": run.status()}
    if run.config().get("kind") == SUPERMASK_KIND:
        from lth.supermasks.evaluate import read_rows

        return {"config": run.config(), "supermask_eval": read_rows(run), "status": run.status()}
    shown = {"config": run.config(), "rounds": run.rounds(), "status": run.status()}
    controls = run.controls()
    if controls:
        shown["controls"] = controls
    branches = run.branches()
    if branches:
        shown["branches"] = branches
    if (run.path / "prune_at_init.json").is_file():
        shown["prune_at_init"] = run.prune_at_init()
    return shown


def print_supermask_table(run: RunDir) -> None:
    """One line per (criterion, weights transform, fraction kept) cell of a supermask-eval run."""
    from lth.supermasks.evaluate import read_rows

    rows = [
        [
            r["criterion"],
            r["weights"],
            f"{100 * r['keep']:.3g}%",
            f"{100 * r['weights_remaining']:.2f}%",
            f"{100 * r['test_accuracy']:.2f}%",
            f"{100 * r['train_accuracy']:.2f}%",
            r["test_loss"],
            r["train_loss"],
        ]
        for r in read_rows(run)
    ]
    headers = ["criterion", "weights", "keep", "weights left", "test acc", "train acc", "test loss", "train loss"]
    config = run.config()
    click.echo(
        f"{config['model']} on {config['dataset']}: supermasks at initialisation, untrained "
        f"({run.status().get('status', 'unknown')})"
    )
    click.echo(tabulate(rows, headers=headers, floatfmt=".4f", colalign=("left", "left") + ("right",) * 6))


def print_stability_table(run: RunDir) -> None:
    """One line per (level, rewind point k) of a stability run: barriers (mean +- std over pairs), verdict."""
    from lth.experiments.stability import read_entries

    def points(entry: dict, key: str) -> str:
        return f"{100 * entry[key]:.2f} ± {100 * entry.get(key + '_std', 0.0):.2f}"

    entries = read_entries(run)
    rows = [
        [
            e["level"],
            f"{100 * e['weights_remaining']:.2f}%",
            e["rewind_iteration"],
            e.get("pairs", ""),
            points(e, "instability_test"),
            points(e, "instability_train"),
            f"{e['loss_barrier_test']:.4f}",
            f"{100 * e.get('child_test_error', 0.0):.2f}%",
            "yes" if e.get("stable") else "no",
        ]
        for e in entries
    ]
    headers = [
        "level",
        "weights left",
        "rewind k",
        "pairs",
        "test instability (pp)",
        "train instability (pp)",
        "test loss barrier",
        "children's test error",
        "stable",
    ]
    config = run.config()
    stability = config.get("stability")
    settings = stability if isinstance(stability, dict) else {}
    threshold = 100 * float(settings.get("stable_threshold", 0.02))
    source = f" of {settings['from']}" if settings.get("from") else ""
    click.echo(
        f"{config['model']} on {config['dataset']}: instability analysis{source}, {settings.get('copies')} "
        f"copies per k, stable at <= {threshold:g} points ({run.status().get('status', 'unknown')})"
    )
    click.echo(tabulate(rows, headers=headers, colalign=("right",) * len(headers)))


def print_table(run: RunDir) -> None:
    if run.config().get("kind") == SUPERMASK_KIND:
        print_supermask_table(run)
        return
    if run.config().get("kind") == STABILITY_KIND:
        print_stability_table(run)
        return
    rows = [
        [
            r["round"],
            f"{100 * r['weights_remaining']:.2f}%",
            r["early_stop_iteration"],
            f"{100 * r['val_accuracy_at_early_stop']:.2f}%",
            f"{100 * r['test_accuracy_at_early_stop']:.2f}%",
            f"{100 * r['final_test_accuracy']:.2f}%",
        ]
        for r in run.rounds()
    ]
    headers = ["round", "weights left", "early-stop it", "val acc @ES", "test acc @ES", "final test acc"]
    lines = {f"{name} test acc @ES": rounds for name, rounds in run.controls().items()}
    lines.update({f"branch {name} test acc @ES": rounds for name, rounds in run.branches().items()})
    for header, line in lines.items():
        by_round = {r["round"]: r for r in line}
        headers.append(header)
        for row in rows:
            r = by_round.get(row[0])
            row.append(f"{100 * r['test_accuracy_at_early_stop']:.2f}%" if r else "")
    config = run.config()
    what = f"{config['model']} on {config['dataset']}"
    if config.get("kind") == "branch" and isinstance(config.get("branch"), dict):
        what = f"branch {run.path.name} ({config['branch'].get('kind')}) of {run.path.parent.parent}: {what}"
    click.echo(f"{what} ({run.status().get('status', 'unknown')})")
    at_init = run.prune_at_init() if (run.path / "prune_at_init.json").is_file() else {}
    if at_init:
        click.echo(at_init_line(at_init))
    click.echo(tabulate(rows, headers=headers, colalign=("right",) * len(headers)))


def at_init_line(at_init: dict[str, Any]) -> str:
    """``pruned at initialisation: synflow (100 iterations, global) keeping 1%, shuffle ablation;
    kept per layer fc1.weight 0.61%, ...; layer collapse: fc2.weight`` from ``prune_at_init.json``."""
    ablation = at_init.get("ablation", "none")
    layers = ", ".join(f"{name} {100 * float(d):.3g}%" for name, d in at_init.get("layers", {}).items())
    line = (
        f"pruned at initialisation: {at_init.get('method')} ({at_init.get('iterations')} iteration"
        f"{'s' * (at_init.get('iterations') != 1)}, {at_init.get('scope')}) keeping "
        f"{100 * float(at_init.get('keep', 0)):g}%"
        + ("" if ablation == "none" else f", {ablation} ablation")
        + f"; kept per layer: {layers}"
    )
    collapsed = at_init.get("collapsed") or []
    return line + (f"; layer collapse: {', '.join(collapsed)}" if collapsed else "")


def run_or_study_json(path: Any) -> dict[str, Any]:
    """``lth show --json`` of a run or a study directory."""
    from lth.store.study_dir import StudyDir

    if StudyDir.is_study(path):
        from lth.cli.study import study_json

        return study_json(StudyDir(path))
    return run_json(RunDir.open(path))


def print_run(path: Any) -> None:
    """``lth show`` of a run or a study directory."""
    from lth.store.study_dir import StudyDir

    if StudyDir.is_study(path):
        from lth.cli.study import print_any_study

        print_any_study(StudyDir(path))
        return
    print_table(RunDir.open(path))


@cli.command("show")
@click.argument("run_dir", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print config and rounds as JSON.")
def show_command(run_dir: str, as_json: bool) -> None:
    """Print the per-round table of a run directory (or the grid of a supermask-eval run, or the
    statistics of a robust/session study; their --json adds a "summary" list)."""
    if as_json:
        click.echo(jsonio.dumps(run_or_study_json(run_dir), indent=2))
    else:
        print_run(run_dir)
