"""The whole command tree, every command imported: what generated documentation reads.

mkdocs-click walks ``group.commands``, which :class:`lth.cli.main.LazyGroup` fills only as
commands are used; importing this module registers them all first.
"""

from lth.cli.main import _register_commands, cli

_register_commands()

__all__ = ["cli"]
