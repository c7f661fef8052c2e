"""Tests of scripts.data.ixi on small IXI-named volumes written by nibabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data_factories import write_nifti
from scripts.data.ixi import build_ixi_datalist, find_ixi_volumes
from scripts.data.slices import DataError

SITES = ("Guys", "HH", "IOP")


def make_ixi(root, n=6, shape=(20, 24, 9), codes=("R", "A", "S")):
    for i in range(n):
        write_nifti(root / f"IXI{i + 2:03d}-{SITES[i % 3]}-{i:04d}-T2.nii.gz", np.ones(shape), codes)
    return root


def test_finds_t2_only_and_rejects_duplicates(tmp_path):
    make_ixi(tmp_path, n=3)
    write_nifti(tmp_path / "IXI002-Guys-0000-PD.nii.gz", np.ones((20, 24, 9)))
    (tmp_path / "README.txt").write_text("not an image")
    assert sorted(find_ixi_volumes(tmp_path)) == ["IXI002", "IXI003", "IXI004"]
    write_nifti(tmp_path / "sub" / "IXI002-HH-0099-T2.nii.gz", np.ones((20, 24, 9)))
    with pytest.raises(DataError, match="two IXI T2 volumes for subject IXI002"):
        find_ixi_volumes(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no IXI T2 volume"):
        build_ixi_datalist(tmp_path)
    with pytest.raises(DataError, match="IXI folder not found"):
        build_ixi_datalist(tmp_path / "absent")


def test_items_schema_central_slices_and_splits(tmp_path):
    make_ixi(tmp_path, n=6, shape=(20, 24, 9))
    train = build_ixi_datalist(tmp_path, "train", num_slices=5)
    val, test = build_ixi_datalist(tmp_path, "val", num_slices=5), build_ixi_datalist(tmp_path, "test", num_slices=5)
    subjects = [{i["subject"] for i in part} for part in (train, val, test)]
    assert [len(s) for s in subjects] == [4, 1, 1]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    first = train[0]
    assert set(first) == {"label", "slice", "slice_axis", "task", "degrade", "subject"}
    assert first["task"] == "mri" and first["degrade"] == "kspace" and first["slice_axis"] == 2
    name = Path(first["label"]).name
    assert name.startswith(first["subject"] + "-") and name.endswith("-T2.nii.gz")
    assert [i["slice"] for i in train if i["subject"] == first["subject"]] == [2, 3, 4, 5, 6]
    assert build_ixi_datalist(tmp_path, "train", num_slices=5, seed=0) == train  # deterministic
    explicit = build_ixi_datalist(tmp_path, subjects=["IXI003"], num_slices=None)
    assert {i["subject"] for i in explicit} == {"IXI003"} and len(explicit) == 9


def test_slice_axis_from_header_of_a_sagittally_stored_volume(tmp_path):
    # stored (A, S, R): the axial (S/I) axis is the second one
    make_ixi(tmp_path, n=1, shape=(30, 40, 20), codes=("A", "S", "R"))
    items = build_ixi_datalist(tmp_path, "all", num_slices=10)
    assert {i["slice_axis"] for i in items} == {1}
    assert [i["slice"] for i in items] == list(range(15, 25))


@pytest.mark.parametrize("shape, match", [((20, 24, 9, 3), "4-D image"), ((20, 8, 9), "smaller than 16 px")])
def test_bad_volumes(tmp_path, shape, match):
    write_nifti(tmp_path / "IXI012-HH-0001-T2.nii.gz", np.ones(shape))
    with pytest.raises(DataError, match=rf"IXI012-HH-0001-T2\.nii\.gz.*{match}"):
        build_ixi_datalist(tmp_path, "all")


def test_corrupt_file_is_named(tmp_path):
    (tmp_path / "IXI013-IOP-0002-T2.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"IXI013-IOP-0002-T2\.nii\.gz: cannot read NIfTI header"):
        build_ixi_datalist(tmp_path, "all")
