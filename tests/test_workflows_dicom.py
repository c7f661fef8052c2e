"""DICOM inputs: one input per series of a folder, the checks of every file, and the series reader."""

import logging

import numpy as np
import pydicom
import pytest
import torch
from _inference_cases import ct_values, write_non_image, write_series
from monai.data import ITKReader
from monai.transforms import LoadImage
from scripts.errors import UserInputError
from scripts.workflows import DicomSeriesReader, LoadImageInput, scan_dicom_folder
from scripts.workflows.dicom import check_series


def test_a_folder_of_two_series_gives_two_inputs_named_by_series_number(tmp_path):
    folder = tmp_path / "study"
    ct = write_series(folder, ct_values(), "CT", prefix="a", series_number=2, order=[2, 0, 1])  # names not in order
    mr = write_series(folder, ct_values(seed=1), "MR", prefix="b", series_number=7, intercept=0)
    inputs = scan_dicom_folder(folder)
    assert [(s.label, s.modality, len(s.files)) for s in inputs] == [("series2", "CT", 3), ("series7", "MR", 3)]
    assert list(inputs[0].files) == ct  # slice order (along the normal), not name order
    assert list(inputs[1].files) == mr
    assert inputs[0].name == f"{folder} (series series2)"


def test_series_labels_fall_back_to_a_short_uid(tmp_path):
    write_series(tmp_path, ct_values(), "CT", prefix="a")  # no SeriesNumber
    write_series(tmp_path, ct_values(), "CT", prefix="b")
    labels = [s.label for s in scan_dicom_folder(tmp_path)]
    assert len(set(labels)) == 2 and all(len(label) == 8 and label.isdigit() for label in labels)
    assert [s.label for s in scan_dicom_folder(tmp_path, sorted(tmp_path.glob("a*")))] == [""]  # one series


HOSTILE = ["1/../../x", "..", "/etc/x", "1\\..\\x", "7\x00x", "\x1b[2J", "9" * 300, "  "]


@pytest.mark.parametrize("value", HOSTILE)
def test_series_labels_from_hostile_tags_are_safe_names(tmp_path, caplog, value):
    first = write_series(tmp_path, ct_values(), "CT", prefix="a", tags={"SeriesNumber": value})
    write_series(tmp_path, ct_values(), "CT", prefix="b", tags={"SeriesInstanceUID": f"1.2/../../{value}"})
    write_series(tmp_path, ct_values(), "CT", prefix="c", tags={"SeriesInstanceUID": value, "SeriesNumber": value})
    with caplog.at_level(logging.WARNING):
        labels = [s.label for s in scan_dicom_folder(tmp_path)]
    assert len(set(labels)) == 3, labels
    assert all(0 < len(label) <= 64 and label.replace("_", "").replace("-", "").isalnum() for label in labels), labels
    if value.strip():  # a blank SeriesNumber is no number: the UID names the series, as before
        assert f"{first[0]}: SeriesNumber" in caplog.text


def test_objects_that_are_not_images(tmp_path, caplog):
    write_series(tmp_path / "study", ct_values(), "CT")
    write_non_image(tmp_path / "study" / "report.dcm", "SR")
    with caplog.at_level(logging.WARNING):
        inputs = scan_dicom_folder(tmp_path / "study")
    assert len(inputs) == 1 and len(inputs[0].files) == 3 and inputs[0].modality == "CT"
    assert "report.dcm: a DICOM Basic Text SR Storage object, not an image: left out" in caplog.text

    plan = write_non_image(tmp_path / "plan" / "rtplan.dcm", "RTPLAN")
    (only,) = scan_dicom_folder(tmp_path / "plan")  # a folder of such objects only is an input, which fails
    with pytest.raises(UserInputError, match=r"rtplan.dcm: a DICOM RT Plan Storage object, not an image"):
        check_series(only.files)
    assert only.files == (plan,)


def test_every_file_of_a_series_is_checked(tmp_path):
    files = write_series(tmp_path / "t", ct_values(), "CT")
    files[1].write_bytes(files[1].read_bytes()[:-300])
    with pytest.raises(UserInputError, match=r"im001.dcm: truncated DICOM: 660 bytes of pixel data where 20x24"):
        check_series(files)

    other = write_series(tmp_path / "s", ct_values(), "CT", prefix="z")
    with pytest.raises(UserInputError, match=r"z000.dcm and .*im000.dcm: two series given as one input"):
        check_series(files[:1] + other[:1])

    sizes = write_series(tmp_path / "r", ct_values(), "CT")
    ds = pydicom.dcmread(sizes[2])
    ds.Rows, ds.Columns, ds.PixelData = 10, 12, np.zeros((10, 12), np.int16).tobytes()
    ds.save_as(sizes[2])
    with pytest.raises(UserInputError, match=r"im002.dcm: slice of 10x12 pixels in a series of 20x24"):
        check_series(sizes)

    twice = write_series(tmp_path / "d", ct_values((20, 24, 2)), "CT")
    twice[1].write_bytes(twice[0].read_bytes())  # the same slice twice
    with pytest.raises(UserInputError, match=r"two slices at one position"):
        check_series(twice)

    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # a preamble and nothing else
    with pytest.raises(UserInputError, match=r"junk.dcm: "):
        check_series([tmp_path / "junk.dcm"])


def test_reader_gives_itks_volume_and_affine_and_refuses_two_series(tmp_path):
    folder = tmp_path / "ct"
    files = write_series(folder, ct_values(), "CT", order=[1, 2, 0])
    expected = LoadImage(reader=ITKReader(), image_only=True)(str(folder))  # MONAI's reading of the folder
    series = scan_dicom_folder(folder)[0]
    for given in (series.source, str(folder)):
        image = LoadImage(reader=DicomSeriesReader(), image_only=True)(given)
        assert torch.equal(image.as_tensor(), expected.as_tensor())
        assert torch.allclose(image.affine, expected.affine)
    assert DicomSeriesReader().verify_suffix([str(f) for f in files])
    assert not DicomSeriesReader().verify_suffix(str(tmp_path / "x.nii.gz"))

    write_series(folder, ct_values(), "MR", prefix="b", intercept=0)
    with pytest.raises(UserInputError, match=r"ct: holds 2 DICOM series .*restores each series on its own"):
        LoadImageInput(image_only=True)(str(folder))


def test_loader_does_not_fall_back_to_other_readers(tmp_path):
    # MONAI's LoadImage given a reader tries its other readers when that one refuses a file (ITK would read a
    # list of files as channels): the bundle's loader reports the refusal
    files = write_series(tmp_path / "t", ct_values(), "CT")
    files[2].write_bytes(files[2].read_bytes()[:-10])
    with pytest.raises(UserInputError, match=r"im002.dcm: truncated DICOM"):
        LoadImageInput(image_only=True)([str(f) for f in files])
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(UserInputError, match=r"broken.nii.gz: cannot be read as an image"):
        LoadImageInput(image_only=True)(str(tmp_path / "broken.nii.gz"))
    image = LoadImageInput(image_only=True, ensure_channel_first=True)([str(f) for f in files[:2]])
    assert image.shape == (1, 24, 20, 2) and float(image.min()) >= -1024
    assert np.allclose(image[0, ..., 0].numpy(), ct_values()[..., 0].T - 1024.0)
