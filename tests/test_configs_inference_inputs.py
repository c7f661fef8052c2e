"""configs/inference.json through the CLI on the inputs a user may give: several series in a folder, outputs inside
the input folder, a killed run's leftovers, and bad inputs, each reported in one line without a traceback."""

import resource
import subprocess

import nibabel as nib
import numpy as np
import pytest
from _hostile_inputs import claim_nifti, complex_nifti, rgb_nifti, set_tags
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
from _workflow_data import BUNDLE, ONE_THREAD_ENV, bundle_command, identity_weights, tiny_network_config, write_nifti


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


def run_in_memory_limit(root, dataset_dir, options, output_dir, gib: int = 4):
    """:func:`run_inference` in a process whose address space is limited to ``gib`` GiB: an input that makes the
    bundle allocate what its header claims fails here instead of exhausting the machine."""
    weights = root / "identity.pt"
    identity_weights(weights)
    args = ["--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir), "--ckpt_path", str(weights)]
    args += ["--network_def", tiny_network_config(root / "tiny.json"), *options]

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (gib * 2**30, gib * 2**30))

    command = bundle_command("--config_file", "configs/inference.json", *args)
    return subprocess.run(
        command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, preexec_fn=limit, env=ONE_THREAD_ENV
    )


def test_a_tiny_file_claiming_a_huge_image_is_refused_before_any_memory_is_taken(tmp_path):
    claim_nifti(tmp_path / "in" / "huge.nii.gz", (8192, 8192, 40))  # 67 bytes claiming 10 GiB
    result = run_in_memory_limit(tmp_path, tmp_path / "in", ["--modality", "ct"], tmp_path / "out")
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "huge.nii.gz: the header claims an image of 8192x8192x40 float32" in line
    assert "more than max_input_voxels (2147483648)" in line and "MemoryError" not in result.stderr
    assert written(tmp_path / "out") == []


def test_complex_colour_and_badly_rescaled_inputs_are_refused_one_line_each(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    complex_nifti(inputs / "complex.nii.gz")
    rgb_nifti(inputs / "rgb.nii.gz")
    set_tags(write_series(inputs / "slope0", ct_values(), "CT"), RescaleSlope=0)
    set_tags(write_series(inputs / "nan", ct_values(), "CT"), RescaleIntercept="NaN")
    nifti_with(inputs / "good.nii.gz")
    result = run_inference(tmp_path, inputs, ["--modality", "ct", "--output_format", "nifti"], outputs)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith("error: 4 of 5 inputs failed: ")
    for message in (
        "complex.nii.gz: complex values (complex64); reading them would drop the imaginary part",
        "rgb.nii.gz: R/G/B colour values (not one scalar per voxel)",
        "slope0/im000.dcm: DICOM RescaleSlope is 0, which makes every pixel the intercept",
        "nan/im000.dcm: DICOM RescaleIntercept is",
    ):
        assert message in result.stdout, result.stdout[-3000:]
    assert written(outputs) == ["good_restored.nii.gz"]


def test_an_mri_stored_as_0_to_1_needs_its_scale_and_keeps_its_units(tmp_path):
    values = np.random.default_rng(0).uniform(0.0, 1.0, (24, 20, 3))
    write_nifti(tmp_path / "in" / "unit.nii.gz", values, AFFINE)
    before = (tmp_path / "in" / "unit.nii.gz").read_bytes()
    refused = run_inference(tmp_path, tmp_path / "in", ["--modality", "mri"], tmp_path / "out")
    assert refused.returncode == 1
    (line,) = error_lines(refused)
    assert "unit.nii.gz: MRI values reach only" in line and "give --mri_scale 30" in line
    assert written(tmp_path / "out") == []
    scaled = run_inference(tmp_path, tmp_path / "in", ["--modality", "mri", "--mri_scale", "3000"], tmp_path / "out")
    assert scaled.returncode == 0, scaled.stderr[-3000:]
    restored = nib.load(tmp_path / "out" / "unit_restored.nii.gz").get_fdata()
    assert np.allclose(restored, values, atol=1e-3)  # the identity network: the input back, in its own units
    assert (tmp_path / "in" / "unit.nii.gz").read_bytes() == before
