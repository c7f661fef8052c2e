"""``--backend`` of the MONAI Deploy application: ONNX Runtime restores what the bundle's PyTorch path restores; a
wrong value is one error line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from scripts.backends import CHECK_ATOL
from scripts.transforms.intensity import MODALITY_WINDOWS
from test_deploy_app import bundle_restore, run_app, tiny_bundle  # noqa: F401 (tiny_bundle is a fixture)

HU_TOLERANCE = CHECK_ATOL * (MODALITY_WINDOWS["ct"][1] - MODALITY_WINDOWS["ct"][0])


def _volume(tmp_path):
    rng = np.random.default_rng(0)
    volume = (rng.normal(40.0, 120.0, (40, 36, 3)) + np.linspace(-300, 300, 36)[None, :, None]).astype(np.float32)
    source = tmp_path / "in" / "scan.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 3.0, 1.0])), str(source))
    return source


def test_onnxruntime_backend(tiny_bundle, tmp_path):  # noqa: F811
    config = json.loads((tiny_bundle / "configs" / "inference.json").read_text())
    config["onnx_cache_dir"] = str(tmp_path / "cache")  # not the user's ~/.cache
    (tiny_bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    source = _volume(tmp_path)
    result = run_app(tiny_bundle, source, tmp_path / "out", "--modality", "ct", "--backend", "onnxruntime")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "backend onnxruntime: onnxruntime (ONNX Runtime matches PyTorch" in log
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    restored = np.asarray(nib.load(str(tmp_path / "out" / "scan_restored.nii.gz")).dataobj)
    expected = bundle_restore(tiny_bundle, source, "ct")  # PyTorch
    assert np.abs(restored - expected).max() <= HU_TOLERANCE
    assert np.abs(expected - np.asarray(nib.load(str(source)).dataobj)).max() > 10 * HU_TOLERANCE

    wrong = run_app(tiny_bundle, source, tmp_path / "out2", "--modality", "ct", "--backend", "tensorrt")
    assert wrong.returncode == 1
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: backend 'tensorrt': use one of auto, torch, onnxruntime")
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())
