"""Check the training data before the first iteration: every file, mostly from its header, all problems at once.

Without it one bad slice stops a long run in the middle, with one message for the first bad file. The checks are
those the loader (:class:`scripts.data.LoadSlicePaird`) would fail on: a missing or unreadable file, a header that
claims more than ``max_input_voxels``, complex or colour values, a 4-D or 1-D image, a slice index out of range, a
slice smaller than 16 px, LQ and HQ of different shapes, a CT DICOM without its rescale tags, a rescale slope of 0
or non-finite, and non-finite values. NIfTI values are known finite from the header for integer data (with a
finite scaling); float NIfTI files are read once in full for that check. Each DICOM file is read with the training
reader itself (:class:`scripts.data.loading.LoadSlice`), so pixel data it cannot decode (e.g. JPEG-LS without a
decoder installed) is reported here, not at the first iteration.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data.dicom_series import read_dicom_header
from ..data.headers import MAX_INPUT_VOXELS
from ..data.loading import LoadSlice, is_nifti
from ..data.slices import MIN_SIZE, TASK_PLANES, TASKS, DataError, checked_slice_axis, load_nifti

__all__ = ["FileFacts", "file_facts", "check_training_data"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileFacts:
    """What the data check needs to know about one file: its 3-D shape (DICOM and 2-D NIfTI: a trailing 1)."""

    path: str
    shape: tuple[int, int, int]
    affine: np.ndarray | None  # NIfTI only


def _check_nifti_values(path: str, img: Any) -> None:
    """Raise if the NIfTI's scaling or (float data only) its values are not finite."""
    slope, inter = (float(getattr(img.dataobj, name, default)) for name, default in (("slope", 1.0), ("inter", 0.0)))
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise DataError(f"{path}: non-finite scaling in the header (scl_slope {slope}, scl_inter {inter})")
    if np.issubdtype(img.get_data_dtype(), np.integer):
        return  # integers with a finite scaling are finite
    try:
        values = np.asarray(img.dataobj)
    except Exception as e:
        raise DataError(f"{path}: cannot read image data ({type(e).__name__}: {e})") from e
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DataError(f"{path}: {bad} non-finite values (NaN or inf)")


def file_facts(path: str | os.PathLike, task: str, max_voxels: int | None = MAX_INPUT_VOXELS) -> FileFacts:
    """Check one file from its header (and float NIfTI data; a DICOM file in full) and return its shape.

    Args:
        path: NIfTI or DICOM file.
        task: ``"mri"``, ``"ct"`` or ``"pet"`` (CT DICOM needs its rescale tags).
        max_voxels: the most voxels a header may claim (the configs' ``max_input_voxels``; None: no limit).

    Returns:
        Its :class:`FileFacts`.

    Raises:
        DataError: missing, unreadable, a claim above ``max_voxels``, complex or colour values, not 2-D / 3-D,
            non-finite, a DICOM smaller than 16 px, whose pixels the training reader cannot decode, or a CT DICOM
            without rescale tags (or a slope of 0, non-finite rescale values).
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    if is_nifti(path):
        img, info = load_nifti(path, max_voxels)  # refuses the claim before any pixel is read
        _check_nifti_values(path, img)
        return FileFacts(path, info.shape, info.affine)
    header = read_dicom_header(path)
    LoadSlice(task, max_voxels)(path)  # the training reader: decodes the pixels, checks units and values
    return FileFacts(path, (header.rows, header.columns, 1), None)


def _check_slice(facts: FileFacts, item: Mapping[Hashable, Any], task: str) -> None:
    """Raise if the item's slice of the file does not exist or is smaller than 16 px."""
    index, axis = item.get("slice"), item.get("slice_axis")
    shape = facts.shape
    if index is not None:
        if axis not in (0, 1, 2) or not 0 <= int(index) < shape[axis]:
            raise DataError(f"{facts.path}: slice {index} along axis {axis} is not in the image of shape {shape}")
    elif 1 not in shape:  # a whole volume, cut along its task's plane
        checked_slice_axis(facts.path, shape, facts.affine, TASK_PLANES.get(task, "axial"))  # type: ignore[arg-type]
        return
    else:
        axis = [a for a, s in enumerate(shape) if s == 1][-1]
    inplane = [s for a, s in enumerate(shape) if a != axis]
    if min(inplane) < MIN_SIZE:
        raise DataError(f"{facts.path}: slices of {inplane[0]}x{inplane[1]} px are smaller than {MIN_SIZE} px")


def check_training_data(
    items: Sequence[Mapping[Hashable, Any]],
    default_task: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    what: str = "training data",
    max_voxels: int | None = MAX_INPUT_VOXELS,
    consequence: str = "nothing was trained",
) -> int:
    """Check every item and file of a data list; raise one error listing every problem found.

    Args:
        items: data-list items (schema in :mod:`scripts.data.slices`; whole volumes without ``"slice"`` too).
        default_task: task of the items without one (the config's ``modality``).
        image_key: key of the LQ path (optional in an item).
        label_key: key of the HQ path.
        what: the data's name in the messages.
        max_voxels: the most voxels a file's header may claim (the configs' ``max_input_voxels``; None: no limit).
        consequence: what the error says of the refused run.

    Returns:
        The number of files checked.

    Raises:
        DataError: one message, a line per problem, each naming its file.
    """
    start = time.perf_counter()
    facts: dict[str, FileFacts | DataError] = {}
    problems: list[str] = []

    def checked(path: str, task: str) -> FileFacts | None:
        if path not in facts:
            try:
                facts[path] = file_facts(path, task, max_voxels)
            except DataError as e:
                facts[path] = e
                problems.append(str(e))
        found = facts[path]
        return found if isinstance(found, FileFacts) else None

    for item in tqdm(items, desc=f"checking {what}", unit="item", mininterval=1.0, leave=False, disable=None):
        label = item.get(label_key)
        task = item.get("task") or default_task
        try:
            if label is None:
                raise DataError(f"item {dict(item)} has no {label_key!r} (HQ) path")
            if task not in TASKS:
                raise DataError(f"{label}: task {task!r} is not one of {TASKS}; set --modality for items without one")
            hq = checked(os.fspath(label), task)
            lq = checked(os.fspath(item[image_key]), task) if item.get(image_key) is not None else None
            if hq is not None:
                _check_slice(hq, item, task)
            if hq is not None and lq is not None and lq.shape != hq.shape:
                raise DataError(f"{lq.path} {lq.shape} and {hq.path} {hq.shape}: LQ/HQ shapes differ")
        except DataError as e:
            problems.append(str(e))
    problems = list(dict.fromkeys(problems))
    if problems:
        raise DataError(
            f"{what}: {len(problems)} problem(s); fix or remove these files ({consequence}):\n  "
            + "\n  ".join(problems)
        )
    logger.info(f"Checked {what}: {len(items)} items, {len(facts)} files, {time.perf_counter() - start:.1f} s.")
    return len(facts)
