"""bench/gpu.py's code path on the CPU with a tiny network (timings are the benchmark's business, not the test's).

The script's ``main`` runs in the test's process (the CLI runs it starts are processes of their own): a process of
its own would only add the start-up of torch and the bundle, several CPU-seconds, to the same code path.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from _workflow_data import demo_dir

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    """bench/gpu.py as a module."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_cleanly(gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without one
    assert gpu.main([]) == 0
    assert "no CUDA GPU here, so nothing was measured" in capsys.readouterr().out


def test_tiny_cpu_run_measures_every_row(gpu, tmp_path, monkeypatch, capsys, one_thread):
    # one thread in the CLI runs it starts too: OpenMP threads of a tiny network spinning on two shared cores cost
    # several times the CPU time of one thread (81 CPU-s against 22 for the whole script)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    demo_dir()  # the CLI row trains on the demo set: built here (under the tests' lock) if missing
    rows_file = tmp_path / "rows.json"
    try:
        assert gpu.main(["--device", "cpu", "--tiny", "--json", str(rows_file)]) == 0
    finally:
        torch._dynamo.reset()  # the compiled row's caches stay out of the tests that follow
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
    assert "| part | network |" in capsys.readouterr().out  # the one table
