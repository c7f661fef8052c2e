"""IXI T2 data list: central axial slices of each volume, LQ simulated by the 4x k-space crop."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from .folders import walk_folders
from .slices import DataError, select_subjects, volume_slices

__all__ = ["IXI_SPLIT_COUNTS", "IXI_PATTERN", "find_ixi_volumes", "build_ixi_datalist"]

IXI_SPLIT_COUNTS: tuple[int, int, int] = (405, 59, 114)  # AMIR's train / val / test volumes of 578
# e.g. IXI002-Guys-0828-T2.nii.gz; the subject id is the IXI number
IXI_PATTERN = re.compile(r"^(IXI\d+)-([A-Za-z]+)-(\d+)-(T1|T2|PD|MRA|DTI)\.nii(\.gz)?$")


def find_ixi_volumes(dataset_dir: str | os.PathLike, contrast: str = "T2") -> dict[str, Path]:
    """Map IXI subject ids to their volume of one contrast, searching ``dataset_dir`` recursively.

    Args:
        dataset_dir: folder holding ``IXI<id>-<site>-<nnnn>-<contrast>.nii.gz`` files (in subfolders or not).
        contrast: ``"T2"`` (AMIR), or another IXI contrast.

    Returns:
        ``{"IXI002": Path(...), ...}``.

    Raises:
        DataError: missing folder, no matching file, or two files for one subject.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"{root}: IXI folder not found")
    volumes: dict[str, Path] = {}
    names = (folder / name for folder, _, files in walk_folders(root) for name in files)  # linked folders too
    for path in sorted(p for p in names if p.name.startswith("IXI")):
        match = IXI_PATTERN.match(path.name)
        if not match or match.group(4) != contrast or not path.is_file():
            continue
        subject = match.group(1)
        if subject in volumes:
            raise DataError(f"{volumes[subject]} and {path}: two IXI {contrast} volumes for subject {subject}")
        volumes[subject] = path
    if not volumes:
        raise DataError(f"{root}: no IXI {contrast} volume (IXI<id>-<site>-<nnnn>-{contrast}.nii.gz) found")
    return volumes


def build_ixi_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    num_slices: int | None = 100,
    seed: int = 0,
    subjects: Sequence[str] | None = None,
    split_counts: Sequence[int] = IXI_SPLIT_COUNTS,
    contrast: str = "T2",
) -> list[dict]:
    """Data list of IXI slices for MRI 4x super-resolution.

    Each volume gives its ``num_slices`` central slices along the axis its affine says is mostly
    superior-inferior (so a volume stored sagittally is still cut axially). Only headers are read.

    Args:
        dataset_dir: IXI folder (see :func:`find_ixi_volumes`).
        split: ``train``, ``val``, ``test`` or ``all``; subjects are split 405 / 59 / 114 (scaled to the number
            found) after a permutation seeded by ``seed`` of the sorted ids.
        num_slices: central slices per volume (None: all).
        seed: split seed.
        subjects: explicit subject ids (``"IXI002"``...), overriding ``split``.
        split_counts: reference (train, val, test) sizes.
        contrast: IXI contrast.

    Returns:
        Items ``{"label": path, "slice": k, "slice_axis": a, "task": "mri", "degrade": "kspace",
        "subject": id}``, by subject then slice.

    Raises:
        DataError: no volumes, unknown subjects, or a volume that is not 3-D or too small.
    """
    volumes = find_ixi_volumes(dataset_dir, contrast)
    chosen = select_subjects(volumes, split, split_counts, seed, subjects, where=os.fspath(dataset_dir))
    items = []
    for subject in chosen:
        path = volumes[subject]
        for where in volume_slices(path, "axial", num_slices):
            items.append({"label": os.fspath(path), **where, "task": "mri", "degrade": "kspace", "subject": subject})
    return items
