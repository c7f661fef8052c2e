"""``backend`` of configs/evaluate.json through the CLI: ONNX Runtime evaluates as PyTorch does.

The PET slices of the demo set (at most 162 x 162): on the 512 x 512 CT slices the tiny network's random routers
are close enough to ties for ONNX Runtime and PyTorch to route some pixels to other experts, which the first-slice
check refuses (the trained demo weights agree within 2e-5 there)."""

import csv

import torch
from _workflow_data import TINY_NETWORK, bundle_command, demo_dir, run_side_by_side, tiny_network_config


def _rows(folder):
    with open(folder / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row["method"] == "AMIR"]


def test_onnxruntime_metrics_equal_torch(tmp_path):
    from scripts.networks import AMIR

    torch.manual_seed(0)
    torch.save(AMIR(**{k: v for k, v in TINY_NETWORK.items() if k != "_target_"}).state_dict(), tmp_path / "w.pt")
    options = [
        "--config_file", "configs/evaluate.json", "--dataset_dir", str(demo_dir()), "--num_workers", "0",
        "--network_def", tiny_network_config(tmp_path / "tiny.json"), "--ckpt_path", str(tmp_path / "w.pt"),
        "--num_figures", "0", "--num_baseline_slices", "2", "--onnx_cache_dir", str(tmp_path / "cache"),
        "--tasks", "['pet']",
    ]  # fmt: skip
    eager, onnx = run_side_by_side([
        bundle_command(*options, "--backend", "torch", "--output_dir", str(tmp_path / "torch")),
        bundle_command(*options, "--backend", "onnxruntime", "--output_dir", str(tmp_path / "ort")),
    ])  # fmt: skip
    assert eager.returncode == 0 and onnx.returncode == 0, onnx.stdout[-3000:] + onnx.stderr[-3000:]
    assert "backend torch: torch (as asked)" in eager.stdout and "ONNX Runtime" not in eager.stdout
    assert "backend onnxruntime: onnxruntime (ONNX Runtime matches PyTorch" in onnx.stdout
    expected, got = _rows(tmp_path / "torch"), _rows(tmp_path / "ort")
    assert len(expected) == len(got) >= 2 and [r["id"] for r in expected] == [r["id"] for r in got]
    metrics = [k for k in expected[0] if k not in ("method", "task", "id")]
    assert metrics
    for a, b in zip(expected, got, strict=True):
        for k in metrics:
            assert abs(float(a[k]) - float(b[k])) <= 1e-3 * max(1.0, abs(float(a[k]))), (a, b, k)
