"""DICOM output: a derived series with the input's identity, geometry and units, read back by pydicom and ITK."""

import json

import itk
import numpy as np
import pydicom
import pytest
import torch
from _inference_cases import ct_values, write_series
from _workflow_data import BUNDLE, dead_pid, pet_attributes
from _workflow_data import write_dicom_series as make_series
from monai.data import MetaTensor
from monai.transforms import LoadImage
from scripts.atomic import temporary_name
from scripts.errors import UserInputError
from scripts.ownership import MARKER
from scripts.transforms import KSpaceZeroFill, suv_from_dicom, zero_fill_affine
from scripts.workflows.dicom_output import read_series_headers, rescale_for, series_output_status, write_dicom_series

VERSION = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]


def load(path):
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


def read_folder(folder):
    """The written series, sorted by position, as pydicom datasets (the hidden marker and record are not DICOM)."""
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted((pydicom.dcmread(p) for p in files), key=lambda ds: float(ds.ImagePositionPatient[2]))


def physical(ds):
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def pet_header(units="BQML"):
    return pet_attributes(units, injection_time="090000")


def itk_geometry(path):
    image = itk.imread(str(path))
    return (
        np.asarray(image.GetOrigin()),
        np.asarray(image.GetSpacing()),
        np.asarray(image.GetDirection()),
        itk.array_from_image(image),
    )


def test_ct_series_is_written_as_a_derived_series_in_hu(tmp_path):
    source, target = tmp_path / "ct", tmp_path / "out" / "ct_restored"
    stored = np.random.default_rng(0).integers(0, 3000, (20, 24, 3))
    extra = {"SeriesDescription": "chest", "SeriesNumber": 3, "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    make_series(source, stored, extra=extra)
    image = load(source)
    pred = MetaTensor(image.as_tensor() * 0.5 + 100.3, affine=image.affine, meta=dict(image.meta))  # HU
    write_dicom_series(pred, source, target, task="ct")

    written, inputs = read_folder(target), read_folder(source)
    assert len(written) == 3 and sorted(p.name for p in target.iterdir())[0] == MARKER
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    assert written[0].SeriesInstanceUID != inputs[0].SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in written} | {ds.SOPInstanceUID for ds in inputs}) == 6
    for out, src in zip(written, inputs, strict=True):
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID and out.SOPClassUID == src.SOPClassUID
        for keyword in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality", "InstanceNumber"):
            assert out[keyword].value == src[keyword].value, keyword
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            assert np.allclose(np.asarray(out[keyword].value, float), np.asarray(src[keyword].value, float)), keyword
        assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert out.SeriesDescription == f"chest restored by AMIR bundle {VERSION}" and out.SeriesNumber == 1003
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert out.RescaleType == "HU" and float(out.RescaleSlope) == 1.0
        np.testing.assert_allclose(physical(out), (physical(src) * 0.5 + 100.3), atol=0.5)  # 1 HU steps
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in target.iterdir())

    # ITK reads one series with the input's geometry and the restored HU
    origin, spacing, direction, values = itk_geometry(target)
    origin0, spacing0, direction0, values0 = itk_geometry(source)
    assert np.allclose(origin, origin0) and np.allclose(spacing, spacing0) and np.allclose(direction, direction0)
    np.testing.assert_allclose(values, values0 * 0.5 + 100.3, atol=0.5)
    assert len([p for p in tmp_path.joinpath("out").iterdir()]) == 1  # no temporary folder left


@pytest.mark.parametrize("units", ["BQML", "GML"])
def test_pet_series_keeps_its_units(tmp_path, units):
    source, target = tmp_path / "pet", tmp_path / "pet_restored"
    make_series(source, np.full((16, 16, 2), 10000), modality="PT", intercept=0, extra=pet_header(units))
    image = load(source)  # 1e4 in the input's units
    factor = suv_from_dicom(read_series_headers(source)[0]) if units == "BQML" else 1.0
    suv = MetaTensor(image.as_tensor() * factor * 1.5, affine=image.affine)  # the network's output, in SUV
    write_dicom_series(suv, source, target, task="pet")
    for ds in read_folder(target):
        assert ds.Units == units and ds.Modality == "PT"
        np.testing.assert_allclose(physical(ds), 15000.0, rtol=1e-4)  # back in the input's units
    assert np.allclose(itk_geometry(target)[3], 15000.0, rtol=1e-4)


def test_zero_filled_mri_gets_the_finer_grid(tmp_path):
    source, target = tmp_path / "mr", tmp_path / "mr_restored"
    make_series(source, np.random.default_rng(1).integers(0, 2000, (8, 10, 2)), modality="MR", intercept=0)
    fine = KSpaceZeroFill(2)(load(source))
    write_dicom_series(fine, source, target, task="mri")
    written, inputs = read_folder(target), read_folder(source)
    assert (written[0].Rows, written[0].Columns) == (16, 20)
    assert np.allclose(np.asarray(written[0].PixelSpacing, float), [0.4, 0.3])
    expected_origin = np.asarray(inputs[0].ImagePositionPatient, float) - [0.25 * 0.6, 0.25 * 0.8, 0]
    assert np.allclose(np.asarray(written[0].ImagePositionPatient, float), expected_origin)
    origin, spacing, _, values = itk_geometry(target)
    ras = zero_fill_affine(load(source).affine, (10, 8), (20, 16))
    assert np.allclose(origin, [-ras[0, 3], -ras[1, 3], ras[2, 3]]) and np.allclose(spacing, [0.3, 0.4, 2.5])
    np.testing.assert_allclose(values, fine[0].numpy().transpose(2, 1, 0), atol=0.5)


def test_outputs_are_replaced_only_when_asked_and_only_if_the_bundle_wrote_them(tmp_path):
    source, target = tmp_path / "ct", tmp_path / "ct_restored"
    make_series(source, np.zeros((16, 16, 2)))
    image = load(source)
    write_dicom_series(image, source, target, task="ct")
    first = {ds.SOPInstanceUID for ds in read_folder(target)}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dicom_series(image, source, target, task="ct")
    stale = tmp_path / f"{temporary_name('ct_restored', dead_pid())}abc"  # a write killed before its rename
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"created_by": "amir_bundle", "kind": "dicom-output"}))
    write_dicom_series(image, source, target, task="ct", overwrite=True)
    assert not stale.exists() and not ({ds.SOPInstanceUID for ds in read_folder(target)} & first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "ct_restored"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UserInputError, match="not written by the bundle"):
        write_dicom_series(image, source, mine, task="ct", overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"


def test_a_grid_that_does_not_hold_the_slices_is_an_error(tmp_path):
    make_series(tmp_path / "ct", np.zeros((16, 16, 2)))
    image = load(tmp_path / "ct")
    shifted = MetaTensor(
        image.as_tensor(), affine=image.affine @ torch.diag(torch.tensor([1.0, 1.0, 0.5, 1.0]).double())
    )
    with pytest.raises(UserInputError, match="is not a slice of the restored volume"):
        write_dicom_series(shifted, tmp_path / "ct", tmp_path / "out", task="ct")
    assert not (tmp_path / "out").exists()


def test_rescale_holds_the_values():
    values = np.array([-1024.0, 0.4, 3071.0])
    assert rescale_for(values, 1.0) == (1.0, -1024.0)
    slope, intercept = rescale_for(np.array([0.0, 7.3, 19.99]), None)
    assert intercept == 0.0 and 19.99 / 65536 < slope and np.rint(19.99 / slope) <= 65535
    assert rescale_for(np.array([-5.0, 1e6]), 1.0)[0] > 1.0  # too wide for 1-unit steps: coarser


def test_the_series_folder_records_what_made_it_and_a_malformed_series_number_is_no_error(tmp_path):
    source, target = tmp_path / "ct", tmp_path / "ct_restored"
    write_series(source, ct_values(), "CT", tags={"SeriesNumber": "1/../../x"})  # no integer, as a hostile file
    record = {"input_sha256": ["ab"], "weights_sha256": "cd", "settings": {"modality": "ct"}}
    assert series_output_status(target, record) == "missing"
    write_dicom_series(load(source), source, target, task="ct", record=record)
    assert read_folder(target)[0].SeriesNumber == 1000
    assert series_output_status(target, record) == "complete" and series_output_status(target) == "complete"
    assert series_output_status(target, {**record, "weights_sha256": "ef"}) == "stale"
    (target / ".amir-record.json").unlink()  # an output of an earlier version: no record, so not known current
    assert series_output_status(target, record) == "stale"
