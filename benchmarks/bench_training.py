"""Training throughput of lth's trainer against plain-PyTorch baselines, measured in one run.

LeNet-300-100 on Fashion-MNIST, batch 60, Adam 1.2e-3 (the paper recipe); evaluation excluded.

    (a) the conventional pipeline of LTH codebases: a Dataset returning one sample at a time,
        ToTensor-style conversion and normalisation per sample, a DataLoader collating batches;
    (b) a bare loop over preloaded tensors, no masks (the machine's practical limit);
    lth dense, and lth with 90%-sparse masks enforced every step.

Each pipeline runs --repeats times, interleaved; the table gives the best run of each (on a shared
machine the least disturbed one; the median is printed beside it).

Usage: python benchmarks/bench_training.py [--iterations 1500] [--repeats 7] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lth.data import DATASETS, load_dataset
from lth.masks import Mask
from lth.models import build_model
from lth.pruning import prunable_parameters, prune
from lth.training import OptimizerSettings, Trainer

BATCH = 60
LR = 1.2e-3


class PerSampleDataset(Dataset):
    """What torchvision-style code does: one uint8 image at a time, converted and normalised."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[i, 0], mode="L")  # as torchvision's MNIST returns it
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).float().div(255).unsqueeze(0)  # ToTensor
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def model() -> torch.nn.Module:
    return build_model("lenet-300-100", (1, 28, 28), 10, seed=0)


def time_loop(step, iterations: int, warmup: int = 50) -> float:
    """Iterations per second of ``step(i)``."""
    for i in range(warmup):
        step(i)
    tic = time.perf_counter()
    for i in range(warmup, warmup + iterations):
        step(i)
    return iterations / (time.perf_counter() - tic)


def conventional(raw, iterations: int) -> float:
    images = raw.train_x
    mean, std = float(images.mean() / 255), float(images.std() / 255)
    loader = DataLoader(
        PerSampleDataset(images, raw.train_y, mean, std),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    batches = iter(loader)

    def step(_: int) -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return time_loop(step, iterations)


def bare(data, iterations: int) -> float:
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    n = data.train_x.shape[0]
    per_epoch = n // BATCH
    generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=generator)

    def step(i: int) -> None:
        nonlocal perm
        k = i % per_epoch
        if k == 0:
            perm = torch.randperm(n, generator=generator)
        idx = perm[k * BATCH : (k + 1) * BATCH]
        loss = F.cross_entropy(net(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return time_loop(step, iterations)


def lth_trainer(data, iterations: int, sparsity: float) -> float:
    net = model()
    params = dict(net.named_parameters())
    prunable = prunable_parameters(net)
    mask = Mask.ones({k: params[k] for k in prunable})
    if sparsity:
        scores = {k: params[k].detach().abs() for k in prunable}
        rates = {k: sparsity for k in prunable}
        mask = prune(scores, mask, rates, "layerwise", torch.Generator().manual_seed(0))
    trainer = Trainer(data, BATCH, OptimizerSettings("adam", LR), seed=0, eval_every=10**9, progress=False)
    trainer.train(net, mask, 0, 50)  # warm-up
    tic = time.perf_counter()
    trainer.train(net, mask, 0, iterations)
    # train() evaluates once at the start and once at the end: take that out of the timing.
    eval_tic = time.perf_counter()
    trainer.evaluate(net)
    trainer.evaluate(net)
    eval_time = time.perf_counter() - eval_tic
    return iterations / (eval_tic - tic - eval_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    raw = DATASETS.get("fashion-mnist").load(args.data_dir, True)

    runs = {
        "(a) conventional Dataset+DataLoader": lambda: conventional(raw, args.iterations),
        "(b) bare loop, preloaded tensors": lambda: bare(data, args.iterations),
        "lth trainer, dense": lambda: lth_trainer(data, args.iterations, 0.0),
        "lth trainer, 90% sparse masks": lambda: lth_trainer(data, args.iterations, 0.9),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleave, so drifts in machine speed hit all alike
        for name, run in runs.items():
            results[name].append(run())
    best = {name: max(values) for name, values in results.items()}
    a, b = best["(a) conventional Dataset+DataLoader"], best["(b) bare loop, preloaded tensors"]
    print(
        f"# LeNet-300-100, Fashion-MNIST, batch {BATCH}, Adam; {date.today()}; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'pipeline':40s} {'best it/s':>9s} {'vs (a)':>8s} {'vs (b)':>8s} {'median it/s':>12s}")
    for name, value in best.items():
        median = statistics.median(results[name])
        print(f"{name:40s} {value:9.0f} {value / a:7.2f}x {value / b:7.2f}x {median:12.0f}")


if __name__ == "__main__":
    main()
