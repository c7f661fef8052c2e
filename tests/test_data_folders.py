"""Linked sub-folders of a data set are searched once each by the folder walk and the data-list builders; a link
that would loop or find a folder twice is skipped with a warning naming it."""

from __future__ import annotations

import logging

import numpy as np
from _data_factories import make_mayo_tree, write_nifti
from scripts.data.ixi import find_ixi_volumes
from scripts.data.mayo import find_mayo_series
from scripts.data.pet import find_pet_entries


def link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=True)
    return path


def test_walk_follows_outside_links_once_and_names_the_skipped_ones(tmp_path, caplog):
    from scripts.data.folders import walk_folders

    root, outside = tmp_path / "data", tmp_path / "disk2"
    (root / "real").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    link(root / "a_disk2", outside)  # followed
    link(root / "b_disk2_again", outside)  # the same folder through a second link
    link(root / "real" / "up", root)  # a loop
    link(root / "a_real", root / "real")  # a folder inside the tree, found under its own name
    link(outside / "deep" / "back", tmp_path)  # from the linked folder to an ancestor of the tree
    with caplog.at_level(logging.WARNING):
        walked = [folder.relative_to(root).as_posix() for folder, _, _ in walk_folders(root)]
    assert walked == [".", "a_disk2", "a_disk2/deep", "real"]
    for name in ("b_disk2_again", "real/up", "a_real", "a_disk2/deep/back"):
        assert f"{root / name}: a link to" in caplog.text
    assert "skipped" in caplog.text


def test_builders_find_the_data_behind_links(tmp_path):
    ixi, elsewhere = tmp_path / "ixi", tmp_path / "elsewhere"
    write_nifti(ixi / "IXI002-Guys-0000-T2.nii.gz", np.ones((20, 24, 9)))
    write_nifti(elsewhere / "IXI003-HH-0001-T2.nii.gz", np.ones((20, 24, 9)))
    link(ixi / "more", elsewhere)
    link(elsewhere / "loop", ixi)
    assert sorted(find_ixi_volumes(ixi)) == ["IXI002", "IXI003"]

    make_mayo_tree(tmp_path / "mayo_store", "patient", ["L067"])
    link(tmp_path / "mayo" / "L067", tmp_path / "mayo_store" / "L067")
    assert sorted(k[:2] for k in find_mayo_series(tmp_path / "mayo")) == [("L067", "full"), ("L067", "quarter")]

    for dose in ("Full_dose", "D12"):
        write_nifti(tmp_path / "pet_store" / f"{dose}.nii.gz", np.ones((20, 24, 20)))
    link(tmp_path / "pet" / "s1", tmp_path / "pet_store")
    assert set(find_pet_entries(tmp_path / "pet")["s1"]) == {1, 12}
