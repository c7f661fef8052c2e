"""Speed and memory of AMIR and the Restormer baseline (paper configurations) on this machine's CPU.

Prints parameters, FLOPs (``torch.utils.flop_counter``), eval forward time at 256x256 and 512x512 (batch 1), one
training step at batch 8 of 128x128 (forward, L1 + balance, backward, Adam; costed as 3x the forward FLOPs), the
peak resident memory of each measurement (each runs in a fresh process so the peaks do not mix), the fp32
2048x2048 matmul FLOP/s measured in the same process, and the efficiency ratio model FLOP/s / matmul FLOP/s.

With ``--volume`` it restores a synthetic MRI volume (``--slices`` slices of ``--size`` pixels) through the bundle's
inference config (``python -m monai.bundle run --config_file configs/inference.json``) with the paper AMIR
(random weights: the time does not depend on them), in a child process, and reports its wall, user and system time
per slice, minor page faults per slice and peak resident memory, from the child's resource usage.

Usage (from the repository root)::

    .venv/bin/python bench/network.py                 # the full table
    .venv/bin/python bench/network.py --models AMIR --checkpointing
    .venv/bin/python bench/network.py --volume --slices 5                      # inference config, 256x256x5
    .venv/bin/python bench/network.py --volume --slices 5 --keep-memory False  # without the allocator setting
    .venv/bin/python bench/network.py --volume --slices 20 --amp               # bfloat16 autocast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.networks import AMIR, Restormer, blocks  # noqa: E402
from scripts.runtime import keep_freed_memory  # noqa: E402

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


def model_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward, the MDTA norms counted as the reductions they are: on a CPU the network takes them
    from the diagonal of q @ q^T (``blocks._row_norms``, faster there), products that are not the model's work."""
    fast, blocks._row_norms = blocks._row_norms, lambda t: torch.linalg.vector_norm(t, dim=-1, keepdim=True)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        blocks._row_norms = fast
    return counter.get_total_flops()


def measure(name: str, task: str, checkpointing: bool, repeats: int) -> dict:
    """One measurement, in this process: ``task`` is ``eval256``, ``eval512`` or ``train``."""
    torch.manual_seed(0)
    net = NETWORKS[name](gradient_checkpointing=checkpointing)
    result: dict = {"params": sum(p.numel() for p in net.parameters())}
    if task.startswith("eval"):
        keep_freed_memory()  # as the inference config does on a CPU (bench/README.md, the page faults)
        size = int(task[4:])
        x = torch.rand(1, 1, size, size)
        net.eval()
        flops = model_flops(net, x)
        with torch.no_grad():
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
        flops = 3 * model_flops(net, x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    seconds = min(times)
    matmul = matmul_flops()
    result.update(
        flops=flops, seconds=seconds, matmul_flops=matmul, ratio=flops / seconds / matmul, peak_rss_gib=peak_rss_gib()
    )
    return result


def phantom(size: int, slices: int) -> np.ndarray:
    """A smooth head-like MRI volume (scanner units), so that the routing sees image-like input."""
    x, y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    volume = np.empty((size, size, slices), dtype=np.float32)
    for k in range(slices):
        r = np.hypot(x / 0.8, y / (0.9 - 0.4 * k / max(slices, 1)))  # the head narrows towards the top
        volume[..., k] = (r < 1) * (1500 + 800 * np.cos(6 * x + k) * np.sin(5 * y)) + (r < 0.5) * 600
    return volume


def measure_volume(args: argparse.Namespace) -> dict:
    """Restore a ``size x size x slices`` volume through configs/inference.json in a child process; its usage."""
    with tempfile.TemporaryDirectory(prefix="amir-bench-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        torch.save(AMIR().state_dict(), tmp / "model.pt")
        (tmp / "in").mkdir()
        nib.save(
            nib.Nifti1Image(phantom(args.size, args.slices), np.diag([1.0, 1.0, 3.0, 1.0])), tmp / "in" / "v.nii.gz"
        )
        command = [
            sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
            "--dataset_dir", str(tmp / "in"), "--output_dir", str(tmp / "out"), "--modality", "mri",
            "--ckpt_path", str(tmp / "model.pt"), "--network_def", "{'_target_': 'scripts.networks.AMIR'}",
            "--slice_batch_size", str(args.slice_batch_size), "--keep_freed_memory", args.keep_memory,
        ]  # fmt: skip
        if args.threads:
            command += ["--num_threads", str(args.threads)]
        if args.backend:
            command += ["--backend", args.backend]
        if args.amp:
            command += ["--amp", "True"]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.exit(f"inference failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
        "peak_rss_gib": after.ru_maxrss / 2**20,
        "load": os.getloadavg()[0],
    }


def main_volume(args: argparse.Namespace) -> None:
    """Print one row: the volume through the inference config (process start and model load included)."""
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}")
    r = measure_volume(args)
    n = args.slices
    print("| volume | batch | threads | backend | amp | keep freed memory | wall s | s / slice | user s | sys s | "
          "sys % | faults / slice | peak RSS GiB | load after |")  # fmt: skip
    print("|---" * 14 + "|")
    print(
        f"| {args.size}x{args.size}x{n} | {args.slice_batch_size} | {args.threads or 'default'} | "
        f"{args.backend or 'default'} | {args.amp} | {args.keep_memory} | "
        f"{r['wall']:.1f} | {r['wall'] / n:.2f} | {r['user']:.1f} | {r['sys']:.1f} | "
        f"{100 * r['sys'] / max(r['user'] + r['sys'], 1e-9):.0f} | {r['faults'] / n:,.0f} | {r['peak_rss_gib']:.2f} | "
        f"{r['load']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--tasks", nargs="+", default=["eval256", "eval512", "train"])
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    volume = parser.add_argument_group("--volume: a volume through configs/inference.json (paper AMIR)")
    volume.add_argument("--volume", action="store_true", help="measure the inference config on a volume")
    volume.add_argument("--size", type=int, default=256, help="slice size (pixels)")
    volume.add_argument("--slices", type=int, default=100, help="number of slices")
    volume.add_argument("--slice-batch-size", type=int, default=1, help="the config's slice_batch_size")
    volume.add_argument("--threads", type=int, default=0, help="the config's num_threads (0: default)")
    volume.add_argument("--backend", default="", help="the config's backend (default: the config's)")
    volume.add_argument("--amp", action="store_true", help="the config's amp (bfloat16 autocast on a CPU)")
    volume.add_argument(
        "--keep-memory", choices=["True", "False"], default="True", help="the config's keep_freed_memory"
    )
    args = parser.parse_args()
    if args.volume:
        main_volume(args)
        return

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
