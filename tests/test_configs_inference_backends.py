"""``backend`` of configs/inference.json through the CLI: ONNX Runtime restores what PyTorch restores, its model is
exported once per weights file and reused, a damaged cached model is exported again, auto logs its choice."""

import subprocess

import nibabel as nib
import numpy as np
import torch
from _workflow_data import (
    BUNDLE,
    ONE_THREAD_ENV,
    TINY_NETWORK,
    bundle_command,
    run_side_by_side,
    tiny_network_config,
    write_nifti,
)
from scripts.backends import CHECK_ATOL
from scripts.transforms.intensity import MODALITY_WINDOWS

AFFINE = np.diag([0.8, 0.7, 2.5, 1.0])
#: The first-slice tolerance in HU: CHECK_ATOL on the network's [0, 1] scale, times the CT window's width.
HU_TOLERANCE = CHECK_ATOL * (MODALITY_WINDOWS["ct"][1] - MODALITY_WINDOWS["ct"][0])


def _setup(tmp_path):
    """A CT volume, random weights of the tiny AMIR (a restoration that is not the identity), the CLI options."""
    write_nifti(tmp_path / "in" / "ct.nii.gz", np.random.default_rng(0).uniform(-1000, 1500, (40, 36, 3)), AFFINE)
    from scripts.networks import AMIR

    torch.manual_seed(0)
    torch.save(AMIR(**{k: v for k, v in TINY_NETWORK.items() if k != "_target_"}).state_dict(), tmp_path / "w.pt")
    options = [
        "--config_file", "configs/inference.json", "--dataset_dir", str(tmp_path / "in"), "--modality", "ct",
        "--ckpt_path", str(tmp_path / "w.pt"), "--network_def", tiny_network_config(tmp_path / "tiny.json"),
        "--onnx_cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    return options


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        bundle_command(*args), cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV
    )


def _restored(folder):
    return nib.load(folder / "ct_restored.nii.gz").get_fdata()


def test_onnxruntime_restores_as_torch_exports_once_and_rebuilds_a_damaged_model(tmp_path):
    options = _setup(tmp_path)
    cache = tmp_path / "cache"
    eager, onnx = run_side_by_side([
        bundle_command(*options, "--backend", "torch", "--output_dir", str(tmp_path / "torch")),
        bundle_command(*options, "--backend", "onnxruntime", "--output_dir", str(tmp_path / "ort")),
    ])  # fmt: skip
    assert eager.returncode == 0 and onnx.returncode == 0, onnx.stdout[-3000:] + onnx.stderr[-3000:]
    assert "backend torch: torch (as asked)" in eager.stdout and "ONNX Runtime" not in eager.stdout
    assert "exporting" in onnx.stdout and "backend onnxruntime: onnxruntime (ONNX Runtime matches" in onnx.stdout
    assert "intra_op_threads': 1, 'inter_op_threads': 1, 'graph_optimization': 'ORT_ENABLE_ALL'" in onnx.stdout
    expected = _restored(tmp_path / "torch")
    assert np.abs(_restored(tmp_path / "ort") - expected).max() <= HU_TOLERANCE
    assert np.abs(expected - nib.load(tmp_path / "in" / "ct.nii.gz").get_fdata()).max() > 10 * HU_TOLERANCE
    (model,) = cache.glob("*.onnx")
    assert (cache / ".amir-bundle.json").is_file()
    written = model.stat().st_mtime_ns

    # the next run (auto) reuses the model, runs both engines on the first slice and says which it chose and why
    again = _run(*options, "--backend", "auto", "--output_dir", str(tmp_path / "auto"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(cached)" in again.stdout and "exporting" not in again.stdout and model.stat().st_mtime_ns == written
    choice = [line for line in again.stdout.splitlines() if "backend auto: " in line]
    assert len(choice) == 1 and " s, torch " in choice[0] and "onnxruntime " in choice[0]
    assert np.abs(_restored(tmp_path / "auto") - expected).max() <= HU_TOLERANCE

    # a model changed on disk is not trusted: exported again, and the restoration is still torch's within tolerance
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    rebuilt = _run(*options, "--backend", "onnxruntime", "--output_dir", str(tmp_path / "rebuilt"))
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert "is damaged" in rebuilt.stdout and "exporting it again" in rebuilt.stdout
    assert model.read_bytes() != bytes(data)
    assert np.abs(_restored(tmp_path / "rebuilt") - expected).max() <= HU_TOLERANCE


def test_unknown_backend_is_one_error_line(tmp_path):
    options = _setup(tmp_path)
    result = _run(*options, "--backend", "tensorrt", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: backend 'tensorrt': use one of auto, torch, onnxruntime (--backend torch)"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
