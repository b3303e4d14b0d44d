"""Helpers for CLI tests: run `lth` in-process and check the one-line error contract."""

from __future__ import annotations

from lth.cli import main


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``lth ARGS`` in this process; return (exit code, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    """Exit code 2 and exactly one stderr line 'lth: error: ...' (no traceback)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("lth: error: "), err
    return lines[0]
