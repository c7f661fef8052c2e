"""AAPM-Mayo (2016 Low-Dose CT Grand Challenge) data list: paired full / quarter-dose DICOM slices.

Recognised series folders (case-insensitive, ``_`` or ``-`` separators optional), found at any depth:
``{full,quarter}_{1,3}mm`` (kernel B30, the challenge's default series), ``{full,quarter}_{1,3}mm_sharp`` (kernel
D45), also with the kernel written out (``full_1mm_B30``, ``quarter_3mm_D45``, ``..._smooth``) and ``FD``/``QD``
for full/quarter. The patient id is the nearest enclosing folder named like ``L067`` (a letter and three digits),
else the series folder's parent. So both ``<root>/L067/full_1mm/*.IMA`` and
``<root>/full_1mm/L067/full_1mm/*.IMA`` work. Slices are paired by position along the slice normal (or by
InstanceNumber when positions are missing), from headers only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..transforms.random_dose_dict import ACQUIRED_KEY
from .dicom_series import pair_dicom_series, read_dicom_series
from .folders import walk_folders
from .slices import DataError, select_subjects

__all__ = [
    "MAYO_PATIENTS",
    "MAYO_SPLIT",
    "MAYO_SPLIT_COUNTS",
    "parse_mayo_series",
    "find_mayo_series",
    "build_mayo_datalist",
]

MAYO_PATIENTS: tuple[str, ...] = ("L067", "L096", "L109", "L143", "L192", "L286", "L291", "L310", "L333", "L506")
# The fixed 8 / 1 / 1 split used when every patient found is one of the ten: test on L506 (the patient most
# low-dose CT papers hold out), validate on L333, train on the other eight.
MAYO_SPLIT: dict[str, tuple[str, ...]] = {"train": MAYO_PATIENTS[:8], "val": ("L333",), "test": ("L506",)}
MAYO_SPLIT_COUNTS: tuple[int, int, int] = (8, 1, 1)  # for other patient sets (seeded proportional split)

_SERIES = re.compile(r"^(full|quarter|fd|qd)[_-]?([13])[_-]?mm(?:[_-]?(sharp|smooth|b30|d45|b30f|d45f))?$", re.I)
_PATIENT = re.compile(r"^[A-Z]\d{3}$", re.I)
_KERNELS = {None: "B30", "smooth": "B30", "b30": "B30", "b30f": "B30", "sharp": "D45", "d45": "D45", "d45f": "D45"}


def parse_mayo_series(name: str) -> tuple[str, int, str] | None:
    """``(dose, thickness_mm, kernel)`` of a series folder name, e.g. ``("quarter", 1, "D45")``; None if not one."""
    match = _SERIES.match(name)
    if match is None:
        return None
    dose = "full" if match.group(1).lower() in ("full", "fd") else "quarter"
    kernel = match.group(3).lower() if match.group(3) else None
    return dose, int(match.group(2)), _KERNELS[kernel]


def _normalize_kernel(kernel: str) -> str:
    key = kernel.lower()
    if key not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: B30 (smooth, default) or D45 (sharp)")
    return _KERNELS[key]


def find_mayo_series(dataset_dir: str | os.PathLike) -> dict[tuple[str, str, int, str], Path]:
    """Every Mayo series folder under ``dataset_dir``.

    Args:
        dataset_dir: the data set's root, in either layout.

    Returns:
        ``{(patient, dose, thickness_mm, kernel): folder}``.

    Raises:
        DataError: missing root, no series folder, or two folders for one series.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"{root}: AAPM-Mayo folder not found")
    found: dict[tuple[str, str, int, str], Path] = {}
    for folder, _, filenames in walk_folders(root):  # linked folders once each
        parsed = parse_mayo_series(folder.name)
        if parsed is None or not any(not f.startswith(".") for f in filenames):
            continue
        parents = folder.relative_to(root).parts[:-1]
        patient = next((p for p in reversed(parents) if _PATIENT.match(p)), None)
        if patient is None:
            patient = folder.parent.name if folder.parent != root else root.name
        key = (patient.upper(), *parsed)
        if key in found:
            raise DataError(f"{found[key]} and {folder}: two folders for patient {key[0]} series {folder.name}")
        found[key] = folder
    if not found:
        raise DataError(f"{root}: no AAPM-Mayo series folder (full_1mm, quarter_1mm, ...) holding files")
    return found


def build_mayo_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    slice_thickness: int = 1,
    kernel: str = "B30",
    pair_by: str = "auto",
    seed: int = 0,
    subjects: Sequence[str] | None = None,
    split_counts: Sequence[int] = MAYO_SPLIT_COUNTS,
) -> list[dict]:
    """Data list of paired AAPM-Mayo slices for low-dose CT denoising.

    Args:
        dataset_dir: the data set's root (see the module docstring for layouts).
        split: ``train``, ``val``, ``test`` or ``all``: the fixed :data:`MAYO_SPLIT` when every patient found is
            one of the ten challenge patients, else a proportional 8 / 1 / 1 split seeded by ``seed``.
        slice_thickness: 1 or 3 (mm).
        kernel: ``"B30"`` (smooth, default) or ``"D45"`` (sharp); ``"smooth"`` / ``"sharp"`` also accepted.
        pair_by: ``"auto"``, ``"position"`` or ``"instance"`` (see :func:`scripts.data.dicom_series.pair_dicom_series`).
        seed: seed of the proportional split.
        subjects: explicit patient ids, overriding ``split``.
        split_counts: reference sizes of the proportional split.

    Returns:
        Items ``{"image": quarter.IMA, "label": full.IMA, "task": "ct", "subject": patient}`` sorted by
        patient then slice position.

    Raises:
        DataError: no series of that thickness / kernel, a patient lacking the full or quarter series, unreadable
            headers, or slices that do not pair.
    """
    if slice_thickness not in (1, 3):
        raise ValueError(f"slice_thickness must be 1 or 3 (mm), got {slice_thickness!r}")
    kernel = _normalize_kernel(kernel)
    series = find_mayo_series(dataset_dir)
    wanted = {(p, d): f for (p, d, t, k), f in series.items() if t == slice_thickness and k == kernel}
    if not wanted:
        kinds = sorted({f"{t}mm {k}" for (_, _, t, k) in series})
        raise DataError(f"{dataset_dir}: no {slice_thickness}mm {kernel} series; found {', '.join(kinds)}")
    patients = sorted({p for p, _ in wanted})
    for p in patients:
        for dose, other in (("full", "quarter"), ("quarter", "full")):
            if (p, dose) not in wanted:
                raise DataError(f"{wanted[(p, other)]}: patient {p} has no matching {dose}-dose series")
    chosen = select_subjects(
        patients, split, split_counts, seed, subjects=subjects, fixed=MAYO_SPLIT, where=os.fspath(dataset_dir)
    )
    items = []
    for patient in chosen:
        full = read_dicom_series(wanted[(patient, "full")])
        quarter = read_dicom_series(wanted[(patient, "quarter")])
        for hq, lq in pair_dicom_series(full, quarter, pair_by=pair_by):
            items.append({"image": lq.path, "label": hq.path, "task": "ct", "subject": patient, ACQUIRED_KEY: True})
    return items
