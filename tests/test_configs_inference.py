"""configs/inference.json through the CLI on 2-D and 3-D NIfTI, a DICOM series and a bad file."""

import subprocess

import nibabel as nib
import numpy as np
from _workflow_data import (
    BUNDLE,
    bundle_command,
    identity_weights,
    tiny_network_config,
    write_dicom_series,
    write_nifti,
)
from monai.transforms import LoadImage

AFFINE = np.array([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])


def test_folder_inference(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    write_nifti(inputs / "ct_volume.nii.gz", rng.uniform(-1500, 3500, (24, 20, 3)), AFFINE)
    write_nifti(inputs / "ct_slice.nii", rng.uniform(-1000, 1000, (20, 18)), AFFINE)
    stored = rng.integers(0, 2500, (20, 24, 3))
    write_dicom_series(inputs / "dicom" / "series", stored)  # CT, HU = stored - 1024
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti")
    weights = tmp_path / "identity.pt"
    identity_weights(weights)  # output == input (in [0, 1]): checks units, orientation and geometry end to end
    options = [
        "--dataset_dir", str(inputs), "--output_dir", str(out), "--ckpt_path", str(weights),
        "--network_def", tiny_network_config(tmp_path / "tiny.json"),
    ]  # fmt: skip

    # no --modality: the DICOM series says CT; the NIfTI files cannot say, and the broken file fails by name
    first = subprocess.run(
        bundle_command("--config_file", "configs/inference.json", *options),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 1
    assert "broken.nii.gz: failed" in first.stdout
    assert "ct_slice.nii: a NIfTI image does not say its modality; give it with --modality" in first.stdout
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["series_restored.nii.gz"]
    restored = nib.load(out / "dicom" / "series_restored.nii.gz")
    source = LoadImage(image_only=True)(str(inputs / "dicom" / "series"))
    assert restored.shape == tuple(source.shape) == (24, 20, 3)
    assert np.allclose(restored.affine, source.affine.numpy())
    assert np.allclose(restored.affine[:3, 3], [10.0, 20.0, 5.0])  # DICOM origin (-10, -20, 5) LPS in RAS
    assert np.allclose(restored.get_fdata(), np.asarray(source), atol=0.05)  # HU
    assert np.allclose(restored.get_fdata()[..., 0], stored[..., 0].T - 1024.0, atol=0.05)

    # with --modality ct the NIfTI files are restored; the existing DICOM output is kept
    (inputs / "broken.nii.gz").unlink()
    (out / "dicom" / "series_restored.nii.gz").write_bytes(b"kept")
    second = subprocess.run(
        bundle_command("--config_file", "configs/inference.json", *options, "--modality", "ct"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (out / "dicom" / "series_restored.nii.gz").read_bytes() == b"kept"
    for name, shape in (("ct_volume", (24, 20, 3)), ("ct_slice", (20, 18))):
        source = nib.load(next(inputs.glob(f"{name}.nii*")))
        result = nib.load(out / f"{name}_restored.nii.gz")
        assert result.shape == shape and result.get_data_dtype() == np.float32
        assert np.allclose(result.affine, source.affine)
        assert np.allclose(result.get_fdata(), np.clip(source.get_fdata(), -1024, 3071), atol=0.05)
