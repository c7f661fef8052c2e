"""configs/inference.json through the CLI on 2-D and 3-D NIfTI, DICOM series (to NIfTI and to DICOM), a bad file and
a low-resolution MRI."""

import subprocess

import itk
import nibabel as nib
import numpy as np
import pydicom
from _workflow_data import (
    BUNDLE,
    ONE_THREAD_ENV,
    bundle_command,
    identity_weights,
    pet_attributes,
    tiny_network_config,
    write_dicom_series,
    write_nifti,
)
from monai.transforms import LoadImage
from scripts.transforms import zero_fill_affine

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
        "--network_def", tiny_network_config(tmp_path / "tiny.json"), "--output_format", "nifti",
    ]  # fmt: skip

    # no --modality: the DICOM series says CT; the NIfTI files cannot say, and the broken file fails by name
    first = subprocess.run(
        bundle_command("--config_file", "configs/inference.json", *options),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert first.returncode == 1
    assert "broken.nii.gz: cannot be read as an image" in first.stdout
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "3 of 4 inputs failed" in errors[0] and "Traceback" not in first.stderr
    assert "ct_slice.nii: a NIfTI image does not say its modality; give it with --modality" in first.stdout
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["series_restored.nii.gz"]
    restored = nib.load(out / "dicom" / "series_restored.nii.gz")
    source = LoadImage(image_only=True)(str(inputs / "dicom" / "series"))
    assert restored.shape == tuple(source.shape) == (24, 20, 3)
    assert np.allclose(restored.affine, source.affine.numpy())
    assert np.allclose(restored.affine[:3, 3], [10.0, 20.0, 5.0])  # DICOM origin (-10, -20, 5) LPS in RAS
    assert np.allclose(restored.get_fdata(), np.asarray(source), atol=0.05)  # HU
    assert np.allclose(restored.get_fdata()[..., 0], stored[..., 0].T - 1024.0, atol=0.05)

    # with --modality ct the NIfTI files are restored; the DICOM series' output, the bundle's and whole, is kept
    (inputs / "broken.nii.gz").unlink()
    kept = (out / "dicom" / "series_restored.nii.gz").read_bytes()
    second = subprocess.run(
        bundle_command("--config_file", "configs/inference.json", *options, "--modality", "ct"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (out / "dicom" / "series_restored.nii.gz").read_bytes() == kept
    assert "series_restored.nii.gz exists, kept" in second.stdout
    for name, shape in (("ct_volume", (24, 20, 3)), ("ct_slice", (20, 18))):
        source = nib.load(next(inputs.glob(f"{name}.nii*")))
        result = nib.load(out / f"{name}_restored.nii.gz")
        assert result.shape == shape and result.get_data_dtype() == np.float32
        assert np.allclose(result.affine, source.affine)
        assert np.allclose(result.get_fdata(), np.clip(source.get_fdata(), -1024, 3071), atol=0.05)


def band_limited(shape, period=256.0, spacing=4.0, origin=0.0):
    """MRI-like values (scanner units) of a band-limited image (below 32 cycles per 256 mm) on a grid of voxel
    centres ``origin + spacing * i``, the same in every slice."""
    x = (origin + spacing * np.arange(shape[0]))[:, None] / period
    y = (origin + spacing * np.arange(shape[1]))[None, :] / period
    plane = 1500 + 400 * np.cos(2 * np.pi * 3 * x + 0.3) * np.sin(2 * np.pi * 5 * y) + 200 * np.cos(2 * np.pi * 29 * y)
    return np.repeat(plane[..., None], shape[2], axis=2)


def test_dicom_series_to_dicom_and_low_resolution_mri(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    ct = np.random.default_rng(0).integers(0, 2500, (20, 24, 3))
    write_dicom_series(inputs / "ct", ct, extra={"SeriesDescription": "abdomen"})  # HU = stored - 1024
    pet = pet_attributes()
    write_dicom_series(inputs / "pet", np.full((16, 16, 2), 10000), modality="PT", intercept=0, extra=pet)  # 2 SUV
    low = band_limited((64, 64, 2))  # a 64 x 64 acquisition of 4 mm voxels: 256 mm field of view
    write_nifti(inputs / "mr_64.nii.gz", low, np.diag([4.0, 4.0, 5.0, 1.0]))
    weights = tmp_path / "identity.pt"
    identity_weights(weights)  # output == input: the values show the units and the grid
    command = bundle_command(
        "--config_file", "configs/inference.json", "--dataset_dir", str(inputs), "--output_dir", str(out),
        "--ckpt_path", str(weights), "--network_def", tiny_network_config(tmp_path / "tiny.json"),
        "--modality", "mri", "--mri_upsample", "4",
    )  # fmt: skip
    run = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # DICOM in, DICOM out (the default output_format auto): a derived series, read back by pydicom and ITK
    for name, expected in (("ct", ct.transpose(2, 0, 1) - 1024.0), ("pet", np.full((2, 16, 16), 10000.0))):
        files = sorted(p for p in (out / f"{name}_restored").iterdir() if p.suffix == ".dcm")
        written = [pydicom.dcmread(p) for p in files]
        sources = [pydicom.dcmread(p) for p in sorted((inputs / name).iterdir())]
        assert len(written) == len(sources) and len({ds.SeriesInstanceUID for ds in written}) == 1
        assert written[0].SeriesInstanceUID != sources[0].SeriesInstanceUID
        assert all(list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] for ds in written)
        assert "restored by AMIR bundle" in written[0].SeriesDescription
        assert written[0].StudyInstanceUID == sources[0].StudyInstanceUID and written[0].PatientID == "P0"
        values = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in written])
        order = np.argsort([float(ds.ImagePositionPatient[2]) for ds in written])
        np.testing.assert_allclose(values[order], expected, atol=0.5 if name == "ct" else 1.0)  # HU; Bq/ml again
        assert written[0].get("Units", "BQML") == "BQML"
        restored, source = itk.imread(str(out / f"{name}_restored")), itk.imread(str(inputs / name))
        assert np.allclose(restored.GetOrigin(), source.GetOrigin())
        assert np.allclose(restored.GetSpacing(), source.GetSpacing())
        assert np.allclose(np.asarray(restored.GetDirection()), np.asarray(source.GetDirection()))

    # the 64 x 64 MRI is restored on the 256 x 256 grid, same field of view, finer voxels
    fine = nib.load(out / "mr_64_restored.nii.gz")
    assert fine.shape == (256, 256, 2)
    affine = zero_fill_affine(np.diag([4.0, 4.0, 5.0, 1.0]), (64, 64), (256, 256))
    assert np.allclose(fine.affine, affine) and np.allclose(affine[:2, 3], -1.5)
    np.testing.assert_allclose(fine.get_fdata(), band_limited((256, 256, 2), spacing=1.0, origin=-1.5), atol=0.5)

    # a second run keeps the series it wrote
    again = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    assert again.returncode == 0 and again.stdout.count("exists, kept") == 3, again.stdout[-3000:]
