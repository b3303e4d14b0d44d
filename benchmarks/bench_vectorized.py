"""Throughput of K networks trained side by side against the machine's limits, in one run.

Prints, measured now on this machine:
  - sgemm GFLOP/s (a 2048x2048 matrix product: the practical peak of the matrix units) and
    copy GB/s (a 256 MiB memory copy: the practical memory bandwidth);
  - LeNet-300-100 (Fashion-MNIST, batch 60, Adam): the conventional Dataset+DataLoader loop,
    lth's single-network trainer, and K = 1, 4, 8, 16 networks trained by lth's vectorised
    trainer against the same K networks trained one after another; for each, samples/s,
    the matrix products' achieved GFLOP/s (analytic FLOP count) and the speed-up;
  - where the time of one vectorised step goes (batch gathering, forward+backward, masking,
    optimizer), the optimizer's achieved bytes/s against the copy bandwidth;
  - the speed options of a lone training: bf16 autocast and torch.compile for LeNet, bf16 and
    channels-last for Conv-4 (compilation time excluded: it is paid once per model);
  - on a CPU, two lone trainings at once in two processes of one thread each (what
    ``--backend process --workers 2`` does with a study's trials);
  - the same for Conv-4 on CIFAR-shaped data (random tensors: the speed does not depend on values).

On a GPU (--device cuda, the default when one is present) K goes up to 64 and the clocks wait for
the device (torch.cuda.synchronize) before they are read.

Step times are taken by differencing two training lengths, so set-up and the evaluations at the
start and end of train() cancel out. Every figure is the best of --repeats runs, and the runs of
the configurations of a table take turns (on a shared machine a slow spell then hits them alike).

Usage: python benchmarks/bench_vectorized.py [--repeats 3] [--data-dir DIR] [--device auto|cpu|cuda] [--skip-conv]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import conventional  # noqa: E402

from lth.data import DATASETS, DataBundle, load_dataset  # noqa: E402
from lth.masks import Mask  # noqa: E402
from lth.models import build_model  # noqa: E402
from lth.training import Acceleration, OptimizerSettings, Trainer  # noqa: E402
from lth.training.vectorized import VectorTrainer  # noqa: E402

BATCH = 60
ADAM = OptimizerSettings("adam", 1.2e-3)
ADAM_BYTES_PER_PARAM = 7 * 4  # fused Adam reads param, grad, exp_avg, exp_avg_sq; writes three


DEVICE = torch.device("cpu")


def sync() -> None:
    """Wait for queued device work, so that a clock read after it counts it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def best_of(repeats: int, measure) -> float:
    return min(measure() for _ in range(repeats))


def sgemm_gflops() -> float:
    n = 4096 if DEVICE.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    a @ b

    def once() -> float:
        sync()
        tic = time.perf_counter()
        for _ in range(5):
            a @ b
        sync()
        return (time.perf_counter() - tic) / 5

    return 2 * n**3 / best_of(3, once) / 1e9


def copy_gbs() -> float:
    src = torch.randn(64 * 2**20, device=DEVICE)
    dst = torch.empty_like(src)
    dst.copy_(src)

    def once() -> float:
        sync()
        tic = time.perf_counter()
        for _ in range(5):
            dst.copy_(src)
        sync()
        return (time.perf_counter() - tic) / 5

    return 2 * src.numel() * 4 / best_of(3, once) / 1e9


def matmul_flops(model: torch.nn.Module, input_shape: tuple[int, ...], batch: int) -> float:
    """FLOPs of one training step's matrix products and convolutions (forward, input and weight grads)."""
    total = 0.0
    hooks = []
    counts: list[float] = []

    def hook(module, inputs, output):
        weight = module.weight
        if isinstance(module, torch.nn.Linear):
            macs = output.shape[0] * weight.shape[0] * weight.shape[1]
        else:  # each output position of each image: one kernel (weight.numel() / out_channels) per channel
            macs = output.shape[0] * output.shape[2] * output.shape[3] * weight.numel()
        counts.append(2.0 * macs)

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model.cpu()(torch.zeros(batch, *input_shape))
    for h in hooks:
        h.remove()
    for i, forward in enumerate(counts):
        total += forward * (2 if i == 0 else 3)  # forward, weight grad, input grad (not for the first layer)
    return total


def models_for(name: str, data: DataBundle, k: int) -> list[torch.nn.Module]:
    return [build_model(name, data.input_shape, data.num_classes, seed=s) for s in range(k)]


Measure = Callable[[], float]  # one measurement: seconds per step (of K networks together)


def interleaved(measures: dict[str, tuple[int, Measure]], repeats: int) -> dict[str, tuple[int, float]]:
    """label -> (K, seconds per step): the best of ``repeats`` runs of each measurement, taken in
    turns (a slow spell of a shared machine then hits every configuration alike, not one)."""
    best = {label: float("inf") for label in measures}
    for _ in range(repeats):
        for label, (_, measure) in measures.items():
            best[label] = min(best[label], measure())
    return {label: (measures[label][0], best[label]) for label in measures}


def differenced(train: Callable[[int], None], lengths: tuple[int, int]) -> float:
    """Seconds per step from two training lengths: set-up and the evaluations at the ends cancel."""
    times = []
    for n in lengths:
        tic = time.perf_counter()
        train(n)
        times.append(time.perf_counter() - tic)
    return (times[1] - times[0]) / (lengths[1] - lengths[0])


#: The default options: float32, no compile, default memory layout.
FP32 = Acceleration()


def single_step(name: str, data: DataBundle, lengths: tuple[int, int], acceleration: Acceleration = FP32) -> Measure:
    net = models_for(name, data, 1)[0].to(DEVICE)
    trainer = Trainer(data, BATCH, ADAM, seed=0, eval_every=10**9, progress=False, acceleration=acceleration)
    trainer.train(net, None, 0, 2)  # warm-up; compiles the model once with torch.compile
    return lambda: differenced(lambda n: trainer.train(net, None, 0, n), lengths)


def vector_step(name: str, data: DataBundle, k: int, lengths: tuple[int, int], masks: bool = False) -> Measure:
    def train(n: int) -> None:
        nets = [net.to(DEVICE) for net in models_for(name, data, k)]
        mask_list = [_half_mask(net) if masks else None for net in nets]
        trainer = VectorTrainer(data, BATCH, ADAM, list(range(k)), eval_every=10**9, progress=False)
        trainer.train(nets, mask_list, 0, n)  # ends with an evaluation read on the host: synchronised

    return lambda: differenced(train, lengths)


def _process_worker(data_dir: str | None, lengths: tuple[int, int], barrier, results) -> None:
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", data_dir=data_dir)
    measure = single_step("lenet-300-100", data, lengths)
    barrier.wait()  # both processes train at the same time
    results.put(measure())


def two_processes_step(data_dir: str | None, lengths: tuple[int, int]) -> Measure:
    """Two lone trainings at once in two processes of one thread each (``--backend process
    --workers 2``): seconds per step of the pair."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")

    def measure() -> float:
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_process_worker, args=(data_dir, lengths, barrier, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        steps = [results.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        return 2 / sum(1 / s for s in steps)  # the pair's rates add up

    return measure


def _half_mask(net: torch.nn.Module) -> Mask:
    g = torch.Generator().manual_seed(0)
    return Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in net.named_parameters() if n.endswith("weight")})


def step_breakdown(name: str, data: DataBundle, k: int, steps: int = 100) -> dict[str, float]:
    """Seconds per step of each part of a vectorised step with masks (forward+backward, mask, optimizer, batch)."""
    from torch.func import functional_call

    from lth.training.optim import build_optimizer

    nets = models_for(name, data, k)
    template = nets[0]
    params = {
        n: torch.stack([m.state_dict()[n] for m in nets]).to(DEVICE).requires_grad_()
        for n, _ in template.named_parameters()
    }
    masks = {n: (torch.rand(p.shape, device=DEVICE) < 0.5).float() for n, p in params.items() if n.endswith("weight")}
    optimizer = build_optimizer([p for n, p in params.items() if n not in masks], ADAM, [params[n] for n in masks])
    trainer = VectorTrainer(data, BATCH, ADAM, list(range(k)), progress=False)
    forward = torch.vmap(lambda p, x: functional_call(template, p, (x,)))
    parts = dict.fromkeys(("batch gathering", "forward + backward", "masking gradients", "optimizer step"), 0.0)
    for t in range(steps + 10):
        sync()
        t0 = time.perf_counter()
        x, y = trainer.batch(t)
        sync()
        t1 = time.perf_counter()
        logits = forward(params, x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch._foreach_mul_([params[n].grad for n in masks], list(masks.values()))
        sync()
        t3 = time.perf_counter()
        optimizer.step()
        sync()
        t4 = time.perf_counter()
        if t >= 10:
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[key] += dt / steps
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--skip-conv", action="store_true")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{threads} threads"
    print(f"# {date.today()}; {platform.processor() or platform.machine()}, {where}, torch {torch.__version__}")
    peak, bandwidth = sgemm_gflops(), copy_gbs()
    print(f"machine: sgemm {peak:.0f} GFLOP/s, copy {bandwidth:.1f} GB/s")

    data = load_dataset("fashion-mnist", data_dir=args.data_dir, device=DEVICE)
    raw = DATASETS.get("fashion-mnist").load(args.data_dir, True)
    flops = matmul_flops(models_for("lenet-300-100", data, 1)[0], data.input_shape, BATCH)
    conventional_its = max(conventional(raw, 600) for _ in range(args.repeats))
    lengths, vector_lengths = (200, 1000), (100, 400)
    ks = (1, 4, 8, 16, 32, 64) if DEVICE.type == "cuda" else (1, 4, 8, 16)
    lenet = "lenet-300-100"
    measures = {
        "lth trainer, 1 net": (1, single_step(lenet, data, lengths)),
        "lth trainer, 1 net, bf16 autocast": (1, single_step(lenet, data, lengths, Acceleration(precision="bf16"))),
        "lth trainer, 1 net, torch.compile": (1, single_step(lenet, data, lengths, Acceleration(compile=True))),
    }
    if DEVICE.type == "cpu":
        measures["2 processes x 1 thread, 2 nets"] = (2, two_processes_step(args.data_dir, lengths))
    for k in ks:
        measures[f"lth vectorised, K={k}"] = (k, vector_step(lenet, data, k, vector_lengths))
    measures["lth vectorised, K=8, 50% masks"] = (8, vector_step(lenet, data, 8, vector_lengths, masks=True))
    seconds = interleaved(measures, args.repeats)
    single = seconds["lth trainer, 1 net"][1]
    print(f"\nLeNet-300-100, batch {BATCH}, Adam ({flops / 1e6:.1f} MFLOP of matrix products per step)")
    header = (
        f"{'pipeline':44s} {'samples/s':>10s} {'GFLOP/s':>8s} {'% sgemm':>8s} {'vs lth 1 net':>12s} "
        f"{'vs conventional':>15s}"
    )
    print(header)

    def row(label: str, seconds_per_step: float, k: int, alone: float | None, conventional: bool = True) -> None:
        samples = k * BATCH / seconds_per_step
        gflops = k * flops / seconds_per_step / 1e9
        versus = f"{k * alone / seconds_per_step:11.2f}x" if alone else f"{'':>12s}"
        against = f"{samples / (conventional_its * BATCH):14.2f}x" if conventional else ""
        print(f"{label:44s} {samples:10.0f} {gflops:8.1f} {100 * gflops / peak:7.0f}% {versus} {against}".rstrip())

    print(
        f"{'conventional Dataset+DataLoader, 1 net':44s} {conventional_its * BATCH:10.0f} "
        f"{conventional_its * flops / 1e9:8.1f} {100 * conventional_its * flops / 1e9 / peak:7.0f}%"
    )
    for label, (k, value) in seconds.items():
        row(label, value, k, None if label == "lth trainer, 1 net" else single)
    k = 8
    parts = step_breakdown("lenet-300-100", data, k)
    total = sum(parts.values())
    n_params = sum(p.numel() for p in models_for("lenet-300-100", data, 1)[0].parameters())
    print(f"\nwhere a K={k} step with masks goes ({1e3 * total:.2f} ms):")
    for part, spent in parts.items():
        extra = ""
        if part == "forward + backward":
            extra = f"  {k * flops / spent / 1e9:.0f} GFLOP/s = {100 * k * flops / spent / 1e9 / peak:.0f}% of sgemm"
        if part == "optimizer step":
            gbs = k * n_params * ADAM_BYTES_PER_PARAM / spent / 1e9
            extra = f"  {gbs:.1f} GB/s = {100 * gbs / bandwidth:.0f}% of copy bandwidth"
        print(f"  {part:20s} {1e3 * spent:7.3f} ms {100 * spent / total:5.1f}%{extra}")

    if args.skip_conv:
        return
    d = DEVICE
    cifar = DataBundle(
        name="cifar-shaped",
        train_x=torch.randn(5000, 3, 32, 32, device=d),
        train_y=torch.randint(0, 10, (5000,), device=d),
        val_x=torch.randn(60, 3, 32, 32, device=d),
        val_y=torch.randint(0, 10, (60,), device=d),  # evaluation is not timed
        test_x=torch.randn(60, 3, 32, 32, device=d),
        test_y=torch.randint(0, 10, (60,), device=d),
        input_shape=(3, 32, 32),
        num_classes=10,
        augment=False,
    )
    flops = matmul_flops(models_for("conv-4", cifar, 1)[0], cifar.input_shape, BATCH)
    single_lengths, vector_lengths = ((100, 400), (50, 200)) if DEVICE.type == "cuda" else ((2, 10), (1, 4))
    measures = {
        "lth trainer, 1 net": (1, single_step("conv-4", cifar, single_lengths)),
        "lth trainer, 1 net, bf16 autocast": (
            1,
            single_step("conv-4", cifar, single_lengths, Acceleration(precision="bf16")),
        ),
        "lth trainer, 1 net, channels-last": (
            1,
            single_step("conv-4", cifar, single_lengths, Acceleration(channels_last=True)),
        ),
    }
    for k in (4, 8, 16, 32) if DEVICE.type == "cuda" else (4, 8):
        measures[f"lth vectorised, K={k}"] = (k, vector_step("conv-4", cifar, k, vector_lengths))
    seconds = interleaved(measures, args.repeats)
    single = seconds["lth trainer, 1 net"][1]
    print(f"\nConv-4, CIFAR-shaped 3x32x32, batch {BATCH}, Adam ({flops / 1e9:.2f} GFLOP per step)")
    print(header.rsplit(" ", 2)[0])
    for label, (k, value) in seconds.items():
        row(label, value, k, None if label == "lth trainer, 1 net" else single, conventional=False)


if __name__ == "__main__":
    main()
