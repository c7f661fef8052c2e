"""Speed of the bundle on one GPU: training steps, the training CLI, evaluation and volume inference, one table.

Rows (paper configurations; images of 128x128 in training):

- ``train``: a bare training step of AMIR and Restormer (forward, L1 + 0.001 balance, backward, Adam; the
  bundle's :class:`~scripts.workflows.AutocastInferer` and :class:`~scripts.workflows.BalancedL1Loss`) at batch
  8 and 32, in fp32, bf16 and bf16 + ``torch.compile``: images/s and peak GPU memory;
- ``cli``: ``python -m monai.bundle run training`` with the paper AMIR in bf16 on the demo set, images/s over at
  least 200 iterations (data loading included; read off the iteration log, start-up and validation excluded),
  and its ratio to the bare bf16 step;
- ``eval``: AMIR forward at 256x256 (batch 16) and 512x512 (batch 4), fp32 and bf16;
- ``inference``: seconds to restore a 512x512x300 CT volume through ``configs/inference.json`` (bf16, whole
  command, start-up included).

The compiled rows come last; one is skipped (and says so) when the time left of ``--budget-s`` is shorter than
the previous compilation took. Without a CUDA GPU it prints a message and exits 0. ``--device cpu --tiny`` runs
every code path with a tiny network and small sizes (the test suite does, so that the script does not rot).

Usage (from the repository root)::

    .venv/bin/python bench/gpu.py                        # on a GPU machine, about 5 minutes
    .venv/bin/python bench/gpu.py --only train cli       # some rows only
    .venv/bin/python bench/gpu.py --device cpu --tiny    # code-path check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.networks import AMIR, Restormer  # noqa: E402
from scripts.workflows import AutocastInferer, BalancedL1Loss  # noqa: E402

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}
PARTS = ("train", "eval", "inference", "cli", "compile")
PRECISIONS = {"fp32": None, "bf16": "bfloat16"}


def sizes(tiny: bool) -> dict:
    """What each row measures: the paper's sizes, or tiny ones for a code-path check."""
    if tiny:
        return {"batches": (2,), "patch": 32, "eval": ((32, 2),), "cli_iterations": (5, 12), "volume": 4, "warmup": 1}
    return {
        "batches": (8, 32),
        "patch": 128,
        "eval": ((256, 16), (512, 4)),
        "cli_iterations": (20, 220),
        "volume": 300,
        "warmup": 3,
    }


def network(name: str, tiny: bool) -> torch.nn.Module:
    return {"AMIR": AMIR, "Restormer": Restormer}[name](**(TINY if tiny else {}))


def network_def(tiny: bool) -> str:
    """The ``--network_def`` of the paper AMIR (or the tiny one) for the CLI rows."""
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()} if tiny else {}
    return json.dumps({"_target_": "scripts.networks.AMIR", **kwargs})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, warmup: int, min_steps: int, min_s: float) -> tuple:
    """(seconds of the first call, seconds per call after ``warmup`` calls, at least ``min_steps`` and ``min_s``)."""
    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        step()
    sync(device)
    count, start = 0, time.perf_counter()
    while count < min_steps or time.perf_counter() - start < min_s:
        step()
        count += 1
        if count % 5 == 0:
            sync(device)
    sync(device)
    return first, (time.perf_counter() - start) / count


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "-"


def reset(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_row(name: str, batch: int, precision: str, compile_backend: str | None, args, device) -> dict:
    """A bare training step (forward, L1 + 0.001 balance, backward, Adam) of a fresh paper network."""
    reset(device)
    torch.manual_seed(0)
    net = network(name, args.tiny).to(device).train()
    model = torch.compile(net, backend=compile_backend) if compile_backend else net
    inferer = AutocastInferer(amp=PRECISIONS[precision] is not None, dtype=PRECISIONS[precision])
    loss_fn = BalancedL1Loss(net, gamma=1e-3)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
    size = sizes(args.tiny)["patch"]
    x, y = torch.rand(batch, 1, size, size, device=device), torch.rand(batch, 1, size, size, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(inferer(x, model), y).backward()
        optimizer.step()

    warmup = sizes(args.tiny)["warmup"]
    first, seconds = timed(step, device, warmup=warmup, min_steps=args.min_steps, min_s=args.min_s)
    mode = precision + (" + compile" if compile_backend else "")
    note = f"first step {first:.1f} s" if compile_backend else ""
    return row("train", name, f"batch {batch} of {size}x{size}", mode, batch / seconds, seconds, peak_gib(device), note)


def eval_row(size: int, batch: int, precision: str, args, device) -> dict:
    """The paper AMIR's forward pass (inference mode)."""
    reset(device)
    torch.manual_seed(0)
    net = network("AMIR", args.tiny).to(device).eval()
    inferer = AutocastInferer(amp=PRECISIONS[precision] is not None, dtype=PRECISIONS[precision])
    x = torch.rand(batch, 1, size, size, device=device)

    def step() -> None:
        with torch.inference_mode():
            inferer(x, net)

    _, seconds = timed(step, device, warmup=sizes(args.tiny)["warmup"], min_steps=args.min_steps, min_s=args.min_s)
    return row("eval", "AMIR", f"batch {batch} of {size}x{size}", precision, batch / seconds, seconds, peak_gib(device))


def row(part, net, shape, precision, images_s, seconds, peak="-", note="") -> dict:
    return {"part": part, "network": net, "shape": shape, "precision": precision, "images_s": images_s,
            "seconds": seconds, "peak_gib": peak, "note": note}  # fmt: skip


def subprocess_env(device: torch.device) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the configs pick the GPU whenever they see one
    return env


_ITERATION = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\biteration (\d+)/(\d+)\b", re.M)


def cli_row(args, device, tmp: Path) -> dict:
    """The training CLI (paper AMIR, bf16, demo set); images/s between two logged iterations."""
    from scripts.data import build_demo_set

    first, last = sizes(args.tiny)["cli_iterations"]
    batch, patch = sizes(args.tiny)["batches"][0], sizes(args.tiny)["patch"]
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
        "--dataset_dir", str(build_demo_set()), "--output_dir", str(tmp / "cli"),
        "--network_def", network_def(args.tiny), "--amp", "true", "--batch_size", str(batch),
        "--patch_size", f"[{patch},{patch}]", "--num_iterations", str(last), "--val_interval", str(last),
        "--log_interval", "1", "--num_val_slices", "1",
    ]  # fmt: skip
    if args.tiny:  # no loader workers, and no noise banks to build (about 2 CPU-minutes for the demo set)
        command += ["--num_workers", "0", "--vary_degradations", "False"]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, env=subprocess_env(device))
    if result.returncode != 0:
        raise RuntimeError(f"the training CLI failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    times = {int(i): datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t, i, _ in _ITERATION.findall(result.stdout)}
    if first not in times or last not in times:
        raise RuntimeError(f"no 'iteration {first}' and 'iteration {last}' lines in the training log")
    seconds = (times[last] - times[first]).total_seconds() / (last - first)
    note = f"iterations {first}-{last}, data loading included"
    return row("cli", "AMIR", f"batch {batch} of {patch}x{patch}", "bf16", batch / seconds, seconds, "-", note)


def inference_row(args, device, tmp: Path) -> dict:
    """Seconds to restore a CT volume (512x512x300; tiny: 64x64x4) through the inference config, in bf16."""
    import nibabel as nib

    size = 64 if args.tiny else 512
    depth = sizes(args.tiny)["volume"]
    inputs, weights = tmp / "volume_in", tmp / "weights.pt"
    inputs.mkdir()
    hu = np.random.default_rng(0).integers(-1024, 1500, (size, size, depth), dtype=np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 1.0, 1.0])), inputs / "ct.nii")
    torch.manual_seed(0)
    torch.save(network("AMIR", args.tiny).state_dict(), weights)
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--dataset_dir", str(inputs), "--output_dir", str(tmp / "volume_out"), "--modality", "ct",
        "--network_def", network_def(args.tiny), "--ckpt_path", str(weights), "--amp", "true",
        "--slice_batch_size", "16",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, env=subprocess_env(device))
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the inference CLI failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    shape = f"CT volume {size}x{size}x{depth}"
    return row("inference", "AMIR", shape, "bf16", depth / seconds, seconds, "-", "whole command, start-up included")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| part | network | batch / size | precision | images/s | s per step | peak GPU GiB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        images = f"{r['images_s']:.1f}" if r["images_s"] is not None else "-"
        seconds = f"{r['seconds']:.3f}" if r["seconds"] is not None else "-"
        cells = [r["part"], r["network"], r["shape"], r["precision"], images, seconds, r["peak_gib"], r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(args, device: torch.device) -> list[dict]:
    rows: list[dict] = []
    start = time.perf_counter()
    parts = set(args.only or PARTS)
    batches = sizes(args.tiny)["batches"]
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in parts:
            for name in ("AMIR", "Restormer"):
                for batch in batches:
                    for precision in PRECISIONS:
                        rows.append(train_row(name, batch, precision, None, args, device))
                        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if "eval" in parts:
            for size, batch in sizes(args.tiny)["eval"]:
                for precision in PRECISIONS:
                    rows.append(eval_row(size, batch, precision, args, device))
                    print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if "inference" in parts:
            rows.append(inference_row(args, device, Path(tmp)))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if "cli" in parts:
            rows.append(cli_row(args, device, Path(tmp)))
            bare = [r for r in rows if r["part"] == "train" and r["network"] == "AMIR" and r["precision"] == "bf16"]
            if bare:
                rows[-1]["note"] += f"; {rows[-1]['images_s'] / bare[0]['images_s']:.2f} of the bare bf16 step"
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if "compile" in parts:
            last_compile = 0.0
            for name in ("Restormer",) if args.tiny else ("AMIR", "Restormer"):  # tiny: the code path once
                for batch in batches:
                    left = args.budget_s - (time.perf_counter() - start)
                    if args.budget_s and left < 1.2 * last_compile:
                        rows.append(row("train", name, f"batch {batch}", "bf16 + compile", None, None, "-",
                                        f"skipped: {left:.0f} s of the budget left (--only compile)"))  # fmt: skip
                        continue
                    began = time.perf_counter()
                    rows.append(train_row(name, batch, "bf16", args.compile_backend, args, device))
                    last_compile = time.perf_counter() - began
                    print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: a code-path check)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network and small sizes")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="measure these parts only")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; tiny: eager)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget of the whole run (300; tiny: none)")
    parser.add_argument("--min-steps", type=int, default=None, help="timed steps per row, at least (10; tiny: 2)")
    parser.add_argument("--min-s", type=float, default=None, help="timed seconds per row, at least (2; tiny: 0)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    args.budget_s = args.budget_s if args.budget_s is not None else (0.0 if args.tiny else 300.0)
    args.min_steps = args.min_steps or (1 if args.tiny else 10)
    args.min_s = args.min_s if args.min_s is not None else (0.0 if args.tiny else 2.0)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU here, so nothing was measured. Run it on a machine with a GPU, or with "
              "--device cpu --tiny to check its code path.")  # fmt: skip
        return 0
    if device.type == "cpu" and not args.tiny:
        print("bench/gpu.py: the paper-size rows take hours on a CPU; add --tiny (bench/network.py measures the CPU).")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# bench/gpu.py on {name}, torch {torch.__version__}{' (tiny)' if args.tiny else ''}", flush=True)
    rows = measure(args, device)
    print()
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
