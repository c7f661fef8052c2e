"""The MONAI Deploy application on a folder of two DICOM series and a NIfTI it must refuse: each series is its own
input with its own modality, and the refusal is one line naming the file (the SDK's graph stops there)."""

import nibabel as nib
import numpy as np
from _inference_cases import ct_values, nifti_with, write_series
from test_deploy_app import run_app, tiny_bundle  # noqa: F401 - tiny_bundle is a fixture


def test_two_series_and_a_nan_nifti(tiny_bundle, tmp_path):  # noqa: F811
    inputs, output = tmp_path / "in", tmp_path / "out"
    mr = np.random.default_rng(3).integers(3500, 4000, (20, 24, 3))  # read as CT, clipped to 3071 HU
    write_series(inputs / "study", ct_values(), "CT", prefix="a", series_number=2)
    write_series(inputs / "study", mr, "MR", prefix="b", series_number=3, intercept=0)
    nifti_with(inputs / "zz_nan.nii.gz", nan=5)  # found last
    output.mkdir()
    result = run_app(tiny_bundle, inputs, output, "--modality", "ct", "--output-format", "nifti")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "zz_nan.nii.gz: 5 of 1440 values are not finite" in errors[0]
    names = sorted(p.name for p in output.rglob("*.nii.gz"))
    assert names == ["study_series2_restored.nii.gz", "study_series3_restored.nii.gz"]
    restored_mr = np.asarray(nib.load(output / "study_series3_restored.nii.gz").dataobj)
    assert restored_mr.max() > 3200  # restored as MRI (its header), not as CT (--modality): no 3071 HU clip
