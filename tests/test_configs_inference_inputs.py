"""configs/inference.json through the CLI on the inputs a user may give: several series in a folder, outputs inside
the input folder, a killed run's leftovers, and bad inputs, each reported in one line without a traceback."""

import nibabel as nib
import numpy as np
import pytest
from _inference_cases import (
    AFFINE,
    CASES,
    ct_values,
    nifti_with,
    run_inference,
    stale_temp,
    write_non_image,
    write_series,
    written,
)
from _workflow_data import write_nifti


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_series_of_a_folder_shape_modality_and_a_second_run(tmp_path):
    inputs = tmp_path / "in"
    outputs = inputs / "restored"  # inside the input folder
    ct = ct_values()
    mr = np.random.default_rng(3).integers(3500, 4000, (20, 24, 3))  # read as CT, clipped to 3071 HU
    write_series(inputs / "study", ct, "CT", prefix="a", series_number=2)  # the folder's first file is CT
    write_series(inputs / "study", mr, "MR", prefix="b", series_number=3, intercept=0)
    write_non_image(inputs / "study" / "report.dcm", "SR")
    write_nifti(inputs / "flat.nii.gz", np.random.default_rng(0).uniform(-900, 900, (24, 20, 1)), AFFINE)
    stale = stale_temp(outputs, "flat_restored")
    options = ["--modality", "ct", "--output_format", "nifti"]

    first = run_inference(tmp_path, inputs, options, outputs)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert error_lines(first) == []
    assert "report.dcm: a DICOM Basic Text SR Storage object, not an image: left out" in first.stdout
    assert "b000.dcm: DICOM Modality MR contradicts --modality ct; restored as mri" in first.stdout
    assert f"removed {stale}" in first.stdout and not stale.exists()
    names = ["flat_restored.nii.gz", "study_series2_restored.nii.gz", "study_series3_restored.nii.gz"]
    assert written(outputs) == names
    assert nib.load(outputs / "flat_restored.nii.gz").shape == (24, 20, 1)
    restored_ct = nib.load(outputs / "study_series2_restored.nii.gz").get_fdata()
    restored_mr = nib.load(outputs / "study_series3_restored.nii.gz").get_fdata()
    assert np.allclose(restored_ct[..., 1], ct[..., 1].T - 1024.0, atol=0.05)  # HU
    assert np.allclose(restored_mr[..., 1], mr[..., 1].T, atol=0.1)  # scanner units, not clipped as CT
    before = {name: (outputs / name).read_bytes() for name in names}

    second = run_inference(tmp_path, inputs, options, outputs)  # the outputs are not inputs: nothing new
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert written(outputs) == names
    assert {name: (outputs / name).read_bytes() for name in names} == before


def test_bad_inputs_are_one_line_each_and_the_others_go_on(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    nifti_with(inputs / "nan.nii.gz", nan=100)
    write_nifti(inputs / "fmri.nii.gz", np.zeros((16, 16, 4, 3)), AFFINE)
    write_non_image(inputs / "plan" / "rtplan.dcm", "RTPLAN")
    files = write_series(inputs / "cut", ct_values(), "CT")
    files[1].write_bytes(files[1].read_bytes()[:-300])
    write_series(inputs / "norescale", ct_values(), "CT", intercept=None)
    nifti_with(inputs / "good.nii.gz")
    nifti_with(inputs / "x.nii.gz")
    outputs.mkdir()
    (outputs / "x_restored.nii.gz").write_bytes(b"the user's own file")

    result = run_inference(tmp_path, inputs, ["--modality", "ct", "--output_format", "nifti"], outputs)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith("error: 6 of 7 inputs failed: ") and line.endswith("and 3 more (see the log)")
    for message in (
        "cut/im001.dcm: truncated DICOM: 660 bytes of pixel data where 20x24 pixels need 960",
        "fmri.nii.gz: 3 volumes or channels of shape (16, 16, 4) (a 4-D or multi-channel image)",
        "nan.nii.gz: 100 of 1440 values are not finite (NaN or Inf)",
        "norescale/im000.dcm: CT DICOM without RescaleSlope and RescaleIntercept",
        "plan/rtplan.dcm: a DICOM RT Plan Storage object, not an image (no pixel data)",
        "out/x_restored.nii.gz: exists and was not written by this bundle, so it is left alone",
    ):
        assert message in result.stdout
    assert written(outputs) == ["good_restored.nii.gz", "x_restored.nii.gz"]
    assert (outputs / "x_restored.nii.gz").read_bytes() == b"the user's own file"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown --modality", "error: modality 'xray' is unknown; use one of mri, ct, pet"),
        ("empty folder", "in: holds no NIfTI file (.nii, .nii.gz) and no DICOM series to restore"),
        ("missing folder", "nowhere: the input folder (dataset_dir) does not exist"),
    ],
)
def test_unusable_options_and_folders_are_one_line(tmp_path, case, message):
    dataset_dir, options, output_dir = CASES[case](tmp_path)
    result = run_inference(tmp_path, dataset_dir, options, output_dir)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith("error: ") and message in line
    assert not output_dir.exists()
