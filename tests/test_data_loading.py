"""Tests of scripts.data.loading: slice reading, orientation, LQ simulation, bad input."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_factories import coordinate_volume, make_mayo_tree, mri_slice_item, write_dicom_slice, write_nifti
from scripts.data.loading import LoadSlice, LoadSlicePaird, item_seed, read_dicom_slice, read_nifti_slice
from scripts.data.mayo import build_mayo_datalist
from scripts.data.slices import DataError
from scripts.transforms import KSpaceCrop


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("A", "S", "R"), ("L", "I", "P"), ("P", "R", "I")])
def test_axial_slice_matches_nibabel_canonical(tmp_path, codes):
    vol = coordinate_volume((20, 22, 18))
    path = write_nifti(tmp_path / "v.nii.gz", vol, codes)
    canon = nib.as_closest_canonical(nib.load(path))  # RAS
    canon_data = np.asarray(canon.dataobj)
    axis = list(codes).index("S") if "S" in codes else list(codes).index("I")
    for index in (0, 5):
        got = read_nifti_slice(path, index, axis)
        # the same voxels, found independently in the RAS volume; house orientation is rows P, columns L
        k = index if codes[axis] == "S" else vol.shape[axis] - 1 - index
        expected = np.flip(canon_data[:, :, k].T, (0, 1))
        np.testing.assert_array_equal(got, expected)


def test_2d_nifti_and_errors(tmp_path):
    img = np.arange(20 * 24, dtype=np.float32).reshape(20, 24)
    path = write_nifti(tmp_path / "p.nii.gz", img[:, :, None], ("P", "L", "S"))
    np.testing.assert_array_equal(read_nifti_slice(path), img)
    flat = write_nifti(tmp_path / "q.nii.gz", img, ("P", "L", "S"))  # stored as 2-D
    np.testing.assert_array_equal(read_nifti_slice(flat), img)
    vol = write_nifti(tmp_path / "v.nii.gz", np.zeros((20, 20, 4)))
    with pytest.raises(DataError, match=r"v\.nii\.gz: 3-D volume .* names no slice"):
        read_nifti_slice(vol)
    with pytest.raises(DataError, match=r"v\.nii\.gz: slice 4 out of range"):
        read_nifti_slice(vol, 4, 2)


def test_dicom_orientation_from_image_orientation(tmp_path):
    pixels = np.arange(20 * 24, dtype=np.int16).reshape(20, 24)
    standard = write_dicom_slice(tmp_path / "a.dcm", pixels, 1, 0.0, intercept=0.0)
    mirrored = write_dicom_slice(
        tmp_path / "b.dcm", pixels[:, ::-1], 1, 0.0, intercept=0.0, orientation=(-1, 0, 0, 0, 1, 0)
    )
    np.testing.assert_array_equal(read_dicom_slice(standard, "ct"), pixels)  # rows P, columns L already
    np.testing.assert_array_equal(read_dicom_slice(mirrored, "ct"), pixels)


def test_ct_hu_and_padding(tmp_path):
    pixels = np.full((20, 20), 1100, dtype=np.int16)
    pixels[0, 0] = -2000  # outside the field of view
    path = write_dicom_slice(tmp_path / "c.dcm", pixels, 1, 0.0)
    hu = read_dicom_slice(path, "ct")
    assert hu[1, 1] == 76.0 and hu[0, 0] == -1024.0


def test_pet_dicom_in_suv(tmp_path):
    from pydicom.dataset import Dataset

    info = Dataset()
    info.RadionuclideTotalDose = 3.0e8
    info.RadionuclideHalfLife = 6586.2
    info.RadiopharmaceuticalStartTime = "100000"
    extra = {
        "Units": "BQML",
        "PatientWeight": 75.0,
        "DecayCorrection": "ADMIN",
        "RadiopharmaceuticalInformationSequence": [info],
    }
    pixels = np.full((20, 20), 4000, dtype=np.int16)
    path = write_dicom_slice(tmp_path / "p.dcm", pixels, 1, 0.0, modality="PT", slope=2.0, intercept=0.0, extra=extra)
    suv = read_dicom_slice(path, "pet")
    assert suv[0, 0] == pytest.approx(8000 * 75000 / 3.0e8)


def test_load_slice_array_version(tmp_path):
    vol = coordinate_volume((20, 22, 18))
    path = write_nifti(tmp_path / "v.nii.gz", vol, ("P", "L", "S"))
    img = LoadSlice("mri")(path, 4, 2)
    assert img.shape == (1, 20, 22) and img.dtype == torch.float32 and img.meta["filename_or_obj"] == str(path)
    np.testing.assert_array_equal(img[0].numpy(), vol[:, :, 4])
    with pytest.raises(ValueError, match="task must be one of"):
        LoadSlice("us")


def test_mri_kspace_pair_and_item_untouched(tmp_path):
    item = mri_slice_item(tmp_path)
    before = copy.deepcopy(item)
    out = LoadSlicePaird(keep_keys=("subject",))(item)
    assert item == before
    assert set(out) == {"image", "label", "task", "id", "subject"}
    assert out["image"].shape == (1, 32, 32) and out["image"].dtype == torch.float32
    assert out["id"] == "IXI002/IXI002-Guys-0828-T2.nii.gz#3"
    torch.testing.assert_close(torch.as_tensor(out["image"]), torch.as_tensor(KSpaceCrop(0.25)(out["label"])))
    assert out["label"].meta["filename_or_obj"] == item["label"]


def test_simulations_are_seeded_by_the_item(tmp_path):
    path = write_nifti(tmp_path / "ct.nii.gz", np.full((32, 32, 2), 40.0), ("P", "L", "S"))
    item = {"label": str(path), "slice": 0, "slice_axis": 2, "task": "ct", "degrade": "ct", "subject": "x"}
    load = LoadSlicePaird()
    a, b = load(item)["image"], load(item)["image"]
    assert torch.equal(a, b) and not torch.equal(a, load(item)["label"])
    other = load({**item, "slice": 1})["image"]
    assert not torch.equal(a, other)  # another slice, another noise realisation
    assert not torch.equal(a, LoadSlicePaird(seed=5)(item)["image"])
    assert item_seed(item) == item_seed({**item, "label": "/elsewhere/ct.nii.gz"})  # location-independent
    pet = {**item, "task": "pet", "degrade": "pet", "drf": 4}
    lq = LoadSlicePaird()(pet)["image"]
    assert lq.shape == (1, 32, 32) and torch.isfinite(lq).all() and not torch.equal(lq, load(pet)["label"])


def test_paired_dicom_items_load_in_hu(tmp_path):
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=2)
    for item in build_mayo_datalist(tmp_path, "all"):
        out = LoadSlicePaird()(item)
        # full slice z stores 1000 + 10 z, quarter + 1; intercept -1024
        diff = out["image"] - out["label"]
        assert torch.all(diff == 1.0) and out["label"][0, 0, 0] in (-24.0, -14.0)


@pytest.mark.parametrize(
    "case, match",
    [
        ("shape", "LQ/HQ slice shapes differ"),
        ("nan", "non-finite values"),
        ("small", "smaller than 16 px"),
        ("nodegrade", "degrade None is not one of"),
        ("task", "task 'xray' is not one of"),
        ("missing", "file not found"),
        ("truncated", "cannot read image data"),
    ],
)
def test_bad_items(tmp_path, case, match):
    hq = write_nifti(tmp_path / "hq.nii.gz", np.ones((32, 32, 1)), ("P", "L", "S"))
    item = {"image": str(hq), "label": str(hq), "task": "mri"}
    if case == "shape":
        item["image"] = str(write_nifti(tmp_path / "lq.nii.gz", np.ones((32, 24, 1)), ("P", "L", "S")))
    elif case == "nan":
        bad = np.ones((32, 32, 1))
        bad[3, 3] = np.inf
        item["image"] = str(write_nifti(tmp_path / "lq.nii.gz", bad, ("P", "L", "S")))
    elif case == "small":
        item["label"] = item["image"] = str(write_nifti(tmp_path / "s.nii.gz", np.ones((8, 32, 1)), ("P", "L", "S")))
    elif case == "nodegrade":
        del item["image"]
    elif case == "task":
        item["task"] = "xray"
    elif case == "missing":
        item["image"] = str(tmp_path / "gone.nii.gz")
    elif case == "truncated":
        big = write_nifti(tmp_path / "big.nii.gz", np.random.default_rng(0).random((64, 64, 8)), ("P", "L", "S"))
        data = big.read_bytes()
        big.write_bytes(data[: len(data) // 2])
        item = {"label": str(big), "slice": 7, "slice_axis": 2, "task": "mri", "degrade": "kspace"}
    with pytest.raises(DataError, match=match):
        LoadSlicePaird()(item)
