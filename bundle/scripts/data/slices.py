"""Helpers shared by every data-list builder: errors, splits, slice axes and in-plane orientation, NIfTI headers.

The data-list item schema (what every builder returns and :class:`scripts.data.loading.LoadSlicePaird` reads):

``"task"`` (required by the loader)
    ``"mri"``, ``"ct"`` or ``"pet"``. Items without one (MONAI Label's) take the config's ``modality``
    (:func:`scripts.data.datasets.slice_items`).
``"label"`` (required)
    path of the high-quality (HQ) source: a NIfTI volume, a NIfTI 2-D image (stored as ``(H, W)`` or
    ``(H, W, 1)``) or one DICOM file holding one slice.
``"image"`` (optional)
    path of the paired low-quality (LQ) source, of the same kind and shape as ``"label"``. Absent when the
    LQ is simulated.
``"lq_acquired"`` (optional)
    True where ``"image"`` is a real low-dose acquisition (Mayo quarter dose, a real PET LQ, a folder's ``lq/``
    tree) rather than a simulation: the drawn-dose transforms of ``vary_degradations`` leave its LQ as it is.
``"degrade"`` (required when ``"image"`` is absent)
    how to simulate the LQ from the HQ: ``"kspace"`` (MRI 4x k-space crop), ``"ct"`` (quarter-dose CT
    noise), ``"pet"`` (dose-reduced PET, DRF from ``"drf"``).
``"slice"``, ``"slice_axis"`` (optional, together)
    index of the slice in the stored array of a NIfTI volume and the stored axis it indexes (0, 1 or 2).
    Absent for DICOM files and 2-D NIfTI images. A volume item without them is cut into one item per slice
    by :func:`scripts.data.make_dataset` (:func:`scripts.data.datasets.slice_items`).
``"drf"`` (PET only)
    dose-reduction factor of the LQ: the paired one's, or the one to simulate.
``"subject"``
    subject / patient id the slice comes from (splits are by subject; it also seeds the simulation).

Extra keys (``"dose_fraction"``, ``"kernel"``, ...) are informative and ignored by the loader.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes

from .headers import MAX_INPUT_VOXELS, DataError, check_nifti_header

__all__ = [
    "DataError",
    "TASKS",
    "SPLITS",
    "MIN_SIZE",
    "normalize_split",
    "assign_splits",
    "select_subjects",
    "AXIS_FAMILIES",
    "PLANE_AXIS",
    "axis_family",
    "slice_axis_for_plane",
    "inplane_target",
    "orient_slice",
    "affine_from_axcodes",
    "central_slices",
    "TASK_PLANES",
    "volume_slices",
    "checked_slice_axis",
    "limit_per_task",
    "list_files",
    "NiftiInfo",
    "load_nifti",
    "nifti_info",
    "nearest_value",
]

TASKS: tuple[str, ...] = ("mri", "ct", "pet")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_SIZE = 16  # smallest in-plane size accepted: the network downsamples by 8 and the SSIM window is 11 px

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "all": "all",
}


def normalize_split(split: str) -> str:
    """Map a split name to ``"train"``, ``"val"``, ``"test"`` or ``"all"``.

    Args:
        split: ``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing`` or ``all``.

    Returns:
        The canonical split name.

    Raises:
        ValueError: for an unknown name.
    """
    key = str(split).lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid: train, val, test, all (or training, validation, testing)")
    return _SPLIT_ALIASES[key]


def _split_sizes(num: int, counts: Sequence[int]) -> tuple[int, int, int]:
    """Scale the reference (train, val, test) counts to ``num`` subjects, keeping val and test non-empty if num >= 3."""
    total = sum(counts)
    if num == sum(counts):
        return int(counts[0]), int(counts[1]), int(counts[2])
    n_val = round(num * counts[1] / total)
    n_test = round(num * counts[2] / total)
    if num >= 3:
        # with a handful of subjects, rounding would leave validation or test empty
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_val, n_test = min(n_val, num), min(n_test, max(num - n_val, 0))
    return num - n_val - n_test, n_val, n_test


def assign_splits(subjects: Iterable[str], counts: Sequence[int], seed: int = 0) -> dict[str, list[str]]:
    """Split subject ids deterministically into train / val / test.

    The ids are sorted, permuted by a NumPy generator seeded with ``seed`` and cut into consecutive blocks whose
    sizes are ``counts`` scaled proportionally to the number of subjects (rounded; validation and test keep at
    least one subject each when there are three or more subjects).

    Args:
        subjects: subject ids (duplicates are ignored).
        counts: reference sizes (train, val, test), e.g. IXI's (405, 59, 114).
        seed: seed of the permutation.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.
    """
    ids = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n_train, n_val, _ = _split_sizes(len(ids), counts)
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def select_subjects(
    available: Iterable[str],
    split: str,
    counts: Sequence[int],
    seed: int = 0,
    subjects: Sequence[str] | None = None,
    fixed: Mapping[str, Sequence[str]] | None = None,
    where: str = "",
) -> list[str]:
    """The subjects of one split: an explicit list, a fixed table, or the seeded proportional split.

    Args:
        available: subject ids found in the data set.
        split: split name (see :func:`normalize_split`); ``"all"`` returns every subject.
        counts: reference (train, val, test) sizes for :func:`assign_splits`.
        seed: seed of :func:`assign_splits`.
        subjects: explicit ids for this call; overrides ``split`` entirely.
        fixed: a table ``{"train": ids, "val": ids, "test": ids}`` used instead of the seeded split when every
            available id appears in it (e.g. the ten AAPM-Mayo patients).
        where: the data set's folder, named in errors.

    Returns:
        Sorted subject ids.

    Raises:
        DataError: when an explicit id is not in the data set.
    """
    present = sorted(set(available))
    if subjects is not None:
        missing = sorted(set(subjects) - set(present))
        if missing:
            raise DataError(f"{where}: subjects {missing} requested but not found; found {present}")
        return sorted(set(subjects))
    name = normalize_split(split)
    if name == "all":
        return present
    if fixed is not None and set(present) <= {s for ids in fixed.values() for s in ids}:
        return sorted(s for s in fixed[name] if s in present)
    return assign_splits(present, counts, seed)[name]


# ---------------------------------------------------------------------------------------------------------------
# slice axes and in-plane orientation

AXIS_FAMILIES: dict[str, str] = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "S": "SI", "I": "SI"}
PLANE_AXIS: dict[str, str] = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}

# In-plane (rows, columns) directions as DICOM displays a slice (radiological convention): axial rows run
# anterior->posterior and columns right->left, coronal/sagittal rows run superior->inferior.
_TARGET_INPLANE: dict[str, tuple[str, str]] = {"SI": ("P", "L"), "AP": ("I", "L"), "LR": ("I", "P")}


def axis_family(code: str) -> str:
    """``"LR"``, ``"AP"`` or ``"SI"`` for an axis code such as ``"R"`` or ``"P"``."""
    return AXIS_FAMILIES[code.upper()]


def slice_axis_for_plane(affine: np.ndarray, plane: str = "axial") -> int:
    """The stored array axis whose direction is mostly along the plane's normal.

    Args:
        affine: 4x4 voxel-to-world (RAS) affine.
        plane: ``"axial"`` (normal S/I), ``"coronal"`` (A/P) or ``"sagittal"`` (L/R).

    Returns:
        0, 1 or 2.
    """
    family = PLANE_AXIS[plane]
    codes = aff2axcodes(affine)
    for axis, code in enumerate(codes[:3]):
        if code is not None and axis_family(code) == family:
            return axis
    raise ValueError(f"affine has no axis along {plane} normal ({codes})")


def inplane_target(slice_code: str) -> tuple[str, str]:
    """The (rows, columns) axis codes a slice is returned in, for a slice axis of code ``slice_code``."""
    return _TARGET_INPLANE[axis_family(slice_code)]


def orient_slice(array: np.ndarray, inplane_codes: Sequence[str], slice_code: str) -> np.ndarray:
    """Transpose / flip a 2-D slice into the house in-plane orientation.

    Args:
        array: the slice as stored, ``(H, W)``.
        inplane_codes: the directions its rows and columns increase towards (e.g. ``("R", "A")``).
        slice_code: the direction of the slice axis (e.g. ``"S"``), which picks the target.

    Returns:
        The reoriented slice (a view where possible): axial ``(P, L)``, coronal ``(I, L)``, sagittal ``(I, P)``.
    """
    target = inplane_target(slice_code)
    codes = [c.upper() for c in inplane_codes]
    if axis_family(codes[0]) != axis_family(target[0]):
        array = array.T
        codes = codes[::-1]
    for axis in (0, 1):
        if codes[axis] != target[axis]:
            array = np.flip(array, axis=axis)
    return array


def affine_from_axcodes(codes: Sequence[str], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A diagonal-like RAS affine whose array axes point along ``codes`` (e.g. ``("P", "L", "S")``).

    Args:
        codes: one axis code per array axis.
        spacing: voxel size per array axis, in mm.

    Returns:
        4x4 affine, origin 0.
    """
    world = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (code, step) in enumerate(zip(codes, spacing, strict=True)):
        row, sign = world[code.upper()]
        affine[row, axis] = sign * step
    return affine


def central_slices(num_slices: int, keep: int | None) -> range:
    """Indices of the ``keep`` central slices of ``num_slices`` (all of them when ``keep`` is None or larger)."""
    if keep is None or keep >= num_slices:
        return range(num_slices)
    start = (num_slices - keep) // 2
    return range(start, start + keep)


#: The plane each task's NIfTI volumes are cut along by the data builders (IXI and CT axial, PET coronal).
TASK_PLANES: dict[str, str] = {"mri": "axial", "ct": "axial", "pet": "coronal"}


def volume_slices(path: str | os.PathLike, plane: str = "axial", keep: int | None = None) -> list[dict[str, int]]:
    """The slices of a NIfTI volume cut along ``plane``, as data-list keys; only the header is read.

    The slice axis is the stored axis the affine says is mostly along the plane's normal
    (:func:`slice_axis_for_plane`), so a volume stored sagittally is still cut axially.

    Args:
        path: NIfTI volume.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        keep: central slices to keep (:func:`central_slices`; None: all).

    Returns:
        ``[{"slice": k, "slice_axis": a}, ...]`` in slice order.

    Raises:
        DataError: unreadable header, no axis along the plane's normal, or slices smaller than :data:`MIN_SIZE`.
    """
    info = nifti_info(path)
    axis = checked_slice_axis(path, info.shape, info.affine, plane)
    return [{"slice": int(k), "slice_axis": int(axis)} for k in central_slices(info.shape[axis], keep)]


def checked_slice_axis(path: str | os.PathLike, shape: Sequence[int], affine: np.ndarray, plane: str) -> int:
    """The stored axis a volume is cut along for ``plane``, checking its slices are large enough.

    Args:
        path: the volume's file, for the error messages.
        shape: the volume's 3-D shape.
        affine: its affine.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.

    Returns:
        The slice axis (:func:`slice_axis_for_plane`).

    Raises:
        DataError: no axis along the plane's normal, or slices smaller than :data:`MIN_SIZE`.
    """
    try:
        axis = slice_axis_for_plane(affine, plane)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from e
    inplane = [s for a, s in enumerate(shape) if a != axis]
    if min(inplane) < MIN_SIZE:
        raise DataError(f"{path}: {plane} slices of {inplane[0]}x{inplane[1]} px are smaller than {MIN_SIZE} px")
    return axis


def limit_per_task(items: Sequence[Mapping[str, Any]], max_per_task: int | None) -> list[Mapping[str, Any]]:
    """Keep the first ``max_per_task`` items of each task, in order (the released code validates on 32 per task).

    Args:
        items: data-list items with a ``"task"``.
        max_per_task: how many to keep per task; None keeps all.

    Returns:
        The kept items, in their original order.
    """
    if max_per_task is None:
        return list(items)
    seen: Counter[str] = Counter()
    kept = []
    for item in items:
        seen[item["task"]] += 1
        if seen[item["task"]] <= max_per_task:
            kept.append(item)
    return kept


# ---------------------------------------------------------------------------------------------------------------
# files


def list_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted regular files directly in ``folder``, hidden ones (``.DS_Store``...) left out."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class NiftiInfo:
    """Header facts of a NIfTI image: its 3-D shape (2-D images get a trailing 1) and RAS axis codes."""

    path: str
    shape: tuple[int, int, int]
    axcodes: tuple[str, str, str]
    affine: np.ndarray


def load_nifti(path: str | os.PathLike, max_voxels: int | None = MAX_INPUT_VOXELS) -> tuple[nib.Nifti1Image, NiftiInfo]:
    """Open a NIfTI image (header only; pixels stay behind the ``dataobj`` proxy) and check it is 2-D or 3-D.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        max_voxels: the most voxels its header may claim (the configs' ``max_input_voxels``); None: no limit
            (for readers of the header only).

    Returns:
        The nibabel image and its :class:`NiftiInfo`.

    Raises:
        DataError: unreadable file, a claim above ``max_voxels``, complex or colour values
            (:func:`~scripts.data.headers.check_nifti_header`), 4-D (more than one frame) or 1-D image, degenerate
            affine.
    """
    try:
        img = nib.load(os.fspath(path))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as e:  # nibabel raises several types for corrupt files
        raise DataError(f"{path}: cannot read NIfTI header ({type(e).__name__}: {e})") from e
    check_nifti_header(path, img.header, max_voxels)
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3-D volume
        shape = shape[:-1]
    if not 2 <= len(shape) <= 3:
        raise DataError(f"{path}: {len(shape)}-D image of shape {shape}; expected a 2-D slice or a 3-D volume")
    shape3 = (*shape, 1) if len(shape) == 2 else shape
    codes = tuple(c if c is not None else "?" for c in aff2axcodes(affine))
    if "?" in codes:
        raise DataError(f"{path}: affine {affine.tolist()} has a degenerate axis; cannot tell the slice direction")
    return img, NiftiInfo(os.fspath(path), shape3, codes, affine)  # type: ignore[arg-type]


def nifti_info(path: str | os.PathLike) -> NiftiInfo:
    """Header facts of a NIfTI image (see :func:`load_nifti`; only the header is read, so its size is not limited)."""
    return load_nifti(path, max_voxels=None)[1]


def nearest_value(values: Iterable[float], target: float) -> float:
    """The value closest to ``target`` on a log scale (dose-reduction factors are ratios); ties go to the lower."""
    return min(sorted(values), key=lambda v: abs(math.log(v) - math.log(target)))
