"""Tests of scripts.data.slices: splits, slice axes, in-plane orientation, NIfTI headers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from _data_factories import write_nifti
from scripts.data.slices import (
    DataError,
    affine_from_axcodes,
    assign_splits,
    central_slices,
    nearest_value,
    nifti_info,
    normalize_split,
    orient_slice,
    select_subjects,
    slice_axis_for_plane,
)


def test_normalize_split_aliases_and_error():
    assert [normalize_split(s) for s in ("training", "Validation", "test", "ALL")] == ["train", "val", "test", "all"]
    with pytest.raises(ValueError, match="unknown split"):
        normalize_split("dev")


def test_assign_splits_full_size_is_ixi_protocol_and_deterministic():
    ids = [f"IXI{i:03d}" for i in range(578)]
    a, b = assign_splits(ids, (405, 59, 114), seed=0), assign_splits(reversed(ids), (405, 59, 114), seed=0)
    assert a == b  # order of discovery does not matter
    assert [len(a[k]) for k in ("train", "val", "test")] == [405, 59, 114]
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    assert assign_splits(ids, (405, 59, 114), seed=1) != a


@pytest.mark.parametrize("n, sizes", [(10, (7, 1, 2)), (3, (1, 1, 1)), (2, (2, 0, 0)), (1, (1, 0, 0))])
def test_assign_splits_scales_proportionally(n, sizes):
    parts = assign_splits([f"s{i}" for i in range(n)], (405, 59, 114))
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == sizes


def test_select_subjects_explicit_fixed_and_unknown():
    found = ["a", "b", "c", "d"]
    assert select_subjects(found, "test", (2, 1, 1), subjects=["c", "a"]) == ["a", "c"]
    assert select_subjects(found, "all", (2, 1, 1)) == found
    fixed = {"train": ["a", "b", "x"], "val": ["c"], "test": ["d"]}
    assert select_subjects(found, "val", (2, 1, 1), fixed=fixed) == ["c"]
    # an id outside the table: the seeded split is used instead
    assert len(select_subjects([*found, "e"], "train", (2, 1, 1), fixed=fixed)) == 3
    with pytest.raises(DataError, match=r"\['zz'\] requested but not found"):
        select_subjects(found, "train", (2, 1, 1), subjects=["a", "zz"], where="/data")


@pytest.mark.parametrize(
    "codes, plane, axis",
    [(("R", "A", "S"), "axial", 2), (("A", "S", "R"), "axial", 1), (("S", "L", "P"), "coronal", 2)],
)
def test_slice_axis_for_plane(codes, plane, axis):
    assert slice_axis_for_plane(affine_from_axcodes(codes), plane) == axis


def test_slice_axis_from_oblique_affine():
    # 20 degrees about x: the third axis is still mostly S/I
    t = np.deg2rad(20)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    assert slice_axis_for_plane(affine, "axial") == 2
    assert slice_axis_for_plane(affine, "coronal") == 1


def test_orient_slice_targets():
    a = np.arange(6).reshape(2, 3)
    assert np.array_equal(orient_slice(a, ("P", "L"), "S"), a)  # already the house orientation
    assert np.array_equal(orient_slice(a, ("A", "L"), "I"), a[::-1])
    assert np.array_equal(orient_slice(a, ("R", "A"), "S"), a.T[::-1, ::-1])  # RAS axial -> (P, L)
    assert np.array_equal(orient_slice(a, ("L", "S"), "A"), a.T[::-1])  # coronal -> (I, L)
    assert np.array_equal(orient_slice(a, ("P", "I"), "R"), a.T)  # sagittal -> (I, P)


def test_affine_from_axcodes_round_trips():
    for codes in (("P", "L", "S"), ("A", "S", "R"), ("I", "P", "L")):
        assert nib.aff2axcodes(affine_from_axcodes(codes, (2.0, 3.0, 4.0))) == codes


def test_central_slices():
    assert central_slices(130, 100) == range(15, 115)
    assert central_slices(50, 100) == range(50)
    assert central_slices(7, None) == range(7)


def test_nifti_info_accepts_2d_and_trailing_singleton_rejects_4d(tmp_path):
    assert nifti_info(write_nifti(tmp_path / "a.nii.gz", np.zeros((20, 24)))).shape == (20, 24, 1)
    assert nifti_info(write_nifti(tmp_path / "b.nii.gz", np.zeros((20, 24, 5, 1)))).shape == (20, 24, 5)
    bad = write_nifti(tmp_path / "c.nii.gz", np.zeros((20, 24, 5, 2)))
    with pytest.raises(DataError, match=r"c\.nii\.gz: 4-D image"):
        nifti_info(bad)
    garbage = tmp_path / "d.nii.gz"
    garbage.write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match=r"d\.nii\.gz: cannot read NIfTI header"):
        nifti_info(garbage)


def test_nearest_value_is_on_log_scale():
    assert nearest_value([4, 10, 20, 50, 100], 12) == 10
    assert nearest_value([4, 20], 9) == 20  # 20 / 9 = 2.22 is a smaller ratio than 9 / 4 = 2.25
