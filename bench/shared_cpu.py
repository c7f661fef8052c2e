"""CPU time of one restoration beside other CPU-bound jobs: what intra-op threads cost on a shared machine.

Runs the paper AMIR (random weights) on one 256x256 slice, first alone, then beside 1 and 2 busy-loop processes
(each takes a whole core), with 2 and 1 intra-op threads and with the inference config's default (``auto``: one
thread per core found idle at start, :func:`scripts.runtime.threads_for_free_cores`), and prints user / system CPU
seconds and wall seconds per slice (``resource.getrusage``, the allocator kept as inference keeps it).

Usage (repository root, on an otherwise idle machine)::

    .venv/bin/python bench/shared_cpu.py [--size 256] [--repeats 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
from scripts.networks import AMIR  # noqa: E402
from scripts.runtime import free_cores, keep_freed_memory, threads_for_free_cores, usable_cores  # noqa: E402


def per_slice(network: torch.nn.Module, x: torch.Tensor, threads: int, repeats: int) -> tuple[float, float, float]:
    """User, system and wall seconds per forward pass with ``threads`` intra-op threads (after one warm-up)."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        network(x)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(repeats):
            network(x)
        after, end = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return (
        (after.ru_utime - before.ru_utime) / repeats,
        (after.ru_stime - before.ru_stime) / repeats,
        (end - start) / repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    keep_freed_memory()
    network = AMIR().eval()
    x = torch.rand(1, 1, args.size, args.size)
    print("| busy-loop processes | threads | user s | system s | wall s | load average (1 min) |")
    print("|---|---|---|---|---|---|")
    for busy in (0, 1, 2):
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            free = free_cores()
            for threads in (2, 1, "auto"):
                n = threads_for_free_cores(free, usable_cores()) if threads == "auto" else threads
                user, system, wall = per_slice(network, x, n, args.repeats)
                shown = f"auto: {n} ({free:.2f} cores idle)" if threads == "auto" else threads
                print(f"| {busy} | {shown} | {user:.2f} | {system:.2f} | {wall:.2f} | {os.getloadavg()[0]:.1f} |")
        finally:
            for loop in loops:
                loop.kill()


if __name__ == "__main__":
    main()
