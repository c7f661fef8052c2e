"""Speed and memory of AMIR and the Restormer baseline (paper configurations) on this machine's CPU.

Prints parameters, FLOPs (``torch.utils.flop_counter``), eval forward time at 256x256 and 512x512 (batch 1), one
training step at batch 8 of 128x128 (forward, L1 + balance, backward, Adam; costed as 3x the forward FLOPs), the
peak resident memory of each measurement (each runs in a fresh process so the peaks do not mix), the fp32
2048x2048 matmul FLOP/s measured in the same process, and the efficiency ratio model FLOP/s / matmul FLOP/s.

Usage (from the repository root)::

    .venv/bin/python bench/network.py                 # the full table
    .venv/bin/python bench/network.py --models AMIR --checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.networks import AMIR, Restormer  # noqa: E402

NETWORKS = {"AMIR": AMIR, "Restormer": Restormer}


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` FLOP/s of an fp32 ``size x size`` matmul."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(name: str, task: str, checkpointing: bool, repeats: int) -> dict:
    """One measurement, in this process: ``task`` is ``eval256``, ``eval512`` or ``train``."""
    torch.manual_seed(0)
    net = NETWORKS[name](gradient_checkpointing=checkpointing)
    result: dict = {"params": sum(p.numel() for p in net.parameters())}
    if task.startswith("eval"):
        size = int(task[4:])
        x = torch.rand(1, 1, size, size)
        net.eval()
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                net(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - start)
    else:
        x, y = torch.rand(8, 1, 128, 128), torch.rand(8, 1, 128, 128)
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
        net.train()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(net(x), y) + 1e-3 * net.balance_loss
            loss.backward()
            optimizer.step()

        # The counter's convolution_backward formula ignores groups (depthwise convs come out ~50x too high), so
        # the step is costed as forward + 2x forward for the backward, the usual estimate.
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
        forward_flops = counter.get_total_flops()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    seconds = min(times)
    matmul = matmul_flops()
    flops = counter.get_total_flops() if task.startswith("eval") else 3 * forward_flops
    result.update(
        flops=flops,
        seconds=seconds,
        matmul_flops=matmul,
        ratio=flops / seconds / matmul,
        peak_rss_gib=peak_rss_gib(),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--tasks", nargs="+", default=["eval256", "eval512", "train"])
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.checkpointing, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = "| network | measurement | params | GFLOP | seconds | peak RSS GiB | matmul GFLOP/s | ratio |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name in args.models:
        for task in args.tasks:
            command = [sys.executable, __file__, "--child", name, task, "--repeats", str(args.repeats)]
            if args.checkpointing:
                command.append("--checkpointing")
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            label = task + (" (checkpointing)" if args.checkpointing and task == "train" else "")
            print(
                f"| {name} | {label} | {r['params']:,} | {r['flops'] / 1e9:.1f} | {r['seconds']:.2f} | "
                f"{r['peak_rss_gib']:.2f} | {r['matmul_flops'] / 1e9:.0f} | {r['ratio']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
