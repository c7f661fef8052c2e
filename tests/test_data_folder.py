"""The ``folder`` data set: a site's own NIfTI volumes and DICOM series, high-quality only or paired."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from _workflow_data import write_dicom_series, write_nifti
from scripts.data import DATASETS, LoadSlicePaird, build_datalist, vary_by_default
from scripts.data.folder import SPLIT_NAME, split_volumes
from scripts.errors import UserInputError

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def ct_volume(seed: int, shape=(20, 24, 3)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-200, 400, shape).astype(np.float32)


def hq_only_nifti(root, task="ct", count=5):
    for i in range(count):
        write_nifti(root / task / f"site{i % 2}" / f"vol{i}.nii.gz", ct_volume(i) + 1000 * (task == "pet"), AFFINE)
    return root


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_of(call) -> str:
    with pytest.raises(UserInputError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_folder_is_a_dataset_and_hq_only_nifti_volumes_become_simulated_slices(tmp_path):
    data = hq_only_nifti(tmp_path / "site")
    before = snapshot(data)
    run = tmp_path / "run"
    splits = {s: build_datalist("folder", data, ["ct"], s, record_dir=run) for s in ("train", "val", "test", "all")}
    assert "folder" in DATASETS
    subjects = {s: {item["subject"] for item in items} for s, items in splits.items()}
    assert [len(subjects[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert subjects["train"] | subjects["val"] | subjects["test"] == subjects["all"]
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
    assert len(splits["all"]) == 5 * 3  # every axial slice of every volume
    item = splits["train"][0]
    assert item["degrade"] == "ct" and "image" not in item and item["slice_axis"] == 2 and item["task"] == "ct"
    assert item["spacing"] == [1.0, 1.0]
    record = json.loads((run / SPLIT_NAME).read_text())
    assert sorted(record["tasks"]["ct"]["test"]) == sorted(subjects["test"]) and not record["tasks"]["ct"]["paired"]
    pair = LoadSlicePaird(keys=["image", "label"])(item)
    assert pair["image"].shape == pair["label"].shape == (1, 24, 20)  # in the house orientation
    assert not torch.equal(pair["image"], pair["label"])  # the simulated low dose
    assert snapshot(data) == before and sorted(p.name for p in data.rglob("*") if p.is_file()) == sorted(
        f"vol{i}.nii.gz" for i in range(5)
    )


def test_the_split_is_by_volume_and_deterministic_from_its_seed():
    keys = [f"v{i}" for i in range(20)]
    first, again, other = split_volumes(keys, 0), split_volumes(keys, 0), split_volumes(keys, 1)
    assert first == again and first != other
    assert [len(first[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert split_volumes(["a", "b"], 0)["test"] == [] and len(split_volumes(["a", "b"], 0)["train"]) == 1


def test_task_sub_folders_and_dicom_series(tmp_path):
    data = tmp_path / "site"
    hq_only_nifti(data, "mri", 3)
    for i in range(3):
        write_dicom_series(data / "ct" / f"patient{i}", (ct_volume(i, (20, 24, 2)) + 1024).astype(np.int16))
    items = build_datalist("folder", data, ["mri", "ct"], "all")
    ct = [item for item in items if item["task"] == "ct"]
    assert {item["task"] for item in items} == {"mri", "ct"} and len(ct) == 6
    assert all("slice" not in item and item["degrade"] == "ct" for item in ct)
    assert ct[0]["subject"] == "patient0" and ct[0]["spacing"] == [0.8, 0.6]
    hu = LoadSlicePaird(keys=["image", "label"])(ct[0])["label"]
    stored = (ct_volume(0, (20, 24, 2)) + 1024).astype(np.int16)[..., 0] - 1024.0  # HU through the rescale tags
    assert np.array_equal(np.sort(hu.numpy().ravel()), np.sort(stored.ravel()))
    message = error_of(lambda: build_datalist("folder", data, ["mri", "ct", "pet"], "train"))
    assert "no pet/ sub-folder" in message


def paired(root, kind="nifti", count=3):
    for i in range(count):
        hq = ct_volume(i)
        if kind == "nifti":
            write_nifti(root / "ct" / "hq" / f"p{i}.nii.gz", hq, AFFINE)
            write_nifti(root / "ct" / "lq" / f"p{i}.nii.gz", hq + 30.0, AFFINE)
        else:
            write_dicom_series(root / "ct" / "hq" / f"p{i}", (hq + 1024).astype(np.int16))
            write_dicom_series(root / "ct" / "lq" / f"p{i}", (hq + 1054).astype(np.int16))
    return root


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_paired_trees_are_matched_by_relative_path(tmp_path, kind):
    data = paired(tmp_path / "site", kind)
    items = build_datalist("folder", data, ["ct"], "all")
    assert len(items) == 9  # 3 volumes of 3 slices
    assert all("degrade" not in item and "/lq/" in item["image"] and "/hq/" in item["label"] for item in items)
    assert all(item["lq_acquired"] is True for item in items)
    assert all(item["image"].replace("/lq/", "/hq/") == item["label"] for item in items)
    pair = LoadSlicePaird(keys=["image", "label"])(items[0])
    assert torch.allclose(pair["image"] - pair["label"], torch.full_like(pair["image"], 30.0), atol=1e-3)
    assert not vary_by_default("folder", data, ["ct"]) and vary_by_default(
        "folder", hq_only_nifti(tmp_path / "h"), ["ct"]
    )


def test_bad_folders_are_one_line_each(tmp_path):
    empty = tmp_path / "empty"
    (empty / "ct").mkdir(parents=True)
    assert "no NIfTI volume or DICOM series found" in error_of(lambda: build_datalist("folder", empty, ["ct"]))
    one = hq_only_nifti(tmp_path / "one", count=1)
    assert "1 volume(s): a folder data set needs at least 2" in error_of(lambda: build_datalist("folder", one, ["ct"]))
    two = hq_only_nifti(tmp_path / "two", count=2)
    assert "leave the test split empty" in error_of(lambda: build_datalist("folder", two, ["ct"], "test"))
    unmatched = paired(tmp_path / "unmatched")
    os.remove(unmatched / "ct" / "lq" / "p1.nii.gz")
    message = error_of(lambda: build_datalist("folder", unmatched, ["ct"]))
    assert message.startswith(str(unmatched / "ct" / "hq" / "p1.nii.gz")) and "no file p1.nii.gz in" in message
    shifted = paired(tmp_path / "shifted")
    write_nifti(shifted / "ct" / "lq" / "p2.nii.gz", ct_volume(2), np.diag([1.0, 1.0, 3.0, 1.0]))
    assert "misaligned with" in error_of(lambda: build_datalist("folder", shifted, ["ct"]))
    cropped = paired(tmp_path / "cropped")
    write_nifti(cropped / "ct" / "lq" / "p0.nii.gz", ct_volume(0, (20, 20, 3)), AFFINE)
    assert "shape (20, 20, 3) vs (20, 24, 3)" in error_of(lambda: build_datalist("folder", cropped, ["ct"]))
    mixed = paired(tmp_path / "mixed", "dicom")
    write_dicom_series(mixed / "ct" / "lq" / "p0", (ct_volume(0) + 1054).astype(np.int16), modality="MR")
    assert "(mixed modalities)" in error_of(lambda: build_datalist("folder", mixed, ["ct"]))
    wrong = tmp_path / "wrong"
    for i in range(3):
        write_dicom_series(wrong / "ct" / f"s{i}", (ct_volume(i) + 1024).astype(np.int16), modality="CT" if i else "MR")
    assert "DICOM Modality 'MR' in the ct folder" in error_of(lambda: build_datalist("folder", wrong, ["ct"]))
    flat = hq_only_nifti(tmp_path / "flat") / "ct"
    assert len(build_datalist("folder", flat, ["ct"], "all")) == 15  # one task's folder given directly
    assert "give --tasks" in error_of(lambda: build_datalist("folder", flat, ["mri", "ct"]))


def test_non_finite_values_are_refused_by_the_training_data_check(tmp_path):
    from scripts.workflows import check_training_data

    data = hq_only_nifti(tmp_path / "site", count=3)
    volume = ct_volume(1)
    volume[3, 4, 1] = np.nan
    write_nifti(data / "ct" / "site1" / "vol1.nii.gz", volume, AFFINE)
    items = build_datalist("folder", data, ["ct"], "all")
    with pytest.raises(UserInputError, match=r"vol1.nii.gz: 1 non-finite values"):  # one error, its files listed
        check_training_data(items)
