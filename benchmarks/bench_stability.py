"""The cost of an instability analysis against the trainings it replaces, measured in one run.

One rewind point k with 2 copies (``lth stability --rewind K --copies 2``: the parent from 0 to k,
two children from k to the end, then the path between them) against two separate dense
trainings of the same budget (``lth find-ticket --rounds 0`` twice), LeNet-300-100 with the
paper recipe (Adam 1.2e-3, batch 60). Both write their run directories. The path evaluation
(``--points`` networks on the test set and the training subset) is timed on its own, and the
target is: analysis <= 1.1 x (two trainings) + path evaluation, i.e. (analysis - path) / trainings <= 1.1.
The same analysis with its two children in two worker processes (``--backend process``) is timed too.

Each side runs --repeats times, interleaved; the table gives the best and the median.

Usage: python benchmarks/bench_stability.py [--dataset fashion-mnist] [--iterations 2000] [--rewind 0]
       [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

import lth.training.interpolation as interpolation
from lth import find_ticket
from lth.config import make_config
from lth.experiments.stability import StabilitySettings, run_stability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rewind", default="0")
    parser.add_argument("--points", type=int, default=31)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    config = make_config(
        {
            "model": "lenet-300-100",
            "dataset": args.dataset,
            "iterations": args.iterations,
            "rounds": 0,
            "device": args.device,
            "data_dir": args.data_dir,
            "eval_every": 500,
        }
    )
    settings = StabilitySettings(rewind=(args.rewind,), copies=2, points=args.points)

    path_seconds = [0.0]
    original = interpolation.evaluate_path

    def timed_path(*a, **k):  # the analysis's own path evaluation, timed where it runs
        tic = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            path_seconds[0] += time.perf_counter() - tic

    interpolation.evaluate_path = timed_path
    trainings, analyses, paths, pooled = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        find_ticket(config.model_copy(update={"iterations": 100}), out=root / "warmup", progress=False)  # data, caches
        for repeat in range(args.repeats):
            tic = time.perf_counter()
            for copy in range(2):
                find_ticket(config.model_copy(update={"seed": copy}), out=root / f"t{repeat}-{copy}", progress=False)
            trainings.append(time.perf_counter() - tic)
            path_seconds[0] = 0.0
            tic = time.perf_counter()
            run_stability(config, settings, out=root / f"s{repeat}", progress=False)
            analyses.append(time.perf_counter() - tic)
            paths.append(path_seconds[0])
            tic = time.perf_counter()
            run_stability(config, settings, out=root / f"p{repeat}", progress=False, workers=2)
            pooled.append(time.perf_counter() - tic)
    ratios = [(a - p) / t for a, t, p in zip(analyses, trainings, paths)]
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    print(
        f"lth stability benchmark, {date.today()}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, device {device}, {args.dataset}, {args.iterations} iterations, k = {args.rewind}, "
        f"2 copies, {args.points} points, {args.repeats} repeats"
    )
    rows = [
        ("two find-ticket trainings (s)", trainings),
        ("stability analysis (s)", analyses),
        ("  of which path evaluation (s)", paths),
        ("(analysis - path) / trainings", ratios),
        ("analysis, children in 2 processes (s)", pooled),
        ("  speed-up of the 2 processes", [a / b for a, b in zip(analyses, pooled)]),
    ]
    print(f"{'':38} {'best':>9} {'median':>9}")
    for name, values in rows:
        best = max(values) if name.strip().startswith("speed-up") else min(values)
        print(f"{name:38} {best:9.3f} {statistics.median(values):9.3f}")
    verdict = "met" if min(ratios) <= 1.1 else "MISSED"
    print(
        f"target (analysis - path) / trainings <= 1.1: {verdict} (best {min(ratios):.3f}, "
        f"median {statistics.median(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
