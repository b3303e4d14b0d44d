"""The code blocks of the documentation run as written: README.md, CONTRIBUTING.md and every
docs/**/*.md, one test per page (ids = page paths).

Conventions for writers of these pages (this docstring is their reference):

- ```` ```bash ```` blocks run line by line, in page order, in one scratch directory per page
  (shared by the page's blocks: a later block may use an earlier block's output). A trailing
  ``\\`` joins the next line; ``#`` comment lines and blank lines are skipped; a here-document
  (``cat > f <<EOF`` ... ``EOF``) is one command. Each command must exit with 0.

  * A line whose first word is ``lth`` runs as written (in the page's driver process, through
    ``lth.cli.main.main(argv)``; with shell syntax such as a pipe, a redirection or ``$VAR``,
    through bash with the project's ``lth`` first on ``PATH``).
  * Setup lines are checked, not run: ``pip install ...`` (every extra it names, as in
    ``lth[ray]`` or ``-e ".[docs]"``, must be in pyproject.toml's
    ``[project.optional-dependencies]``), ``git clone ...``, ``cd lth``, ``bash scripts/X.sh``
    (the script must exist), ``python -m venv ...``, ``source ...`` and ``mkdocs serve|build``
    (mkdocs.yml must exist).
  * Any other line runs with ``bash -c`` in the scratch directory, the repository's
    ``.venv/bin`` first on ``PATH`` (``python`` and ``lth`` are the project's). A plain
    ``cd DIR`` and ``export NAME=VALUE`` carry over to the later lines of the page.

- A bash block preceded by ``<!-- docs-test: small-budget -->`` (on the line before its fence;
  blank lines allowed in between) trains at a small budget: each ``lth`` command of it gets the
  options of ``docs_blocks.BUDGET`` appended where its click command has them and the value as
  written (or the option's default) is larger: ``--iterations 20 --eval-every 10 --rounds 2
  --trials 2 --points 5 --path-train-size 500`` (click takes the last value of an option);
  ``--epochs V`` is removed where ``--iterations`` is appended. So in such a block give rewind
  points and other step counts as fractions of the budget (``--rewind 0,0.05``): ``500it`` or
  ``2ep`` lie beyond 20 iterations. Leave the block unmarked when it is fast as written (the
  digits data set, ``lth show``, ``lth models``, ...). A ``session`` file's budget is its own.
- ```` ```python ```` blocks: all python blocks of a page run in page order in one fresh Python
  process (one namespace, as one script), started in the page's scratch directory; each block
  runs when the page reaches it, so bash blocks before it have run. Tracebacks name the page's
  own line numbers.
- ```` ```yaml title="session.yaml" ```` (a title attribute): written to that file in the
  scratch directory before any block of the page runs.
- ```` ```console ````, ```` ```text ```` and any other language: not run.

Every page runs with ``$LTH_RUNS_ROOT`` = ``SCRATCH/runs``, ``LTH_BACKEND=local``,
``OMP_NUM_THREADS=1``, ``MPLBACKEND=Agg`` and no network: ``$LTH_DATA_DIR`` holds small
stand-ins of MNIST (IDX gz: 6,000 training images of which 5,000 are held out for validation,
500 test images) and CIFAR-10 (the python pickle batches of 100 images each, 100 held out for
validation) and Fashion-MNIST (like MNIST's: the real files cost a page 15-30% more CPU; set
``LTH_DOCS_REAL_FASHION=1`` to run the pages on them, from /usr/share/datasets/fashion-mnist);
digits is bundled with scikit-learn.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from docs_blocks import (
    REPO,
    RUN,
    SETUP,
    TIMED_OUT,
    Block,
    Command,
    _unquoted_positions,
    bash_commands,
    is_simple,
    parse_blocks,
    resolve_command,
    setup_problem,
    small_budget_argv,
    strip_comment,
)

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
#: Whether pages train on the real Fashion-MNIST where /usr/share/datasets has it (else a stand-in).
REAL_FASHION_MNIST = os.environ.get("LTH_DOCS_REAL_FASHION", "0") == "1"
MNIST_TRAIN, MNIST_TEST = 6000, 500  # stand-ins: 5,000 of the training images are held out for validation
CIFAR_ROWS = 100  # images per stand-in batch file; 100 of the 500 training images held out
STEP_TIMEOUT_S = 120  # a command or python block that runs longer fails: it trains at a paper budget
PAGE_TIMEOUT_S = 900
TAIL_LINES = 25


def documentation_pages() -> list[str]:
    pages = [name for name in ("README.md", "CONTRIBUTING.md") if (REPO / name).is_file()]
    return pages + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))


# ------------------------------------------------------------------ the environment of a page

SITECUSTOMIZE = f'''"""docs tests: CIFAR-10 stand-in batches of {CIFAR_ROWS} rows, and no network."""
import importlib.abc
import importlib.machinery
import socket
import sys


def _patch_cifar(module):
    import dataclasses
    from lth.data import cifar
    from lth.data.registry import DATASETS

    cifar.ROWS_PER_BATCH = {CIFAR_ROWS}
    DATASETS._entries["cifar10"] = dataclasses.replace(DATASETS._entries["cifar10"], val_size={CIFAR_ROWS})


class _CifarHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "lth.data.cifar10":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch_cifar(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _CifarHook())

_connect = socket.socket.connect


def _local_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(101, "network access is disabled in the documentation tests")
    return _connect(self, address)


socket.socket.connect = _local_only
'''


def write_mnist_like(directory: Path, seed: int, train: int = MNIST_TRAIN, test: int = MNIST_TEST) -> None:
    """The four MNIST files (IDX, gzip) of ``train`` and ``test`` 28x28 images whose labels show in
    their brightness (as tests/test_branches.py's ``_fake_mnist``, with other sizes)."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = (rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19).astype(np.uint8)
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", count, 28, 28) + images.tobytes(), 1)
        )
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", count) + labels.tobytes(), 1)
        )


@pytest.fixture(scope="session")
def docs_support(tmp_path_factory) -> dict[str, Path]:
    """The data directory of stand-ins and the directory of the sitecustomize module."""
    import numpy as np

    from lth.data import cifar
    from test_data import write_batch

    root = tmp_path_factory.mktemp("docs-support")
    data = root / "data"
    write_mnist_like(data / "mnist", 0)
    if not REAL_FASHION_MNIST or not all((FASHION_SYSTEM / name).is_file() for name in FASHION_FILES):
        write_mnist_like(data / "fashion-mnist", 1)
    batches = data / "cifar10" / cifar.BATCHES_DIRNAME
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        write_batch(batches / name, rng, rows=CIFAR_ROWS)
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"data": data, "site": site}


def page_env(scratch: Path, support: dict[str, Path]) -> dict[str, str]:
    bin_dir = REPO / ".venv" / "bin"
    if not bin_dir.is_dir():
        bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LTH_", "COV_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        LTH_RUNS_ROOT=str(scratch / "runs"),
        LTH_BACKEND="local",
        LTH_DATA_DIR=str(support["data"]),
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONPATH=str(support["site"]),
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
    )
    return env


# ------------------------------------------------------------------ a page's plan


def _split_at_operator(text: str) -> tuple[str, str]:
    """``text`` cut before its first unquoted ``|;&<>`` (the first simple command, the rest)."""
    code = strip_comment(text)
    for index, char in _unquoted_positions(code):
        if char in "|;&<>":
            return code[:index].rstrip(), code[index:]
    return code, ""


def lth_step(command: Command) -> dict:
    """The driver's step for an ``lth`` line: in-process argv where the line is simple, else bash."""
    if is_simple(command.text):
        argv = shlex.split(command.text, comments=True)[1:]
        if command.small_budget:
            argv = small_budget_argv(argv)
        return {"kind": "lth", "argv": argv}
    if not command.small_budget:
        return {"kind": "shell", "text": command.text}
    head, rest = _split_at_operator(command.text)
    written = shlex.split(head)[1:]
    rewritten = small_budget_argv(written)
    if rewritten[: len(written)] != written:
        raise ValueError("the small budget would remove --epochs from a line with shell syntax: write it plainly")
    added = rewritten[len(written) :]
    return {"kind": "shell", "text": " ".join([head, *map(shlex.quote, added), rest]).rstrip()}


def page_plan(markdown: str) -> tuple[dict[str, str], list[tuple[Command | Block, dict]], list[str]]:
    """(titled yaml files, [(command or python block, driver step)], problems of setup lines)."""
    files: dict[str, str] = {}
    steps: list[tuple[Command | Block, dict]] = []
    problems: list[str] = []
    for block in parse_blocks(markdown):
        if block.lang == "yaml" and block.title:
            files[block.title] = block.text
        elif block.lang == "python":
            steps.append((block, {"kind": "python", "line": block.line, "code": block.text}))
        elif block.lang == "bash":
            for command in bash_commands(block):
                if command.kind == SETUP:
                    problem = setup_problem(command.text)
                    if problem:
                        problems.append(f"line {command.line}: `{command.text}`: {problem}")
                elif command.kind == RUN:
                    steps.append((command, lth_step(command)))
                else:
                    steps.append((command, {"kind": "shell", "text": command.text}))
    return files, steps, problems


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-blank lines of ``text`` (a progress bar's carriage returns: its last state)."""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join([line for line in kept if line.strip()][-lines:])[-6000:]


@pytest.mark.parametrize("page", documentation_pages())
def test_page_commands_run(page: str, tmp_path: Path, docs_support):
    files, steps, problems = page_plan((REPO / page).read_text(encoding="utf-8"))
    assert not problems, f"{page}: setup lines that would not work here:\n" + "\n".join(problems)
    if not steps:
        return
    scratch, work = tmp_path / "page", tmp_path / "driver"
    scratch.mkdir()
    work.mkdir()
    for name, text in files.items():
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(text)
    plan = {"page": page, "cwd": str(scratch), "work": str(work), "steps": [step for _, step in steps]}
    plan["step_timeout"] = STEP_TIMEOUT_S
    (work / "plan.json").write_text(json.dumps(plan))
    started, cpu_before = time.perf_counter(), _children_cpu()
    driver = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("docs_blocks.py")),
            str(work / "plan.json"),
            str(work / "result.json"),
        ],
        cwd=scratch,
        env=page_env(scratch, docs_support),
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    assert driver.returncode == 0 and (work / "result.json").is_file(), (
        f"{page}: the driver failed (exit {driver.returncode}):\n{_tail(driver.stderr)}"
    )
    result = json.loads((work / "result.json").read_text())
    failed = result["failed"]
    if failed is not None:
        item, step = steps[failed["index"]]
        if isinstance(item, Block):
            what = f"python block at line {item.line}"
        else:
            ran = f"lth {shlex.join(step['argv'])}" if step["kind"] == "lth" else step["text"]
            what = f"`{item.text}`" + (f" (ran as `{ran}`)" if ran != item.text else "")
        status = f"exited with {failed['rc']}"
        if failed["rc"] == TIMED_OUT:
            status = f"did not finish within {STEP_TIMEOUT_S} s (a paper budget? mark its block small-budget)"
        pytest.fail(
            f"{page}:{item.line}: {what} {status}\n"
            f"--- last lines of its stderr ---\n{_tail(failed['stderr'])}\n"
            f"--- last lines of its stdout ---\n{_tail(failed['stdout'], 8)}",
            pytrace=False,
        )
    slow = sorted(zip(result["times"], (item.line for item, _ in steps)), reverse=True)[:4]
    print(
        f"{page}: {len(steps)} steps in {time.perf_counter() - started:.1f} s wall, "
        f"{_children_cpu() - cpu_before:.1f} s CPU; slowest (s, line): {slow}"
    )


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the page's driver and what it started)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------ the parser and the rewriting

SAMPLE = """\
# Title

```bash
pip install -e ".[test]"
lth find-ticket lenet-300-100 digits --rounds 2 \\
  --iterations 60   # a comment
# a comment line

ls runs | head -3
cat > notes.txt <<EOF
lth is not run here
EOF
```

<!-- docs-test: small-budget -->

```bash
lth robust lenet-300-100 fashion-mnist --trials 5 --epochs 3
```

```python
import lth
print(lth.__version__)
```

```yaml title="session.yaml"
name: s
```

```yaml
not: written
```

```console
$ lth models
```

- a list item:

    ```python
    x = 1
    ```
"""


def test_parse_blocks_of_each_kind():
    assert parse_blocks(SAMPLE) == [
        Block(
            "bash",
            4,
            'pip install -e ".[test]"\nlth find-ticket lenet-300-100 digits --rounds 2 \\\n'
            "  --iterations 60   # a comment\n# a comment line\n\nls runs | head -3\n"
            "cat > notes.txt <<EOF\nlth is not run here\nEOF\n",
        ),
        Block("bash", 18, "lth robust lenet-300-100 fashion-mnist --trials 5 --epochs 3\n", small_budget=True),
        Block("python", 22, "import lth\nprint(lth.__version__)\n"),
        Block("yaml", 27, "name: s\n", title="session.yaml"),
        Block("yaml", 31, "not: written\n"),
        Block("console", 35, "$ lth models\n"),
        Block("python", 41, "x = 1\n"),
    ]


def test_bash_commands_join_lines_and_skip_comments():
    first, marked = parse_blocks(SAMPLE)[:2]
    assert bash_commands(first) == [
        Command(4, 'pip install -e ".[test]"', SETUP),
        Command(5, "lth find-ticket lenet-300-100 digits --rounds 2 --iterations 60   # a comment", RUN),
        Command(9, "ls runs | head -3", "shell"),
        Command(10, "cat > notes.txt <<EOF\nlth is not run here\nEOF", "shell"),
    ]
    assert bash_commands(marked) == [
        Command(18, "lth robust lenet-300-100 fashion-mnist --trials 5 --epochs 3", RUN, small_budget=True)
    ]


def test_page_plan_steps():
    files, steps, problems = page_plan(SAMPLE)
    assert files == {"session.yaml": "name: s\n"}
    assert problems == []
    assert [step for _, step in steps] == [
        {"kind": "lth", "argv": ["find-ticket", "lenet-300-100", "digits", "--rounds", "2", "--iterations", "60"]},
        {"kind": "shell", "text": "ls runs | head -3"},
        {"kind": "shell", "text": "cat > notes.txt <<EOF\nlth is not run here\nEOF"},
        {
            "kind": "lth",
            "argv": [
                "robust",
                "lenet-300-100",
                "fashion-mnist",
                "--trials",
                "5",
                "--iterations",
                "20",
                "--eval-every",
                "10",
                "--rounds",
                "2",
                "--trials",
                "2",
            ],
        },  # fmt: skip
        {"kind": "python", "line": 22, "code": "import lth\nprint(lth.__version__)\n"},
        {"kind": "python", "line": 41, "code": "x = 1\n"},
    ]


def test_small_budget_rewriting():
    assert small_budget_argv(["find-ticket", "lenet-300-100", "mnist", "--rounds", "1", "--eval-every=5"]) == [
        "find-ticket", "lenet-300-100", "mnist", "--rounds", "1", "--eval-every=5", "--iterations", "20",
    ]  # fmt: skip
    stability = ["--threads", "2", "stability", "lenet-300-100", "fashion-mnist", "--rewind", "0,0.1"]
    assert small_budget_argv(stability) == [
        "--threads", "2", "stability", "lenet-300-100", "fashion-mnist", "--rewind", "0,0.1",
        "--iterations", "20", "--eval-every", "10", "--points", "5", "--path-train-size", "500",
    ]  # fmt: skip
    assert small_budget_argv(["supermask", "train", "conv-2", "cifar10", "--epochs", "2"]) == [
        "supermask", "train", "conv-2", "cifar10", "--iterations", "20", "--eval-every", "10",
    ]  # fmt: skip
    assert small_budget_argv(["show", "runs/x"]) == ["show", "runs/x"]
    assert small_budget_argv(["models"]) == ["models"]
    # the same with shell syntax: appended before the first operator
    line = "lth find-ticket lenet-300-100 mnist --out runs/$NAME | tail -1  # note"
    step = lth_step(Command(1, line, RUN, small_budget=True))
    assert step == {
        "kind": "shell",
        "text": "lth find-ticket lenet-300-100 mnist --out runs/$NAME --iterations 20 --eval-every 10 --rounds 2 "
        "| tail -1",
    }


def test_the_last_value_of_a_budget_option_wins_in_click():
    """The rewriting appends: click must take the last of two values for every budget option."""
    from docs_blocks import BUDGET, _option
    from lth.cli.main import _register_commands, cli

    _register_commands()
    checked = 0

    def walk(command, path):
        nonlocal checked
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                walk(command.get_command(click.Context(command), name), [*path, name])
            return
        for name, _ in BUDGET:
            option = _option(command, name)
            if option is None:
                continue
            assert not option.multiple, (path, name)
            args = ["x"] * sum(1 for p in command.params if isinstance(p, click.Argument) and p.required)
            ctx = command.make_context("lth", [*args, name, "7", name, "3"], resilient_parsing=True)
            assert ctx.params[option.name] == 3, (path, name)
            checked += 1
        assert resolve_command([*path, "--help"])[0] is command

    walk(cli, [])
    assert checked >= 10


def test_setup_lines_are_checked(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "setup.sh").write_text("")
    (repo / "pyproject.toml").write_text('[project]\nname = "lth"\n[project.optional-dependencies]\nray = []\n')
    assert setup_problem('pip install -e ".[ray]"', repo) is None
    assert setup_problem("python -m pip install 'lth[ray,docs]'", repo) == (
        "extras ['docs'] are not in pyproject.toml's [project.optional-dependencies]"
    )
    assert setup_problem("bash scripts/setup.sh --fast", repo) is None
    assert setup_problem("bash scripts/nope.sh", repo) == "scripts/nope.sh does not exist in the repository"
    assert setup_problem("mkdocs serve", repo) == "mkdocs.yml does not exist in the repository"
    for line in (
        "git clone https://example.org/lth.git",
        "cd lth",
        "python3 -m venv .venv",
        "source .venv/bin/activate",
    ):
        assert setup_problem(line, repo) is None, line


def test_the_driver_reports_the_failing_step(tmp_path, docs_support):
    """A python block, a shell line and an in-process lth command run in page order in one
    scratch directory; the first failure stops the page and its stderr comes back."""
    import docs_blocks

    markdown = """\
```python
open("made-by-python.txt", "w").write("x")
```

```bash
test -f made-by-python.txt
lth models
lth show no-such-run
echo never
```
"""
    files, steps, problems = page_plan(markdown)
    scratch = tmp_path / "page"
    scratch.mkdir()
    env = page_env(scratch, docs_support)
    plan = {"page": "sample.md", "cwd": str(scratch), "work": str(tmp_path), "steps": [s for _, s in steps]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    subprocess.run(
        [sys.executable, docs_blocks.__file__, str(tmp_path / "plan.json"), str(tmp_path / "result.json")],
        cwd=scratch,
        env=env,
        check=True,
        timeout=300,
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["failed"]["index"] == 3 and result["failed"]["rc"] == 2
    assert "lth: error:" in result["failed"]["stderr"] and "no-such-run" in result["failed"]["stderr"]
    assert "lenet-300-100" in (tmp_path / "stdout.log").read_text()  # lth models printed
    assert len(result["times"]) == 4


@pytest.mark.parametrize(
    "step",
    [
        {"kind": "shell", "text": "sleep 30"},
        {"kind": "python", "line": 1, "code": "import time\ntime.sleep(30)\n"},
        {
            "kind": "lth",
            "argv": ["find-ticket", "lenet-300-100", "digits", "--iterations", "100000", "-q", "--out", "r"],
        },
    ],
    ids=["shell", "python", "lth"],
)
def test_the_driver_stops_a_step_that_runs_too_long(step, tmp_path, docs_support):
    import docs_blocks

    scratch = tmp_path / "page"
    scratch.mkdir()
    plan = {"page": "slow.md", "cwd": str(scratch), "work": str(tmp_path), "steps": [step], "step_timeout": 3}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, docs_blocks.__file__, str(tmp_path / "plan.json"), str(tmp_path / "result.json")],
        cwd=scratch,
        env=page_env(scratch, docs_support),
        check=True,
        timeout=120,
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["failed"]["rc"] == TIMED_OUT and "stopped after 3 s" in result["failed"]["stderr"]
    assert time.perf_counter() - started < 25
