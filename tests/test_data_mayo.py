"""Tests of scripts.data.mayo on pydicom-written trees in both AAPM-Mayo layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from _data_factories import make_mayo_tree, write_dicom_slice, write_series
from scripts.data.mayo import MAYO_PATIENTS, build_mayo_datalist, find_mayo_series, parse_mayo_series
from scripts.data.slices import DataError


def stored_value(path: str) -> int:
    return int(pydicom.dcmread(path).pixel_array[0, 0])


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("full_1mm", ("full", 1, "B30")),
        ("quarter_3mm", ("quarter", 3, "B30")),
        ("full_1mm_sharp", ("full", 1, "D45")),
        ("Quarter-1mm-D45", ("quarter", 1, "D45")),
        ("QD_3mm", ("quarter", 3, "B30")),
        ("full_2mm", None),
        ("L067", None),
    ],
)
def test_parse_series_names(name, parsed):
    assert parse_mayo_series(name) == parsed


@pytest.mark.parametrize("layout", ["patient", "dose"])
def test_pairs_by_position_in_both_layouts(tmp_path, layout):
    make_mayo_tree(tmp_path, layout, ["L067", "L506"], n_slices=4)
    items = build_mayo_datalist(tmp_path, split="all")
    assert len(items) == 8
    assert {i["subject"] for i in items} == {"L067", "L506"}
    for item in items:
        assert set(item) == {"image", "label", "task", "subject", "lq_acquired"} and item["task"] == "ct"
        assert item["lq_acquired"] is True  # a real quarter dose: no drawn dose may replace it
        assert "quarter" in item["image"] and "full" in item["label"]
        # quarter slice z holds the full one's value + 1: pairing picked the same slice despite shuffled names
        # and different instance / series numbers
        assert stored_value(item["image"]) == stored_value(item["label"]) + 1
    # sorted by slice position within a patient
    values = [stored_value(i["label"]) for i in items if i["subject"] == "L067"]
    assert values == sorted(values)


def test_pairs_by_instance_without_positions(tmp_path):
    root = tmp_path / "L067"
    write_series(root / "full_1mm", [1000, 1010, 1020], 0, 2, "a", positions=False, seed=1)
    write_series(root / "quarter_1mm", [1000, 1010, 1020], 1, 5, "b", positions=False, seed=2)
    items = build_mayo_datalist(tmp_path, split="all")
    assert len(items) == 3
    assert all(stored_value(i["image"]) == stored_value(i["label"]) + 1 for i in items)


def test_fixed_split_of_the_ten_patients(tmp_path):
    make_mayo_tree(tmp_path, "patient", ["L067", "L096", "L333", "L506"], n_slices=1)
    assert {i["subject"] for i in build_mayo_datalist(tmp_path, "train")} == {"L067", "L096"}
    assert {i["subject"] for i in build_mayo_datalist(tmp_path, "val")} == {"L333"}
    assert {i["subject"] for i in build_mayo_datalist(tmp_path, "test")} == {"L506"}
    assert {i["subject"] for i in build_mayo_datalist(tmp_path, subjects=["L096"])} == {"L096"}
    assert len(MAYO_PATIENTS) == 10


def test_thickness_and_kernel_selection(tmp_path):
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=2, suffix="1mm")
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=3, suffix="1mm_sharp")
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=1, suffix="3mm")
    assert len(find_mayo_series(tmp_path)) == 6
    assert len(build_mayo_datalist(tmp_path, "all")) == 2
    sharp = build_mayo_datalist(tmp_path, "all", kernel="sharp")
    assert len(sharp) == 3 and all("_sharp" in i["label"] for i in sharp)
    assert len(build_mayo_datalist(tmp_path, "all", slice_thickness=3)) == 1
    with pytest.raises(DataError, match="no 3mm D45 series; found 1mm B30, 1mm D45, 3mm B30"):
        build_mayo_datalist(tmp_path, "all", slice_thickness=3, kernel="D45")


def test_missing_partner_slice_is_named(tmp_path):
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=3)
    quarter = sorted((tmp_path / "L067" / "quarter_1mm").iterdir())
    victim = next(p for p in quarter if pydicom.dcmread(p).InstanceNumber == 102)
    victim.unlink()
    full_partner = next(p for p in (tmp_path / "L067" / "full_1mm").iterdir() if pydicom.dcmread(p).InstanceNumber == 2)
    with pytest.raises(DataError, match=rf"no partner of the same slice position: {full_partner}"):
        build_mayo_datalist(tmp_path, "all")


def test_missing_dose_series_and_empty_tree(tmp_path):
    with pytest.raises(DataError, match="no AAPM-Mayo series folder"):
        build_mayo_datalist(tmp_path)
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=1)
    for p in (tmp_path / "L067" / "quarter_1mm").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="patient L067 has no matching quarter-dose series"):
        build_mayo_datalist(tmp_path, "all")


def test_corrupt_and_mismatched_files_are_named(tmp_path):
    make_mayo_tree(tmp_path, "patient", ["L067"], n_slices=2)
    bad = tmp_path / "L067" / "full_1mm" / "zz_broken.IMA"
    bad.write_bytes(b"\0" * 50)
    with pytest.raises(DataError, match=r"zz_broken\.IMA: not a readable DICOM"):
        build_mayo_datalist(tmp_path, "all")
    bad.unlink()
    # a quarter slice of another size at the position of full slice 0
    quarter = Path(tmp_path / "L067" / "quarter_1mm")
    for p in quarter.iterdir():
        if pydicom.dcmread(p).InstanceNumber == 101:
            write_dicom_slice(p, np.zeros((48, 48)), 101, -50.0)
    with pytest.raises(DataError, match="LQ/HQ sizes differ"):
        build_mayo_datalist(tmp_path, "all")
