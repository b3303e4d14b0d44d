"""A copy of the documentation with its tutorial notebooks executed (outputs saved).

:func:`executed_docs_copy` copies ``mkdocs.yml`` and ``docs/`` (and what the config reaches
relative to itself: ``src`` for mkdocstrings, README.md and CONTRIBUTING.md for snippets) into a
directory and executes every ``docs/tutorials/*.ipynb`` there, in place, with nbclient. Used by
the ``executed_docs`` fixture of tests/conftest.py: the tutorial tests read the executed
notebooks, and the site build renders them without executing them again.

The kernel is this interpreter (a kernel spec written for ``sys.executable``); it runs in a
scratch directory with ``$LTH_RUNS_ROOT`` there, so no ``runs/`` lands in the repository, and
with one torch thread. A cell that fails raises :class:`NotebookError` naming the notebook, the
cell and the last lines of the error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Seconds one cell may run (the slowest cell takes a few seconds on 2 CPU cores).
CELL_TIMEOUT = 300
#: Notebooks executed at once (each kernel trains on one thread). Measured for the four on 2 shared
#: cores (2026-12-02): 94 s two at a time against 105 s one at a time (load ~3.5); 185 s against
#: 256 s (load ~12).
JOBS = 2
KERNEL_NAME = "lth-docs-python"
#: Where the execution times are written, in the copy (seconds per notebook, by file name).
TIMES_FILE = "notebook-times.json"
#: Lines of the error's traceback kept in a NotebookError's message.
ERROR_LINES = 12

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(RuntimeError):
    """A tutorial notebook failed: which one, which cell, and how."""


def copy_docs(dest: Path) -> Path:
    """``dest/mkdocs.yml``, ``dest/docs/`` (a copy), ``dest/src`` (a link to the repository's) and
    README.md / CONTRIBUTING.md (copies, where present); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "mkdocs.yml", dest / "mkdocs.yml")
    target = dest / "docs"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / "docs", target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    src = dest / "src"
    if not src.exists():
        src.symlink_to(REPO / "src", target_is_directory=True)
    for name in ("README.md", "CONTRIBUTING.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    return dest


def write_kernel_spec(root: Path) -> Path:
    """A kernel spec named :data:`KERNEL_NAME` under ``root`` that runs this interpreter; returns ``root``."""
    spec = root / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info[0]}.{sys.version_info[1]} (lth docs)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1) + "\n", encoding="utf-8")
    return root


def kernel_env(scratch: Path) -> dict[str, str]:
    """The kernel's environment: this one, with the runs root in ``scratch``, one OpenMP thread,
    and no matplotlib backend forced (the notebook's inline backend draws the figures)."""
    env = {**os.environ, "LTH_RUNS_ROOT": str(scratch / "runs"), "OMP_NUM_THREADS": "1"}
    for name in ("MPLBACKEND", "LTH_THREADS", "LTH_BACKEND"):
        env.pop(name, None)
    return env


def _error_text(nb: object, index: int | None, error: BaseException) -> str:
    """The last :data:`ERROR_LINES` lines of the failing cell's error output (else of ``error``)."""
    lines: list[str] = []
    cells = getattr(nb, "cells", [])
    if index is not None and 0 <= index < len(cells):
        for output in cells[index].get("outputs", []):
            if output.get("output_type") == "error":
                lines = "\n".join(output.get("traceback", [])).splitlines()
    if not lines:
        lines = str(error).splitlines()
    lines = [_ANSI.sub("", line).rstrip() for line in lines]
    return "\n".join(line for line in lines[-ERROR_LINES:] if line.strip())


def _kernel_cpu(manager: object) -> float | None:
    """CPU seconds the kernel process of ``manager`` has used so far (None without psutil)."""
    try:
        import psutil

        times = psutil.Process(manager.provisioner.pid).cpu_times()  # type: ignore[attr-defined]
    except Exception:  # no psutil, no kernel (any more): no figure
        return None
    return times.user + times.system + times.children_user + times.children_system


def execute_notebook(path: Path, scratch: Path, kernels: Path, timeout: int = CELL_TIMEOUT) -> dict[str, float | None]:
    """Execute the notebook at ``path`` in place (outputs saved) in ``scratch``; return its wall
    ``seconds`` (kernel start-up included) and the ``cpu`` seconds its kernel used (None without psutil).

    Raises :class:`NotebookError` naming the notebook, the cell index and the error's last lines.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellControlSignal, CellExecutionError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    cwd = scratch / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    manager = AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    current: dict[str, int] = {}
    cpu: dict[str, float | None] = {"cpu": None}

    def started(cell: object, cell_index: int) -> None:
        current["index"] = cell_index

    def completed(cell: object, cell_index: int) -> None:
        cpu["cpu"] = _kernel_cpu(manager)

    client = NotebookClient(
        nb,
        km=manager,
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_start=started,
        on_cell_complete=completed,
    )
    began = time.perf_counter()
    try:
        client.execute(env=kernel_env(scratch))
    except (CellExecutionError, CellControlSignal, DeadKernelError, TimeoutError, RuntimeError) as error:
        index = current.get("index")
        where = f"cell {index}" if index is not None else "start-up"
        raise NotebookError(
            f"{path.name}: {where} failed ({type(error).__name__}):\n{_error_text(nb, index, error)}"
        ) from None
    kernel_cpu = cpu["cpu"]
    times = {
        "seconds": round(time.perf_counter() - began, 2),
        "cpu": None if kernel_cpu is None else round(kernel_cpu, 2),
    }
    nbformat.write(nb, path)
    return times


def executed_docs_copy(dest: Path, jobs: int = JOBS) -> Path:
    """Copy the documentation into ``dest`` (:func:`copy_docs`), execute every
    ``dest/docs/tutorials/*.ipynb`` in place, ``jobs`` at a time, and return ``dest``.

    The notebooks' runs go to ``dest/scratch/NAME/runs`` (their ``$LTH_RUNS_ROOT``); the wall
    and kernel CPU seconds of each notebook are in ``dest/notebook-times.json``.
    """
    dest = copy_docs(Path(dest))
    kernels = write_kernel_spec(dest / "scratch" / "kernels")
    notebooks = sorted((dest / "docs" / "tutorials").glob("*.ipynb"))

    def run(path: Path) -> tuple[str, dict[str, float | None]]:
        return path.name, execute_notebook(path, dest / "scratch" / path.stem, kernels)

    if jobs > 1 and len(notebooks) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            times = dict(pool.map(run, notebooks))
    else:
        times = dict(run(path) for path in notebooks)
    (dest / TIMES_FILE).write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")
    return dest


if __name__ == "__main__":  # python tests/docs_build.py DEST [JOBS]: execute and print the times
    import tempfile

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="lth-docs-"))
    started = time.perf_counter()
    executed_docs_copy(out, int(sys.argv[2]) if len(sys.argv) > 2 else JOBS)
    print(json.loads((out / TIMES_FILE).read_text()), f"total {time.perf_counter() - started:.1f} s", out)
