"""The inference backends on this machine's CPU: the paper AMIR in PyTorch eager and in ONNX Runtime (the bundle's own
export and session settings, ``scripts.backends``), compiled by ``torch.compile`` (inductor) and under the configs'
``amp`` (``bf16``: bfloat16 autocast, ``scripts.workflows.AutocastInferer``), per slice, by slice size and thread
count.

Each measurement runs in a fresh process (its peak resident memory is its own): the network (random weights, seed
0: the time does not depend on them), for ONNX Runtime the cached export (``scripts.onnx_cache``; the first run
exports, about 40 s) and its session, one warm-up call (timed: for ``compiled`` the compilation), then
``--repeats`` timed calls. Per call: wall time, and user and system CPU time of the process
(``resource.getrusage``); the peak resident memory of the process after the calls; the load average of the machine
before and after (it is shared). For ONNX Runtime and the compiled network the largest difference from eager
PyTorch on the same input is computed after the peak memory is read (for every engine but eager).

Usage (from the repository root)::

    .venv/bin/python bench/backends.py                          # sizes 256 512, threads 1 2, every engine
    .venv/bin/python bench/backends.py --sizes 256 --threads 2 --repeats 3
    .venv/bin/python bench/backends.py --sizes 256 512 --threads 2 --engines torch bf16
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

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

ENGINES = ("torch", "compiled", "onnxruntime", "bf16")  # compiled: torch.compile (inductor, C++ on a CPU)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(engine: str, size: int, threads: int, repeats: int, weights: Path, cache: Path) -> dict:
    """One measurement in this process (see the module's docstring)."""
    from scripts.backends import OnnxNetwork
    from scripts.networks import AMIR
    from scripts.onnx_cache import OnnxCache
    from scripts.runtime import keep_freed_memory
    from scripts.workflows import AutocastInferer

    keep_freed_memory()  # as the inference config does on a CPU
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = AMIR().eval()
    if not weights.is_file():
        torch.save(net.state_dict(), weights)
    net.load_state_dict(torch.load(weights, weights_only=True))
    if engine == "onnxruntime":
        run = OnnxNetwork(OnnxCache(cache).model(net, weights, {"bench": "paper AMIR"}))
    elif engine == "bf16":
        inferer = AutocastInferer(amp=True, dtype="bfloat16")
        run = lambda x: inferer(x, net)  # noqa: E731
    else:
        run = torch.compile(net) if engine == "compiled" else net
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        start = time.perf_counter()
        out = run(x)  # warm-up (for "compiled": the compilation)
        first = time.perf_counter() - start
        walls, users, systems = [], [], []
        for _ in range(repeats):
            (u0, s0), t0 = _cpu(), time.perf_counter()
            out = run(x)
            (u1, s1), t1 = _cpu(), time.perf_counter()
            walls.append(t1 - t0)
            users.append(u1 - u0)
            systems.append(s1 - s0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    result = {
        "engine": engine, "size": size, "threads": threads, "wall_s": min(walls), "user_s": min(users),
        "sys_s": min(systems), "peak_rss_gib": peak, "load_before": load_before, "load_after": os.getloadavg()[0],
        "first_call_s": first,
    }  # fmt: skip
    if engine != "torch":
        with torch.inference_mode():
            result["max_diff"] = float((out - net(x)).abs().max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/amir_bundle/onnx").expanduser())
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = Path(tempfile.gettempdir()) / "amir_bench_paper_seed0.pt"
    if args.child:
        engine, size, threads = args.child
        print(json.dumps(measure(engine, int(size), int(threads), args.repeats, weights, args.cache)))
        return
    columns = ("size", "engine", "threads", "wall s", "user s", "sys s", "first call s", "peak RSS GiB", "max diff")
    print("| " + " | ".join(columns) + " | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for threads in args.threads:
            for engine in args.engines:
                command = [sys.executable, __file__, "--child", engine, str(size), str(threads)]
                command += ["--repeats", str(args.repeats), "--cache", str(args.cache)]
                child = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(child.stdout.strip().splitlines()[-1])
                diff = f"{r['max_diff']:.1e}" if "max_diff" in r else ""
                load = f"{r['load_before']:.1f}-{r['load_after']:.1f}"
                print(
                    f"| {size}x{size} | {engine} | {threads} | {r['wall_s']:.2f} | {r['user_s']:.2f} | "
                    f"{r['sys_s']:.2f} | {r['first_call_s']:.1f} | {r['peak_rss_gib']:.2f} | {diff} | {load} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
