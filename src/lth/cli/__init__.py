"""The ``lth`` command line: argument parsing and printing only."""

from lth.cli.main import cli, main

__all__ = ["cli", "main"]
