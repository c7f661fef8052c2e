"""Tests of scripts.data.pet: dose names, layouts, DRF choice, air-slice dropping, bad input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _data_factories import write_nifti, write_series
from scripts.data.pet import build_pet_datalist, find_pet_entries, parse_drf
from scripts.data.slices import DataError


@pytest.mark.parametrize(
    "name, drf",
    [
        ("Full_dose", 1),
        ("full", 1),
        ("NORMAL", 1),
        ("normal_dose.nii.gz", 1),
        ("1-4 dose", 4),
        ("1-10 dose", 10),
        ("1_100_dose.nii", 100),
        ("D12", 12),
        ("DRF_12", 12),
        ("drf12.nii.gz", 12),
        ("LD20", 20),
        ("sub01", None),
        ("CT", None),
        ("dose", None),
    ],
)
def test_parse_drf(name, drf):
    assert parse_drf(name) == drf


def pet_volume(shape=(20, 6, 24), air=(0, 5)):
    """(R, A, S) volume: coronal slices along axis 1; the slices in ``air`` are empty."""
    vol = np.zeros(shape, dtype=np.float32)
    vol[2:-2, :, 2:-2] = 5.0
    for k in air:
        vol[:, k, :] = 0.0
    vol[:, 1, :] *= 0.001  # below 1 % of the maximum: air too
    return vol


def test_subject_first_nifti_pairs_drop_air_and_use_coronal_slices(tmp_path):
    for subject, (full, low) in {
        "s1": ("Full_dose", "D12"),
        "s2": ("normal", "drf12"),
        "s3": ("full", "1-12 dose"),
    }.items():
        write_nifti(tmp_path / subject / f"{full}.nii.gz", pet_volume())
        write_nifti(tmp_path / subject / f"{low}.nii.gz", pet_volume() * 0.9)
    items = build_pet_datalist(tmp_path, split="all")
    assert {i["subject"] for i in items} == {"s1", "s2", "s3"}
    for subject in ("s1", "s2", "s3"):
        mine = [i for i in items if i["subject"] == subject]
        assert [i["slice"] for i in mine] == [2, 3, 4]  # slices 0, 1 and 5 are air
        assert all(i["slice_axis"] == 1 and i["drf"] == 12 and i["task"] == "pet" for i in mine)
        assert all("image" in i and "degrade" not in i and i["lq_acquired"] is True for i in mine)
    # axial slices of this volume would be 20x6 px
    with pytest.raises(DataError, match=r"Full_dose\.nii\.gz: axial slices of 20x6 px are smaller than 16 px"):
        build_pet_datalist(tmp_path, split="all", plane="axial", subjects=["s1"])


def test_dose_first_layout_nearest_drf_warns_and_strict_errors(tmp_path):
    for subject in ("a", "b"):
        write_nifti(tmp_path / "Full_dose" / f"{subject}.nii.gz", pet_volume(air=()))
        write_nifti(tmp_path / "1-10 dose" / f"{subject}.nii.gz", pet_volume(air=()))
        write_nifti(tmp_path / "1-20 dose" / f"{subject}.nii.gz", pet_volume(air=()))
    entries = find_pet_entries(tmp_path)
    assert sorted(entries) == ["a", "b"] and sorted(entries["a"]) == [1, 10, 20]
    with pytest.warns(UserWarning, match="no DRF 12 image, using the nearest, DRF 10"):
        items = build_pet_datalist(tmp_path, split="all")
    assert {i["drf"] for i in items} == {10} and all("1-10 dose" in i["image"] for i in items)
    assert {i["drf"] for i in build_pet_datalist(tmp_path, split="all", drf=20)} == {20}
    with pytest.raises(DataError, match=r"has no DRF 12 image \(has DRF \[10, 20\]\)"):
        build_pet_datalist(tmp_path, split="all", strict_drf=True)


def test_full_dose_only_is_simulated(tmp_path):
    write_nifti(tmp_path / "p1" / "Full_dose.nii.gz", pet_volume())
    items = build_pet_datalist(tmp_path, split="all", drf=12)
    assert items and all(i["degrade"] == "pet" and "image" not in i and i["drf"] == 12 for i in items)
    assert not any("lq_acquired" in i for i in items)
    with pytest.raises(DataError, match="no reduced-dose image and simulate=False"):
        build_pet_datalist(tmp_path, split="all", simulate=False)
    write_nifti(tmp_path / "p1" / "D12.nii.gz", pet_volume())
    forced = build_pet_datalist(tmp_path, split="all", simulate=True)
    assert all(i["degrade"] == "pet" and "image" not in i for i in forced)


def test_dicom_series_pairs_and_air_slices(tmp_path):
    values = [0, 200, 400, 1]  # slice 0 and 3 are air (max below 1 % of 400)
    write_series(tmp_path / "sub1" / "Full_dose", values, 0, 3, "fd", size=20, modality="PT", seed=1)
    write_series(tmp_path / "sub1" / "1-12 dose", values, 7, 9, "ld", size=20, modality="PT", seed=2)
    items = build_pet_datalist(tmp_path, split="all")
    assert len(items) == 2
    for item in items:
        assert "slice" not in item and item["drf"] == 12
        hq, lq = pydicom.dcmread(item["label"]), pydicom.dcmread(item["image"])
        assert int(lq.pixel_array[0, 0]) == int(hq.pixel_array[0, 0]) + 7
        assert "Full_dose" in item["label"] and "1-12 dose" in item["image"]


def test_splits_by_subject(tmp_path):
    for i in range(10):
        write_nifti(tmp_path / f"sub{i:02d}" / "Full_dose.nii.gz", pet_volume(air=()))
    parts = {s: {i["subject"] for i in build_pet_datalist(tmp_path, split=s)} for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert parts["train"].isdisjoint(parts["test"]) and parts["val"].isdisjoint(parts["test"])


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="no PET dose file or folder"):
        build_pet_datalist(tmp_path)
    write_nifti(tmp_path / "s" / "Full_dose.nii.gz", pet_volume())
    write_nifti(tmp_path / "s" / "D12.nii.gz", pet_volume()[:, :, :20])
    with pytest.raises(DataError, match=r"D12\.nii\.gz \(20, 6, 20\) and .*Full_dose\.nii\.gz \(20, 6, 24\): LQ/HQ"):
        build_pet_datalist(tmp_path, split="all")
    write_nifti(tmp_path / "s" / "D12.nii.gz", pet_volume())
    nan = pet_volume()
    nan[3, 3, 3] = np.nan
    write_nifti(tmp_path / "s" / "Full_dose.nii.gz", nan)
    with pytest.raises(DataError, match=r"Full_dose\.nii\.gz: non-finite values"):
        build_pet_datalist(tmp_path, split="all")
    write_nifti(tmp_path / "s" / "Full_dose.nii.gz", np.zeros((20, 6, 24)))
    with pytest.raises(DataError, match="no positive activity"):
        build_pet_datalist(tmp_path, split="all")
    write_nifti(tmp_path / "s" / "normal.nii.gz", pet_volume())
    with pytest.raises(DataError, match="two DRF 1 images of s"):
        build_pet_datalist(tmp_path, split="all")


def test_missing_full_dose_and_4d(tmp_path):
    write_nifti(tmp_path / "s" / "D12.nii.gz", pet_volume())
    with pytest.raises(DataError, match="subject s has no full-dose image"):
        build_pet_datalist(tmp_path, split="all")
    write_nifti(tmp_path / "s" / "Full_dose.nii.gz", np.ones((20, 6, 24, 3)))
    with pytest.raises(DataError, match=r"Full_dose\.nii\.gz: 4-D image"):
        build_pet_datalist(tmp_path, split="all")
