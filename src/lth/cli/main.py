"""Entry point: the command group and the error policy (user mistakes -> one line, exit 2)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import click

from lth import __version__
from lth.errors import LthError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lth")
def cli() -> None:
    """lth: a laboratory for the Lottery Ticket Hypothesis.

    Find winning tickets by iterative magnitude pruning with rewinding, and study them.
    """


def _register_commands() -> None:
    from lth.cli import branch, catalog, find_ticket, mask, show  # noqa: F401  (each adds its commands)
    from lth.cli import plot, prune_at_init, report, resume, runs, stability, study, supermask  # noqa: F401
    from lth.cli import supermask_train  # noqa: F401


MAX_MESSAGE = 1000  # characters of an error line; a longer one is cut (a huge value quoted in it)


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line, cut to ``limit`` characters with "..." at the end."""
    text = " ".join(message.splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; return the exit code (2 for every user mistake)."""
    _register_commands()
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
