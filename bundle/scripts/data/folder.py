"""The ``folder`` data set: a site's own NIfTI volumes or DICOM series, high-quality only or in LQ / HQ pairs.

Layout of ``dataset_dir`` (``--dataset folder --dataset_dir D``)::

    D/mri/ D/ct/ D/pet/          one sub-folder per task (only the tasks trained), or D itself for one task
                                 (``--tasks "['ct']"``)
    <task>/**                    high-quality only: NIfTI volumes (.nii, .nii.gz) and DICOM series, in any sub-folders;
                                 the LQ is simulated (item ``"degrade"``; levels drawn per item with vary_degradations)
    <task>/lq/** and <task>/hq/**  paired: the same relative paths in both trees (real low-dose acquisitions)

A volume is one NIfTI file or one DICOM series (the files of one SeriesInstanceUID in one folder). NIfTI volumes
are cut into slices along the task's plane (:data:`~scripts.data.slices.TASK_PLANES`; only headers are read), a
DICOM series gives one item per file. Splits are by volume (``subject`` = the volume's relative path), 80/10/10 of
a permutation seeded by ``seed`` (the builder's, 0 by default, like IXI's: not the training seed, so that
``evaluate.json`` finds the same test volumes); 2 volumes give train and validation one each and no test split.
The split is written as ``folder_split.json`` into ``record_dir`` (the run folder); nothing is written in ``D``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ..atomic import write_text_atomic
from ..transforms.random_dose_dict import ACQUIRED_KEY
from .folders import walk_folders
from .loading import is_nifti
from .slices import TASK_PLANES, TASKS, DataError, nifti_info, normalize_split, volume_slices

__all__ = [
    "DEGRADE",
    "SPLIT_NAME",
    "Volume",
    "task_folders",
    "find_volumes",
    "split_volumes",
    "build_folder_datalist",
    "vary_by_default",
]

logger = logging.getLogger(__name__)

#: The simulated degradation of each task's high-quality-only items.
DEGRADE: dict[str, str] = {"mri": "kspace", "ct": "ct", "pet": "pet"}
#: The file the split is recorded in, in ``record_dir``.
SPLIT_NAME = "folder_split.json"
_MODALITY_TASK = {"MR": "mri", "CT": "ct", "PT": "pet"}
_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Volume:
    """One volume of a task folder.

    Attributes:
        key: its path relative to the tree it was found in (a DICOM series: its folder, plus ``#label`` when the
            folder holds several series).
        files: the NIfTI file, or the series' files in slice order.
        modality: the DICOM Modality ("" for NIfTI).
    """

    key: str
    files: tuple[Path, ...]
    modality: str = ""

    @property
    def nifti(self) -> bool:
        return is_nifti(self.files[0])


def task_folders(dataset_dir: str | os.PathLike, tasks: Sequence[str]) -> dict[str, Path]:
    """The folder of each task: ``D/<task>`` (case-insensitive), or ``D`` itself for a single task without one.

    Raises:
        DataError: ``D`` missing; several tasks and no task sub-folder; a requested task's sub-folder missing.
    """
    base = Path(dataset_dir)
    if not base.is_dir():
        raise DataError(f"{base}: folder data set not found")
    children = {p.name.lower(): p for p in sorted(base.iterdir()) if p.is_dir()}
    present = {t: children[t] for t in TASKS if t in children}
    if not present:
        if len(tasks) == 1:
            return {tasks[0]: base}
        raise DataError(
            f"{base}: no mri/, ct/ or pet/ sub-folder; for one task's images directly in it give --tasks \"['ct']\" "
            "(and --modality ct)"
        )
    missing = [t for t in tasks if t not in present]
    if missing:
        raise DataError(
            f"{base}: no {', '.join(t + '/' for t in missing)} sub-folder for tasks {list(tasks)}; add it or give "
            f"--tasks with the tasks present ({list(present)})"
        )
    return {t: present[t] for t in tasks}


def _is_dicom(path: Path) -> bool:
    return not is_nifti(path) and pydicom.misc.is_dicom(path)


def find_volumes(root: Path) -> dict[str, Volume]:
    """The NIfTI volumes and DICOM series under ``root`` (links followed once), by key; only headers are read.

    Raises:
        DataError: a DICOM file whose header cannot be read.
    """
    from ..workflows.dicom import scan_dicom_folder  # late: scripts.workflows imports this package

    volumes: dict[str, Volume] = {}
    skipped = []
    for folder, _, names in walk_folders(root):
        files = [folder / n for n in names if not n.startswith(".")]
        dicoms = [f for f in files if _is_dicom(f)]
        skipped += [f for f in files if not is_nifti(f) and f not in dicoms]
        for f in files:
            if is_nifti(f):
                key = f.relative_to(root).as_posix()
                volumes[key] = Volume(key, (f,))
        if not dicoms:
            continue
        for series in scan_dicom_folder(folder, dicoms):
            if not series.uid:
                raise DataError(f"{series.files[0]}: not a readable DICOM image file; remove it from {root}")
            key = folder.relative_to(root).as_posix() + (f"#{series.label}" if series.label else "")
            volumes[key] = Volume(key, series.files, series.modality)
    if skipped:
        logger.warning(f"{root}: {len(skipped)} files neither NIfTI nor DICOM left out (first: {skipped[0]})")
    return volumes


def _check_modality(volume: Volume, task: str) -> None:
    found = _MODALITY_TASK.get(volume.modality.upper())
    if volume.modality and found != task:
        raise DataError(
            f"{volume.files[0]}: DICOM Modality {volume.modality!r} in the {task} folder (mixed modalities); move the "
            f"series to the folder of its task"
        )


def _geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray, str]:
    """(shape, affine-like geometry, modality) of one file, for pairing."""
    if is_nifti(path):
        info = nifti_info(path)
        return info.shape, info.affine, ""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    where = [float(v) for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
             for v in ds.get(key, [])]  # fmt: skip
    return (int(ds.Rows), int(ds.Columns)), np.asarray(where), str(ds.get("Modality", "")).strip()


def _pair_files(lq_root: Path, hq_root: Path, lq: dict[str, Volume], hq: dict[str, Volume]) -> dict[Path, Path]:
    """HQ file -> LQ file, matched by relative path and checked for shape, geometry and modality.

    Raises:
        DataError: an unmatched file, a pair whose shape or affine differ, or whose DICOM Modality differ.
    """
    lq_files = {f.relative_to(lq_root).as_posix(): f for v in lq.values() for f in v.files}
    hq_files = {f.relative_to(hq_root).as_posix(): f for v in hq.values() for f in v.files}
    for ours, theirs, name in ((hq_files, lq_files, lq_root), (lq_files, hq_files, hq_root)):
        unmatched = sorted(set(ours) - set(theirs))
        if unmatched:
            more = f" (and {len(unmatched) - 1} more unmatched)" if len(unmatched) > 1 else ""
            raise DataError(
                f"{ours[unmatched[0]]}: no file {unmatched[0]} in {name}{more}; lq/ and hq/ must hold the same "
                "relative paths"
            )
    pairs = {}
    for rel, hq_path in sorted(hq_files.items()):
        lq_path = lq_files[rel]
        (hq_shape, hq_geo, hq_mod), (lq_shape, lq_geo, lq_mod) = _geometry(hq_path), _geometry(lq_path)
        if hq_mod != lq_mod:
            raise DataError(f"{lq_path}: DICOM Modality {lq_mod!r} but {hq_path} is {hq_mod!r} (mixed modalities)")
        if hq_shape != lq_shape or hq_geo.shape != lq_geo.shape or not np.allclose(hq_geo, lq_geo, atol=1e-3):
            what = f"shape {lq_shape} vs {hq_shape}" if hq_shape != lq_shape else "affine (position, orientation)"
            raise DataError(f"{lq_path}: misaligned with {hq_path}: {what} differ; resample the LQ onto the HQ grid")
        pairs[hq_path] = lq_path
    return pairs


def split_volumes(keys: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """Split volume keys 80/10/10 (at least one validation volume; one test volume from 3 volumes on).

    Raises:
        DataError: fewer than 2 volumes.
    """
    ids = sorted(set(keys))
    num = len(ids)
    if num < 2:
        raise DataError(
            f"{num} volume(s): a folder data set needs at least 2 (training and validation never share one)"
        )
    order = [ids[i] for i in np.random.default_rng(seed).permutation(num)]
    n_val = max(1, round(num * _FRACTIONS[1]))
    n_test = max(1, round(num * _FRACTIONS[2])) if num >= 3 else 0
    n_train = num - n_val - n_test
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def _spacing(volume: Volume, axis: int | None) -> list[float] | None:
    if volume.nifti:
        zooms = [float(z) for z in np.linalg.norm(nifti_info(volume.files[0]).affine[:3, :3], axis=0)]
        return [z for a, z in enumerate(zooms) if a != axis]
    spacing = pydicom.dcmread(volume.files[0], stop_before_pixels=True).get("PixelSpacing")
    return [float(s) for s in spacing] if spacing else None


def _volume_items(task: str, volume: Volume, pairs: dict[Path, Path] | None) -> list[dict]:
    """The slice items of one volume (HQ-only: ``degrade``; paired: ``image``)."""
    base: dict = {"task": task, "subject": volume.key}
    if volume.nifti:
        where = volume_slices(volume.files[0], TASK_PLANES[task])
        spots = [({"slice": w["slice"], "slice_axis": w["slice_axis"]}, volume.files[0]) for w in where]
        axis = where[0]["slice_axis"] if where else None
    else:
        spots, axis = [({}, f) for f in volume.files], None
    spacing = _spacing(volume, axis)
    items = []
    for extra, path in spots:
        item = {**base, "label": os.fspath(path), **extra}
        if pairs is None:
            item["degrade"] = DEGRADE[task]
        else:
            item["image"], item[ACQUIRED_KEY] = os.fspath(pairs[path]), True
        if spacing:
            item["spacing"] = spacing
        items.append(item)
    return items


def _task_volumes(task: str, folder: Path) -> tuple[dict[str, Volume], dict[Path, Path] | None]:
    """The task folder's HQ volumes and, for a paired folder, the HQ -> LQ file pairs."""
    lq_root, hq_root = folder / "lq", folder / "hq"
    paired = lq_root.is_dir() or hq_root.is_dir()
    if paired and not (lq_root.is_dir() and hq_root.is_dir()):
        raise DataError(
            f"{folder}: {'lq/' if lq_root.is_dir() else 'hq/'} without its twin; a paired folder holds both"
        )
    hq = find_volumes(hq_root if paired else folder)
    if not hq:
        raise DataError(f"{folder}: no NIfTI volume or DICOM series found; put the {task} images there")
    for volume in hq.values():
        _check_modality(volume, task)
    pairs = _pair_files(lq_root, hq_root, find_volumes(lq_root), hq) if paired else None
    return hq, pairs


def build_folder_datalist(
    dataset_dir: str | os.PathLike | None,
    tasks: Sequence[str] = TASKS,
    split: str = "train",
    seed: int = 0,
    record_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """The items of one split of a folder data set (layout in the module's docstring).

    Args:
        dataset_dir: the folder ``D``.
        tasks: the tasks, each with its sub-folder (one task may use ``D`` itself).
        split: ``train``, ``val``, ``test`` or ``all``.
        seed: seed of the split by volume.
        record_dir: where ``folder_split.json`` records the split (the run folder); None: not recorded.

    Returns:
        Items in the schema of :mod:`scripts.data.slices`, volumes in sorted order.

    Raises:
        DataError: no folder, a task folder empty or with fewer than 2 volumes, a split with no volume, DICOM of
            another modality, unmatched / misaligned / mixed-modality pairs; one line naming the file or folder.
    """
    if dataset_dir is None:
        raise DataError("dataset 'folder' needs --dataset_dir: a folder of mri/, ct/, pet/ sub-folders")
    name = normalize_split(split)
    record: dict = {"dataset_dir": os.path.abspath(dataset_dir), "seed": int(seed), "tasks": {}}
    items: list[dict] = []
    for task, folder in task_folders(dataset_dir, tasks).items():
        hq, pairs = _task_volumes(task, folder)
        try:
            splits = split_volumes(list(hq), seed)
        except DataError as e:
            raise DataError(f"{folder}: {e}") from None
        keep = list(hq) if name == "all" else splits[name]
        if not keep:
            raise DataError(
                f"{folder}: its {len(hq)} volumes leave the {name} split empty (it needs 3 or more); add volumes or "
                "use --split all"
            )
        record["tasks"][task] = {"folder": os.path.abspath(folder), "paired": pairs is not None, **splits}
        for key in sorted(keep):
            items += _volume_items(task, hq[key], pairs)
    if record_dir is not None:
        Path(record_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(record, indent=4) + "\n", Path(record_dir) / SPLIT_NAME)
    return items


def vary_by_default(
    dataset: str, dataset_dir: str | os.PathLike | None, tasks: Sequence[str], modality: str | None = None
) -> bool:
    """Whether the training draws degradation levels per item by default (the config's ``vary_degradations``).

    The demo set does (without ``modality``: a MONAI Label request trains on the user's pairs); a folder data set
    does when its LQ is simulated (no ``lq/`` / ``hq/`` trees): the random dose transforms replace an item's LQ, so
    real low-dose pairs must keep theirs.
    """
    name = str(dataset).lower()
    if name == "demo":
        return modality is None
    if name != "folder" or dataset_dir is None or not Path(dataset_dir).is_dir():
        return False
    try:
        folders = task_folders(dataset_dir, tasks)
    except DataError:
        return False  # the data list reports it
    return not any((f / "lq").is_dir() or (f / "hq").is_dir() for f in folders.values())
