"""Start-up costs of the CLI and the slowdown of a run on a loaded machine, measured in one run.

Part 1 (start-up): the wall time of each command in a fresh interpreter, against
``python -c "import torch"`` timed in the same run: ``lth --help``, the catalog commands
(``models``, ``datasets``, ``runs list``, ``show RUN``) and a 1-iteration ``find-ticket`` of
LeNet-300-100 on Fashion-MNIST (one pruning round: data loading, two trainings, evaluation, the
run directory and its figures).

Part 2 (a loaded machine): a short ``find-ticket --rounds 0`` alone, then while another process
keeps ``--load-threads`` threads busy with matrix products (what a second user or a second job
does on a shared machine): the slowdown is loaded / unloaded time. lth's defaults (OpenMP threads
that sleep rather than spin when the machine is busy as lth starts) are measured beside OpenMP's
own spinning policy and ``--threads 1``.

Each command runs ``--repeats`` times, interleaved; the tables give the best and the median.

Usage: python benchmarks/bench_startup.py [--repeats 5] [--iterations 200] [--load-threads 2]
                                          [--data-dir /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

LTH = [sys.executable, "-c", "import sys; from lth.cli import main; sys.exit(main(sys.argv[1:]))"]
LOAD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(768, 768)
while True:
    a = (a @ a).tanh_()
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds of wall time of ``command`` (which must succeed)."""
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:] or command)} failed:\n{done.stderr}")
    return seconds


def best_median(times: list[float]) -> str:
    return f"{min(times):6.2f} / {statistics.median(times):6.2f}"


def startup(args: argparse.Namespace, work: Path) -> None:
    env = {**os.environ, "LTH_RUNS_ROOT": str(work / "runs")}
    (work / "runs").mkdir()
    search = [
        "find-ticket",
        "lenet-300-100",
        "fashion-mnist",
        "--data-dir",
        args.data_dir,
        "--iterations",
        "1",
        "--rounds",
        "1",
        "--out",
        str(work / "one"),
        "--overwrite",
        "-q",
    ]
    timed(LTH + search, env)  # warm the file cache; RUN for `lth show`
    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "lth --help": LTH + ["--help"],
        "lth models": LTH + ["models"],
        "lth datasets": LTH + ["datasets"],
        "lth runs list": LTH + ["runs", "list"],
        "lth show RUN": LTH + ["show", str(work / "one")],
        "lth find-ticket (1 iteration, 1 round)": LTH + search,
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(timed(command, env))
    base = times['python -c "import torch"']
    print(
        f"\nStart-up, {args.repeats} repeats (seconds best / median; ratio and difference to import torch, by best)\n"
    )
    print("| command | seconds | / import torch | - import torch |\n|---|---|---|---|")
    for name, seconds in times.items():
        print(
            f"| `{name}` | {best_median(seconds)} | {min(seconds) / min(base):5.2f}x | "
            f"{min(seconds) - min(base):+6.2f} s |"
        )


def loaded(args: argparse.Namespace, work: Path) -> None:
    env = {**os.environ, "LTH_RUNS_ROOT": str(work / "runs")}
    run = [
        "find-ticket",
        "lenet-300-100",
        "fashion-mnist",
        "--data-dir",
        args.data_dir,
        "--iterations",
        str(args.iterations),
        "--eval-every",
        str(args.iterations),
        "--rounds",
        "0",
        "--out",
        str(work / "load"),
        "--overwrite",
        "-q",
    ]
    # GOMP_SPINCOUNT=300000 is libgomp's own default: setting it keeps lth from choosing the
    # passive wait policy on a busy machine, i.e. the behaviour before lth did.
    spinning = {**env, "GOMP_SPINCOUNT": "300000"}
    variants = {
        "lth defaults": (LTH + run, env),
        "OpenMP spinning (lth before)": (LTH + run, spinning),
        "lth --threads 1": (LTH[:3] + ["--threads", "1"] + run, env),
    }
    times = {(name, state): [] for name in variants for state in ("alone", "loaded")}
    for _ in range(args.repeats):
        for name, (command, variant_env) in variants.items():
            times[(name, "alone")].append(timed(command, variant_env))
            load = subprocess.Popen([sys.executable, "-c", LOAD, str(args.load_threads)])
            try:
                time.sleep(2.0)  # the load is busy before the run starts
                times[(name, "loaded")].append(timed(command, variant_env))
            finally:
                load.kill()
                load.wait()
    print(
        f"\nA {args.iterations}-iteration find-ticket (--rounds 0) alone and beside a {args.load_threads}-thread "
        f"matrix-product load, {args.repeats} repeats (seconds best / median)\n"
    )
    print("| settings | alone | loaded | slowdown (best) | slowdown (median) |\n|---|---|---|---|---|")
    for name in variants:
        alone, busy = times[(name, "alone")], times[(name, "loaded")]
        print(
            f"| {name} | {best_median(alone)} | {best_median(busy)} | {min(busy) / min(alone):4.2f}x | "
            f"{statistics.median(busy) / statistics.median(alone):4.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200, help="iterations of the loaded-machine run")
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--skip", choices=["startup", "loaded"], help="leave one part out")
    args = parser.parse_args()
    import torch

    print(
        f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="lth-bench-startup-") as tmp:
        if args.skip != "startup":
            startup(args, Path(tmp))
        if args.skip != "loaded":
            loaded(args, Path(tmp))


if __name__ == "__main__":
    main()
