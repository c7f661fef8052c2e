"""Throughput of the degradation transforms on this machine's CPU.

k-space truncation of a 256x256 MRI slice, low-dose CT simulation of a 512x512 slice and low-dose PET
simulation of a 192x400 slice (and of its matched full-dose / low-dose pair), each with one thread and with
the default number of threads (torch and the BLAS / OpenMP pools through threadpoolctl). Prints ms/image and
images/s (median of the repeats, after one warm-up call).

Usage (from the repository root)::

    .venv/bin/python bench/transforms.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.transforms import KSpaceCrop, SimulateLowDoseCT, SimulateLowDosePET  # noqa: E402


def _ellipse(h: int, w: int, inside: float, outside: float) -> np.ndarray:
    y = np.arange(h)[:, None] - h / 2 + 0.5
    x = np.arange(w)[None, :] - w / 2 + 0.5
    img = np.where((y / (0.4 * h)) ** 2 + (x / (0.45 * w)) ** 2 <= 1, inside, outside)
    return img[None].astype(np.float32)


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    mri = (_ellipse(256, 256, 1500.0, 0.0) + rng.uniform(0, 100, (1, 256, 256))).astype(np.float32)
    ct = _ellipse(512, 512, 40.0, -1000.0)
    pet = _ellipse(192, 400, 1.0, 0.0)
    kspace, ct_sim, pet_sim = KSpaceCrop(0.25), SimulateLowDoseCT(0.25, seed=0), SimulateLowDosePET(12.0, seed=0)
    cases = [
        ("k-space crop, MRI 256x256", lambda: kspace(mri), 50),
        ("low-dose CT, 512x512", lambda: ct_sim(ct), 3),
        ("low-dose PET, 192x400", lambda: pet_sim(pet), 3),
        ("PET pair (full + low), 192x400", lambda: pet_sim.simulate_pair(pet), 2),
    ]
    default_threads = torch.get_num_threads()
    print(f"{'transform':34s} {'threads':>7s} {'ms/image':>10s} {'images/s':>9s}")
    for name, fn, repeats in cases:
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                seconds = _time(fn, repeats)
            print(f"{name:34s} {threads:7d} {1000 * seconds:10.1f} {1 / seconds:9.2f}")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
