"""The code blocks of the documentation pages: parsing, the small-budget rewriting, and the driver
that runs one page's commands (``python tests/docs_blocks.py PLAN.json RESULT.json``).

The conventions themselves are stated in the docstring of ``tests/test_docs_commands.py``.
Parsing imports neither torch nor lth; the budget rewriting imports the click commands.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SMALL_BUDGET_MARKER = "<!-- docs-test: small-budget -->"

#: Budget caps of a small-budget block: each option is appended, with this value, to a command
#: that has it (per its click definition) unless the command as written (or, where it is not
#: written, the option's default) already gives a value at most as large.
BUDGET: tuple[tuple[str, int], ...] = (
    ("--iterations", 20),
    ("--eval-every", 10),
    ("--rounds", 2),
    ("--trials", 2),
    ("--points", 5),
    ("--path-train-size", 500),
)
#: Removed from a small-budget command that gets ``--iterations`` (lth refuses both budgets).
DROPPED_WITH_ITERATIONS = ("--epochs",)

#: Setup lines: checked, not executed (see :func:`setup_problem`).
RUN, SHELL, SETUP = "lth", "shell", "setup"


@dataclass(frozen=True)
class Block:
    """A fenced code block: ``lang`` as written after the fence, ``line`` the page line of its
    first content line (1-based), ``text`` its content (dedented by the fence's indentation)."""

    lang: str
    line: int
    text: str
    small_budget: bool = False
    title: str | None = None


@dataclass(frozen=True)
class Command:
    """One command of a bash block: ``line`` the page line where it starts, ``text`` the command
    with continuation lines joined (a here-document keeps its lines), ``kind`` lth / shell / setup."""

    line: int
    text: str
    kind: str
    small_budget: bool = False


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_TITLE = re.compile(r"""title\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S+))""")


def parse_blocks(markdown: str) -> list[Block]:
    """Every fenced code block of ``markdown``, in page order."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = re.match(r"^[ \t]*(`{3,}|~{3,})[ \t]*$", lines[i])
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        words = info.replace("{", " ").replace("}", " ").split()
        lang = words[0].lstrip(".").lower() if words else ""
        title = _TITLE.search(info)
        # the marker: the nearest non-blank line before the fence
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marked = before >= 0 and lines[before].strip() == SMALL_BUDGET_MARKER
        text = "\n".join(body) + ("\n" if body else "")
        blocks.append(
            Block(lang, start + 2, text, marked, next(g for g in title.groups() if g is not None) if title else None)
        )
    return blocks


def _unquoted_positions(line: str) -> list[tuple[int, str]]:
    """(index, character) of the characters of ``line`` outside quotes and not escaped."""
    out: list[tuple[int, str]] = []
    quote = None
    i = 0
    while i < len(line):
        char = line[i]
        if quote == "'":
            if char == "'":
                quote = None
        elif quote == '"':
            if char == "\\":
                i += 1
            elif char == '"':
                quote = None
        elif char == "\\":
            i += 1
        elif char in "'\"":
            quote = char
        else:
            out.append((i, char))
        i += 1
    return out


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` at the start of an unquoted word)."""
    for index, char in _unquoted_positions(line):
        if char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index].rstrip()
    return line.rstrip()


def bash_commands(block: Block) -> list[Command]:
    """The commands of a bash block: ``#`` comment lines and blank lines dropped, a trailing ``\\``
    joining the next line, a here-document (``<<WORD``) taking its lines up to ``WORD``."""
    lines = block.text.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        first = i
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        text = lines[i].rstrip()
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", strip_comment(text))
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            text = "\n".join([text, *body, heredoc.group(1)])
            i += 1
        commands.append(Command(block.line + first, text, classify(text), block.small_budget))
    return commands


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return []


def is_simple(text: str) -> bool:
    """One command without shell syntax (pipes, redirections, variables, globs, ...): it can run in
    the driver's process with its words as argv."""
    code = strip_comment(text)
    return "\n" not in code and not any(char in "|;&<>$`*?~(){}" for _, char in _unquoted_positions(code))


def classify(text: str) -> str:
    """lth (run, in-process where :func:`is_simple`), setup (checked only) or shell (bash)."""
    words = _words(text)
    if not words:
        return SHELL
    if words[0] == "lth":
        return RUN
    if _setup_kind(words) is not None:
        return SETUP
    return SHELL


def _setup_kind(words: list[str]) -> str | None:
    head = words[0]
    if Path(head).name in ("pip", "pip3") or words[1:3] == ["-m", "pip"] and Path(head).name.startswith("python"):
        return "pip"
    if words[:2] == ["git", "clone"]:
        return "git"
    if words == ["cd", "lth"]:
        return "cd"
    if head == "bash" and len(words) >= 2 and words[1].startswith("scripts/"):
        return "script"
    if Path(head).name.startswith("python") and words[1:3] == ["-m", "venv"]:
        return "venv"
    if head in ("source", "."):
        return "source"
    if head == "mkdocs" and len(words) >= 2 and words[1] in ("serve", "build"):
        return "mkdocs"
    return None


def optional_dependencies(repo: Path = REPO) -> set[str]:
    import tomllib

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return set(project.get("optional-dependencies", {}))


def setup_problem(text: str, repo: Path = REPO) -> str | None:
    """Why the setup line ``text`` would not work in this repository, or None."""
    words = _words(text)
    kind = _setup_kind(words)
    if kind == "pip":
        extras = {e.strip() for w in words for group in re.findall(r"\[([^\]]*)\]", w) for e in group.split(",")}
        unknown = sorted(extras - optional_dependencies(repo) - {""})
        if unknown:
            return f"extras {unknown} are not in pyproject.toml's [project.optional-dependencies]"
    elif kind == "script":
        if not (repo / words[1]).is_file():
            return f"{words[1]} does not exist in the repository"
    elif kind == "mkdocs":
        if not (repo / "mkdocs.yml").is_file():
            return "mkdocs.yml does not exist in the repository"
    elif kind is None:
        return "not a setup line"
    return None


# ------------------------------------------------------------------ the small budget


def resolve_command(argv: Sequence[str]):
    """(click command, index in ``argv`` where its own arguments start) of ``lth ARGV``, walking
    through the group's options (``--threads N``) and sub-groups (``supermask train``)."""
    import click

    from lth.cli.main import cli

    command: click.Command = cli
    i = 0
    while isinstance(command, click.Group):
        while i < len(argv) and argv[i].startswith("-"):
            option = _option(command, argv[i])
            i += 1 if option is None or option.is_flag or "=" in argv[i] else 2
        if i >= len(argv):
            return None, i
        sub = command.get_command(click.Context(command), argv[i])
        if sub is None:
            return None, i
        command, i = sub, i + 1
    return command, i


def _option(command, word: str):
    import click

    name = word.split("=", 1)[0]
    return next((p for p in command.params if isinstance(p, click.Option) and name in p.opts + p.secondary_opts), None)


def _given(args: Sequence[str], option) -> tuple[str, int] | None:
    """The last value ``args`` give ``option`` and the index of its option word, or None."""
    found = None
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name in option.opts:
            if eq:
                found = (value, i)
            elif i + 1 < len(args):
                found = (args[i + 1], i)
                i += 1
        i += 1
    return found


def small_budget_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` (after ``lth``) with the :data:`BUDGET` options appended where the command has them;
    ``--epochs V`` removed where ``--iterations`` is appended. Commands without any are unchanged."""
    command, start = resolve_command(argv)
    if command is None:
        return list(argv)
    head, args = list(argv[:start]), list(argv[start:])
    added: list[str] = []
    for name, cap in BUDGET:
        option = _option(command, name)
        if option is None:
            continue
        given = _given(args, option)
        current = given[0] if given else option.default
        try:
            if current is not None and not callable(current) and float(current) <= cap:
                continue
        except (TypeError, ValueError):
            pass
        added += [name, str(cap)]
        if name == "--iterations":
            for dropped in DROPPED_WITH_ITERATIONS:
                other = _option(command, dropped)
                while other is not None and (hit := _given(args, other)) is not None:
                    del args[hit[1] : hit[1] + (1 if "=" in args[hit[1]] else 2)]
    return head + args + added


# ------------------------------------------------------------------ the driver of one page

_PYTHON_CHILD = r"""
import json, os, sys, traceback
reply = os.fdopen(int(sys.argv[1]), "w")
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
for message in sys.stdin:
    step = json.loads(message)
    ok = True
    try:
        with open(step["file"]) as handle:
            exec(compile(handle.read(), step["name"], "exec"), namespace)
    except SystemExit as exit_:
        ok = exit_.code in (None, 0)
    except BaseException:
        traceback.print_exc()
        ok = False
    sys.stdout.flush()
    sys.stderr.flush()
    reply.write(json.dumps(ok) + "\n")
    reply.flush()
"""


#: The exit status of a step stopped after ``plan["step_timeout"]`` seconds.
TIMED_OUT = 124


class StepTimeout(BaseException):
    """Raised in the driver's process when an in-process ``lth`` command runs out of time."""


def _alarm(signum, frame):
    raise StepTimeout


@dataclass
class _Page:
    plan: dict
    work: Path
    out_log: Path
    err_log: Path
    cwd: Path
    timeout: float
    python: subprocess.Popen | None = None
    reply: object | None = None
    blocks_written: int = 0
    times: list[float] = field(default_factory=list)


def _run_lth(argv: list[str], page: _Page) -> int:
    from lth.cli.main import main

    os.chdir(page.cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with page.out_log.open("ab") as out, page.err_log.open("ab") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, int(page.timeout)))
        try:
            rc = main(argv)
        except StepTimeout:
            print(f"docs test: stopped after {page.timeout:.0f} s", file=sys.stderr)
            rc = TIMED_OUT
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:
            traceback.print_exc()
            rc = 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return rc


def _run_shell(script: str, page: _Page) -> int:
    words = _words(script)
    if len(words) == 2 and words[0] == "cd" and is_simple(script):  # cd and export carry to later lines
        target = (page.cwd / os.path.expanduser(words[1])).resolve()
        if not target.is_dir():
            with page.err_log.open("a") as err:
                err.write(f"cd: {words[1]}: no such directory\n")
            return 1
        page.cwd = target
        return 0
    if words and words[0] == "export" and is_simple(script):
        for word in words[1:]:
            name, _, value = word.partition("=")
            os.environ[name] = value
        return 0
    with page.out_log.open("ab") as out, page.err_log.open("ab") as err:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=page.cwd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return shell.wait(timeout=page.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
            err.write(f"docs test: stopped after {page.timeout:.0f} s\n".encode())
            return TIMED_OUT


def _run_python(step: dict, page: _Page) -> int:
    if page.python is None:
        read, write = os.pipe()
        with page.out_log.open("ab") as out, page.err_log.open("ab") as err:
            page.python = subprocess.Popen(
                [sys.executable, "-u", "-c", _PYTHON_CHILD, str(write)],
                cwd=page.cwd,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(write,),
                text=True,
            )
        os.close(write)
        page.reply = os.fdopen(read)
    page.blocks_written += 1
    code = page.work / f"python-block-{page.blocks_written}.py"
    code.write_text("\n" * (step["line"] - 1) + step["code"])  # tracebacks name the page's lines
    page.python.stdin.write(json.dumps({"file": str(code), "name": page.plan["page"]}) + "\n")
    page.python.stdin.flush()
    ready, _, _ = select.select([page.reply], [], [], page.timeout)
    if not ready:
        page.python.kill()
        page.python.wait()
        page.python = None
        with page.err_log.open("a") as err:
            err.write(f"docs test: stopped after {page.timeout:.0f} s\n")
        return TIMED_OUT
    answer = page.reply.readline()
    if not answer:
        return page.python.wait() or 1
    return 0 if json.loads(answer) else 1


def drive(plan: dict) -> dict:
    """Run ``plan["steps"]`` in order; stop at the first that fails. Returns {"failed": None or
    {"index", "rc", "stderr", "stdout"}, "times": seconds per step run}."""
    work = Path(plan["work"])
    page = _Page(plan, work, work / "stdout.log", work / "stderr.log", Path(plan["cwd"]), plan.get("step_timeout", 600))
    page.out_log.touch()
    page.err_log.touch()
    result: dict = {"failed": None, "times": page.times}
    try:
        for index, step in enumerate(plan["steps"]):
            out_at, err_at = page.out_log.stat().st_size, page.err_log.stat().st_size
            started = time.perf_counter()
            if step["kind"] == "lth":
                rc = _run_lth(step["argv"], page)
            elif step["kind"] == "shell":
                rc = _run_shell(step["text"], page)
            else:
                rc = _run_python(step, page)
            page.times.append(round(time.perf_counter() - started, 2))
            if rc != 0:
                result["failed"] = {
                    "index": index,
                    "rc": rc,
                    "stderr": page.err_log.read_bytes()[err_at:].decode(errors="replace"),
                    "stdout": page.out_log.read_bytes()[out_at:].decode(errors="replace"),
                }
                break
    finally:
        if page.python is not None:
            page.python.stdin.close()
            page.python.wait(timeout=60)
    return result


if __name__ == "__main__":
    plan_path, result_path = sys.argv[1:3]
    outcome = drive(json.loads(Path(plan_path).read_text()))
    Path(result_path).write_text(json.dumps(outcome))
