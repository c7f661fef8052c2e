"""The training data check: every problem of every file in one error, before the first iteration."""

import numpy as np
import pydicom
import pytest
from _workflow_data import write_dicom_series, write_nifti
from scripts.data import DataError
from scripts.errors import UserInputError
from scripts.workflows import check_training_data

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def pair(folder, name, hq, lq=None, **item):
    """An item of an HQ (and LQ) NIfTI written from arrays."""
    write_nifti(folder / f"{name}_hq.nii.gz", hq, AFFINE)
    out = {"label": str(folder / f"{name}_hq.nii.gz"), "task": "mri", **item}
    if lq is not None:
        write_nifti(folder / f"{name}_lq.nii.gz", lq, AFFINE)
        out["image"] = str(folder / f"{name}_lq.nii.gz")
    return out


def test_every_problem_is_reported_at_once(tmp_path):
    rng = np.random.default_rng(0)
    good = pair(tmp_path, "good", rng.random((32, 32, 1)), rng.random((32, 32, 1)))
    volume = pair(tmp_path, "volume", rng.random((32, 32, 4)), slice=2, slice_axis=2)
    nan = rng.random((32, 32, 1))
    nan[3, 4, 0] = np.nan
    bad_items = [
        pair(tmp_path, "nan", nan, rng.random((32, 32, 1))),
        pair(tmp_path, "four_d", rng.random((32, 32, 2, 2))),
        pair(tmp_path, "small", rng.random((8, 32, 1)), degrade="kspace"),
        pair(tmp_path, "mismatch", rng.random((32, 32, 1)), rng.random((32, 48, 1))),
        {**volume, "slice": 9},
        {"label": str(tmp_path / "missing.nii.gz"), "task": "mri"},
        {"label": good["label"], "task": "xray"},
    ]
    write_dicom_series(tmp_path / "ct", np.zeros((32, 32, 1), np.int16))
    dicom = next((tmp_path / "ct").iterdir())
    ds = pydicom.dcmread(dicom)
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(dicom)
    bad_items.append({"label": str(dicom), "task": "ct", "degrade": "ct"})

    assert check_training_data([good, volume, good]) == 3  # files, each checked once
    with pytest.raises(DataError) as raised:
        check_training_data([good, *bad_items, volume, *bad_items])
    assert isinstance(raised.value, UserInputError)  # one line per problem, no traceback, from the CLI
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("training data: 8 problem(s)")
    problems = lines[1:]
    assert len(problems) == 8  # each once, though the bad items came twice
    expected = {
        "nan_hq": "1 non-finite values",
        "four_d": "4-D image",
        "small": "smaller than 16 px",
        "mismatch": "LQ/HQ shapes differ",
        "volume_hq": "slice 9 along axis 2",
        "missing": "file not found",
        "xray": "task 'xray' is not one of",
        dicom.name: "CT DICOM without RescaleSlope and RescaleIntercept",
    }
    for where, what in expected.items():
        assert any(what in line and (where in line or where == "xray") for line in problems), (where, problems)
    assert not any("good" in line for line in problems if "xray" not in line)


def test_items_without_a_task_take_the_modality(tmp_path):
    volume = {"label": pair(tmp_path, "v", np.ones((32, 32, 5)))["label"]}  # MONAI Label: a volume, no task
    with pytest.raises(DataError, match="set --modality"):
        check_training_data([volume])
    assert check_training_data([volume], default_task="ct") == 1


def test_what_the_training_reader_refuses_is_reported_before_the_first_iteration(tmp_path):
    from _hostile_inputs import claim_nifti, complex_nifti, jpeg_ls_slice, rgb_nifti, set_tags
    from scripts.data import LoadSlicePaird

    write_dicom_series(tmp_path / "ct", np.full((32, 32, 1), 1000, np.int16))
    (slope0,) = set_tags(list((tmp_path / "ct").iterdir()), RescaleSlope=0)
    files = {
        "damaged.dcm": jpeg_ls_slice(tmp_path / "damaged.dcm", damaged=True),
        "complex.nii.gz": complex_nifti(tmp_path / "complex.nii.gz", (32, 32, 1)),
        "rgb.nii.gz": rgb_nifti(tmp_path / "rgb.nii.gz", (32, 32, 1)),
        "huge.nii.gz": claim_nifti(tmp_path / "huge.nii.gz", (512, 512, 64)),
        slope0.name: slope0,
    }
    items = [{"label": str(p), "task": "ct", "degrade": "ct"} for p in files.values()]
    items[0] = {"label": str(files["damaged.dcm"]), "task": "mri", "degrade": "kspace"}  # an MR slice
    with pytest.raises(DataError) as raised:
        check_training_data(items, max_voxels=10**6)
    problems = str(raised.value).splitlines()[1:]
    expected = {
        "damaged.dcm": "cannot read DICOM slice",
        "complex.nii.gz": "complex values",
        "rgb.nii.gz": "colour values",
        "huge.nii.gz": "the header claims an image of 512x512x64 float32",
        slope0.name: "RescaleSlope is 0",
    }
    assert len(problems) == len(expected)
    for name, what in expected.items():
        assert any(name in line and what in line for line in problems), (name, problems)
    # a real JPEG-LS slice: the check says what the training reader does, whichever decoders are installed
    shipped = {"label": str(jpeg_ls_slice(tmp_path / "jls.dcm")), "task": "mri", "degrade": "kspace"}
    try:
        LoadSlicePaird()(shipped)
        decodable = True
    except DataError as e:
        decodable, reason = False, str(e)
    if decodable:
        assert check_training_data([shipped]) == 1
    else:
        with pytest.raises(DataError, match="jls.dcm: cannot read DICOM slice") as raised:
            check_training_data([shipped])
        assert reason in str(raised.value)
