"""Tests of scripts.data.datasets: slice items of whole volumes, the cached dataset, collation."""

from __future__ import annotations

import errno
import logging
import os
import struct
import zipfile

import numpy as np
import pytest
import torch
from _data_factories import coordinate_volume, make_mayo_tree, mri_slice_item, write_nifti
from monai.data import DataLoader, PersistentDataset
from scripts.atomic import TEMP_TAG, DiskFullError
from scripts.data.datasets import make_dataset, slice_items
from scripts.data.loading import LoadSlicePaird, read_nifti_slice
from scripts.data.mayo import build_mayo_datalist
from scripts.data.slices import DataError


def test_persistent_cache_reuses_and_leaves_no_partial_entry(tmp_path):
    cache = tmp_path / "cache"
    items = [mri_slice_item(tmp_path, 2), mri_slice_item(tmp_path, 5)]
    ds = make_dataset(items, LoadSlicePaird(), cache_dir=cache)
    assert isinstance(ds, PersistentDataset)
    first = [ds[i] for i in range(2)]
    assert len(list(cache.glob("*.pt"))) == 2
    again = make_dataset(items, LoadSlicePaird(), cache_dir=cache)
    for a, b in zip(first, [again[i] for i in range(2)], strict=True):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"])) and a["id"] == b["id"]
    # another transform setting is another cache entry, not a stale hit
    changed = make_dataset(items, LoadSlicePaird(kspace_fraction=0.5), cache_dir=cache)
    assert not torch.equal(torch.as_tensor(changed[0]["image"]), torch.as_tensor(first[0]["image"]))
    bad_cache = tmp_path / "bad"
    bad = make_dataset([{**items[0], "slice": 99}], LoadSlicePaird(), cache_dir=bad_cache)
    with pytest.raises(RuntimeError) as raised:  # MONAI's Compose wraps the transform's error
        bad[0]
    cause = raised.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__
    assert cause is not None and "slice 99 out of range" in str(cause)
    assert list(bad_cache.iterdir()) == []


def flip_a_data_byte(entry) -> None:
    """Damage one byte in the middle of the largest member's data, as a bad disk or copy would."""
    with zipfile.ZipFile(entry) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    raw = bytearray(entry.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26 : member.header_offset + 30])
    raw[member.header_offset + 30 + name_length + extra_length + member.file_size // 2] ^= 0xFF
    entry.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped byte", "random bytes"])
def test_a_damaged_cache_entry_is_named_rebuilt_and_never_stops_a_run(tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    items = [mri_slice_item(tmp_path, 2)]
    first = make_dataset(items, LoadSlicePaird(), cache_dir=cache)[0]
    (entry,) = cache.glob("*.pt")
    whole = entry.read_bytes()
    if damage == "flipped byte":
        flip_a_data_byte(entry)
    else:
        entry.write_bytes(
            {"empty": b"", "truncated": whole[: len(whole) // 2], "random bytes": os.urandom(999)}[damage]
        )
    with caplog.at_level(logging.WARNING):
        again = make_dataset(items, LoadSlicePaird(), cache_dir=cache)[0]
    assert torch.equal(torch.as_tensor(again["image"]), torch.as_tensor(first["image"]))
    assert torch.equal(torch.as_tensor(again["label"]), torch.as_tensor(first["label"]))
    assert f"{entry}: damaged cache entry" in caplog.text
    assert entry.read_bytes() == whole  # built again, whole


def test_a_cache_entry_is_written_beside_and_a_full_disk_leaves_none(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    written = []
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):  # the first bytes are written, then the disk is full
        written.append(f)
        real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    dataset = make_dataset([mri_slice_item(tmp_path, 2)], LoadSlicePaird(), cache_dir=cache)
    with pytest.raises(DiskFullError, match=rf"^{cache}: cannot write .*\.pt: No space left on device"):
        dataset[0]
    (file,) = written
    name = os.fspath(getattr(file, "name", file))  # a temporary name in the cache folder, not the system's
    assert os.path.dirname(name) == str(cache) and TEMP_TAG in name
    assert list(cache.iterdir()) == []  # no partial entry, no temporary


def test_items_of_all_tasks_collate(tmp_path):
    make_mayo_tree(tmp_path / "mayo", "patient", ["L067"], n_slices=1, size=32)
    items = [mri_slice_item(tmp_path), *build_mayo_datalist(tmp_path / "mayo", "all")]
    batch = next(iter(DataLoader(make_dataset(items, LoadSlicePaird()), batch_size=2)))
    assert batch["image"].shape == (2, 1, 32, 32) and list(batch["task"]) == ["mri", "ct"]


def test_whole_volume_items_without_task_are_cut_into_slices(tmp_path):
    # MONAI Label's items: {"image": LQ, "label": HQ} volumes, no task, no slice
    vol = coordinate_volume((20, 18, 22))
    hq = write_nifti(tmp_path / "hq.nii.gz", vol, ("A", "S", "R"))  # axial (S-I) is stored axis 1
    lq = write_nifti(tmp_path / "lq.nii.gz", vol + 1.0, ("A", "S", "R"))
    items = [{"image": str(lq), "label": str(hq)}]
    with pytest.raises(DataError, match=r"hq\.nii\.gz: the item has no 'task' .* set --modality mri\|ct\|pet"):
        slice_items(items)
    with pytest.raises(ValueError, match="modality"):
        slice_items(items, "xray")
    cut = slice_items(items, "ct")
    assert [(it["slice"], it["slice_axis"], it["task"]) for it in cut] == [(k, 1, "ct") for k in range(18)]
    assert items == [{"image": str(lq), "label": str(hq)}]  # not modified
    # builders' items pass unchanged, their task kept; a 2-D image is not cut
    flat = write_nifti(tmp_path / "flat.nii.gz", vol[:, :, :1], ("A", "S", "R"))
    kept = [{"label": str(hq), "slice": 3, "slice_axis": 1, "task": "mri"}, {"label": str(flat), "task": "pet"}]
    assert slice_items(kept, "ct") == kept
    ds = make_dataset(items, LoadSlicePaird(), default_task="ct", max_per_task=4)
    assert len(ds) == 4 and [it["slice"] for it in ds.data] == [0, 1, 2, 3]
    sample = ds[2]
    np.testing.assert_array_equal(sample["image"][0].numpy(), sample["label"][0].numpy() + 1.0)
    np.testing.assert_array_equal(sample["label"][0].numpy(), read_nifti_slice(hq, 2, 1))
    assert sample["task"] == "ct" and sample["id"] == "hq.nii.gz#2"
