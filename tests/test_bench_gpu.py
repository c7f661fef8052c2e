"""bench/gpu.py's code path on the CPU with a tiny network (timings are the benchmark's business, not the test's)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
#: One thread in the script and the CLI runs it starts: OpenMP threads of a tiny network spinning on two shared cores
#: cost several times the CPU time of one thread (here 81 CPU-s against 22).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
def test_without_a_gpu_it_says_so_and_exits_cleanly():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA GPU here, so nothing was measured" in result.stdout
    assert "Traceback" not in result.stderr


def test_tiny_cpu_run_measures_every_row(tmp_path):
    rows_file = tmp_path / "rows.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(rows_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=ONE_THREAD)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(rows_file.read_text())
    kinds = {(r["part"], r["network"], r["precision"]) for r in rows}
    for network in ("AMIR", "Restormer"):
        for precision in ("fp32", "bf16"):
            assert ("train", network, precision) in kinds
    assert ("train", "Restormer", "bf16 + compile") in kinds  # tiny: one compiled row (torch.compile, eager backend)
    assert {("eval", "AMIR", "fp32"), ("eval", "AMIR", "bf16"), ("cli", "AMIR", "bf16")} <= kinds
    assert ("inference", "AMIR", "bf16") in kinds
    assert all(r["images_s"] > 0 and math.isfinite(r["seconds"]) for r in rows)
    cli = next(r for r in rows if r["part"] == "cli")
    assert "of the bare bf16 step" in cli["note"]
    assert "| part | network |" in result.stdout  # the one table
