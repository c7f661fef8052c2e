"""Tests of scripts.data.all_in_one: build_datalist dispatch, task subsets, per-task roots."""

from __future__ import annotations

import numpy as np
import pytest
from _data_factories import make_mayo_tree, write_nifti
from scripts.data import DataError, build_all_in_one_datalist, build_datalist


@pytest.fixture
def tree(tmp_path):
    """dataset_dir with IXI/ (3 subjects), Mayo/ (L067, L333, L506) and PET/ (3 subjects, full + D12)."""
    for i in range(3):
        write_nifti(tmp_path / "IXI" / f"IXI00{i + 2}-Guys-000{i}-T2.nii.gz", np.ones((20, 20, 4)))
        write_nifti(tmp_path / "PET" / f"s{i}" / "Full_dose.nii.gz", np.ones((20, 3, 20)))
        write_nifti(tmp_path / "PET" / f"s{i}" / "D12.nii.gz", np.ones((20, 3, 20)))
    make_mayo_tree(tmp_path / "Mayo", "dose", ["L067", "L333", "L506"], n_slices=2, size=20)
    return tmp_path


def test_all_tasks_and_subsets(tree):
    items = build_datalist("all-in-one", tree, split="all")
    counts = {t: sum(i["task"] == t for i in items) for t in ("mri", "ct", "pet")}
    assert counts == {"mri": 12, "ct": 6, "pet": 9}
    assert [i["task"] for i in items] == ["mri"] * 12 + ["ct"] * 6 + ["pet"] * 9
    ct_pet = build_datalist("all_in_one", tree, tasks=("pet", "ct"), split="all")
    assert {i["task"] for i in ct_pet} == {"ct", "pet"}
    test = build_datalist("all-in-one", tree, split="test")
    assert {i["subject"] for i in test if i["task"] == "ct"} == {"L506"}


def test_explicit_roots_and_options(tree, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("ixi2")
    write_nifti(elsewhere / "IXI099-HH-0001-T2.nii.gz", np.ones((20, 20, 6)))
    items = build_all_in_one_datalist(
        tree, tasks=("mri",), split="all", mri_dir=elsewhere, mri_options={"num_slices": 2}
    )
    assert [(i["subject"], i["slice"]) for i in items] == [("IXI099", 2), ("IXI099", 3)]
    only_roots = build_datalist(
        "all-in-one", None, tasks=("ct",), split="val", ct_dir=tree / "Mayo", ct_options={"kernel": "B30"}
    )
    assert {i["subject"] for i in only_roots} == {"L333"}


def test_single_dataset_dispatch(tree):
    assert {i["task"] for i in build_datalist("ixi", tree / "IXI", split="all")} == {"mri"}
    assert len(build_datalist("MAYO", tree / "Mayo", split="training", subjects=["L067"])) == 2
    assert {i["drf"] for i in build_datalist("pet", tree / "PET", split="all")} == {12}


def test_errors(tree, tmp_path_factory):
    with pytest.raises(ValueError, match="unknown dataset 'brats'; valid: ixi, mayo, pet, all-in-one, demo"):
        build_datalist("brats", tree)
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        build_datalist("all-in-one", tree, tasks=("xray",))
    with pytest.raises(ValueError, match="holds task 'mri', which is not among tasks"):
        build_datalist("ixi", tree / "IXI", tasks=("ct",))
    with pytest.raises(ValueError, match="needs dataset_dir"):
        build_datalist("mayo")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="no pet folder"):
        build_datalist("all-in-one", empty, tasks=("pet",))
    # no item at all is an error, not an empty list that would fail later in the data loader
    with pytest.raises(DataError, match="has no train items"):
        build_datalist("pet", tree / "PET", split="train", subjects=[])
