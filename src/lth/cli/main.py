"""Entry point: the command group and the error policy (user mistakes -> one line, exit 2)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import click

from lth import __version__
from lth.errors import LthError

#: Every command: its module (imported when the command runs, or for its own --help) and the
#: first paragraph of its help, which ``lth --help`` lists without importing anything heavy.
COMMANDS: dict[str, tuple[str, str]] = {
    "branch": (
        "lth.cli.branch",
        "Run a branch of KIND off the ticket search in RUN, or off every trial of the study in RUN.",
    ),
    "datasets": ("lth.cli.catalog", "List the registered datasets and where each one's files are on this machine."),
    "find-ticket": ("lth.cli.find_ticket", "Find a winning ticket of MODEL on DATASET by iterative magnitude pruning."),
    "mask": ("lth.cli.mask", "Compute a mask from INIT and FINAL weights and write it to OUT."),
    "models": ("lth.cli.catalog", "List the registered models with their paper recipes."),
    "plot": ("lth.cli.plot", "Draw figures of run or study directories (several are overlaid on one figure)."),
    "prune-at-init": (
        "lth.cli.prune_at_init",
        "Prune MODEL at initialisation, then train it on DATASET with the model's "
        "recipe: one run per method x --keep x --ablation x trial, summarised over trials and plotted "
        "(test accuracy against weights remaining, one line per method, ablations dashed).",
    ),
    "report": (
        "lth.cli.report",
        "Write a report on run and study directories, results first: per run or study a "
        "headline (the best ticket, i.e. the sparsest level at most 0.5 points below the dense accuracy, and "
        "the best-accuracy level, against dense and the controls), the per-round tables, controls and "
        "statistics over trials, every figure that applies, and last the configuration (settings that differ "
        "from the defaults, then the full configuration collapsed). Several runs are also compared on shared "
        "axes, after a summary of every headline.",
    ),
    "resume": (
        "lth.cli.resume",
        "Continue the unfinished run in RUN_DIR (killed or interrupted) where its checkpoint left it.",
    ),
    "robust": (
        "lth.cli.study",
        "Repeat a ticket search of MODEL on DATASET over --trials seeds; report mean, spread and 95% CI per level.",
    ),
    "runs": ("lth.cli.runs", "Find, compare and remove runs through the results index of a runs root."),
    "session": (
        "lth.cli.study",
        "Run the grid of experiments described in SESSION.yaml (base config x grid x trials).",
    ),
    "show": (
        "lth.cli.show",
        "Print the per-round table of a run directory (or the grid of a supermask-eval run, or "
        'the statistics of a robust/session study; their --json adds a "summary" list).',
    ),
    "stability": (
        "lth.cli.stability",
        "Instability analysis: is the network stable to SGD noise from rewind point k on?",
    ),
    "supermask": ("lth.cli.supermask", "Supermasks: masks that make an untrained network perform (Zhou et al. 2019)."),
}
#: The commands that train networks: their OpenMP threads yield when the machine is busy as they start.
TRAINING_COMMANDS = (
    "branch",
    "find-ticket",
    "mask",
    "prune-at-init",
    "resume",
    "robust",
    "session",
    "stability",
    "supermask",
)


class LazyGroup(click.Group):
    """A group whose commands are imported only when used: ``lth --help`` lists them from
    :data:`COMMANDS` without importing torch (their modules register them on import)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name][0])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lth")
@click.option(
    "--threads",
    type=int,
    envvar="LTH_THREADS",
    metavar="N",
    help="Torch threads per process (env LTH_THREADS) [the CPUs this process may use, where an affinity "
    "mask or a cgroup quota gives it fewer than the machine's; else torch's default].",
)
@click.pass_context
def cli(ctx: click.Context, threads: int | None) -> None:
    """lth: a laboratory for the Lottery Ticket Hypothesis.

    Find winning tickets by iterative magnitude pruning with rewinding, and study them.
    """
    from lth.cpus import THREADS_ENV, check_threads, use_threads, yield_when_busy

    if threads is not None:  # the workers of a process pool take the same count
        os.environ[THREADS_ENV] = str(check_threads(threads))
    use_threads(threads)
    if ctx.invoked_subcommand in TRAINING_COMMANDS:
        yield_when_busy()  # before torch loads: OpenMP reads its wait policy once


def _register_commands() -> None:
    """Import every command's module (``lth --help`` does not need it: see :class:`LazyGroup`)."""
    for module in dict.fromkeys(module for module, _ in COMMANDS.values()):
        importlib.import_module(module)


MAX_MESSAGE = 1000  # characters of an error line; a longer one is cut (a huge value quoted in it)


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line, cut to ``limit`` characters with "..." at the end."""
    text = " ".join(message.splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 for every user mistake).

    ``lth --threads N`` puts N in ``$LTH_THREADS`` for the processes the command starts; a call
    from Python leaves the caller's environment as it found it.
    """
    from lth.cpus import THREADS_ENV

    threads_before = os.environ.get(THREADS_ENV)
    try:
        return _run(argv)
    finally:
        if threads_before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = threads_before


def _run(argv: Sequence[str] | None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="lth", standalone_mode=False)
    except LthError as error:
        click.echo(f"lth: error: {one_line(str(error))}", err=True)
        return 2
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("lth: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
