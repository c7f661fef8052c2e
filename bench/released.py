"""The paper AMIR of this project against the authors' released code, eval on a CPU, same weights, one process.

The released code is not part of this project: fetch its repository (``Yaziwel/All-In-One-Medical-Image-Restoration-
via-Task-Adaptive-Routing``) and give the path of its ``model/Model_AMIR.py`` (it needs ``einops``). Both networks
get the released network's seed-0 initial weights (converted with ``scripts.networks.convert_reference_state_dict``)
and the process keeps freed memory as the inference config does; each size gets one warm-up call per network, then
two timed calls each, interleaved, and the smaller wall and CPU time (user + system) of each is printed, with the
largest difference between the two outputs.

Usage (from the repository root)::

    .venv/bin/python bench/released.py /path/to/model/Model_AMIR.py --sizes 256 512 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.networks import AMIR, convert_reference_state_dict  # noqa: E402
from scripts.runtime import keep_freed_memory  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_released(path: Path) -> torch.nn.Module:
    """The released ``AMIR()`` (paper configuration, seed 0) from its source file."""
    spec = importlib.util.spec_from_file_location("released_amir", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.AMIR().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("released", type=Path, help="the released code's model/Model_AMIR.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    released = load_released(args.released)
    ours = AMIR().eval()
    ours.load_state_dict(convert_reference_state_dict(released.state_dict()), strict=True)
    networks = {"released": released, "this project": ours}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| size | code | wall s | CPU s | max diff | this project / released |\n|---|---|---|---|---|---|")
    for size in args.sizes:
        x = torch.rand(1, 1, size, size)
        best = {name: (float("inf"), float("inf")) for name in networks}
        with torch.no_grad():
            diff = float((released(x) - ours(x)).abs().max())  # also the warm-up
            for name in [*networks] * 2:
                cpu, start = cpu_seconds(), time.perf_counter()
                networks[name](x)
                wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
        ratio = best["this project"][0] / best["released"][0]
        for name, (wall, cpu) in best.items():
            print(f"| {size}x{size} | {name} | {wall:.2f} | {cpu:.2f} | {diff:.1e} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
