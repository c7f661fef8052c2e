"""DICOM slice headers and the pairing of two series of one volume (full and low dose) slice by slice."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from .slices import MIN_SIZE, DataError, list_files

__all__ = ["DicomSliceHeader", "read_dicom_header", "read_dicom_series", "pair_dicom_series"]


_HEADER_TAGS = [
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SeriesNumber",
]


@dataclass(frozen=True)
class DicomSliceHeader:
    """What pairing needs from one DICOM slice file."""

    path: str
    instance: int | None
    position: float | None  # along the slice normal, mm
    rows: int
    columns: int


def read_dicom_header(path: str | os.PathLike) -> DicomSliceHeader:
    """Read the header of one single-frame DICOM slice without its pixels.

    Args:
        path: DICOM file.

    Returns:
        :class:`DicomSliceHeader`; ``position`` is ImagePositionPatient projected on the slice normal (from
        ImageOrientationPatient), else SliceLocation, else None.

    Raises:
        DataError: not DICOM, no image, multi-frame, or smaller than :data:`MIN_SIZE`.
    """
    try:
        ds = pydicom.dcmread(os.fspath(path), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as e:
        raise DataError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{path}: DICOM file holds no image (no Rows/Columns)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames); expected one slice per file")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if min(rows, cols) < MIN_SIZE:
        raise DataError(f"{path}: image of {rows}x{cols} px is smaller than {MIN_SIZE} px")
    position = None
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        position = float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal))
    elif "SliceLocation" in ds:
        position = float(ds.SliceLocation)
    instance = int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None
    return DicomSliceHeader(os.fspath(path), instance, position, rows, cols)


def read_dicom_series(folder: str | os.PathLike) -> list[DicomSliceHeader]:
    """Headers of every slice file in a series folder.

    Raises:
        DataError: empty folder, or any file that is not a single-slice DICOM image.
    """
    files = list_files(folder)
    if not files:
        raise DataError(f"{folder}: no files in DICOM series folder")
    return [read_dicom_header(f) for f in files]


def _unique_keys(series: Sequence[DicomSliceHeader], attr: str) -> bool:
    values = [getattr(h, attr) for h in series]
    return None not in values and len(set(values)) == len(values)


def _keyed(series: Sequence[DicomSliceHeader], attr: str, name: str) -> list[DicomSliceHeader]:
    """Sort by ``attr``; a missing or repeated value is an error naming the files."""
    for h in series:
        if getattr(h, attr) is None:
            raise DataError(f"{h.path}: no {name} to pair full- and low-dose slices by")
    ordered = sorted(series, key=lambda h: getattr(h, attr))
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        if getattr(a, attr) == getattr(b, attr):
            raise DataError(f"{a.path} and {b.path}: same {name} ({getattr(a, attr)}) in one series")
    return ordered


def pair_dicom_series(
    hq: Sequence[DicomSliceHeader], lq: Sequence[DicomSliceHeader], pair_by: str = "auto", tolerance: float = 0.05
) -> list[tuple[DicomSliceHeader, DicomSliceHeader]]:
    """Pair the slices of two series of one volume (e.g. full- and quarter-dose) by slice position or instance.

    File names and series numbers of the two series differ, so neither is used.

    Args:
        hq: headers of the high-quality series.
        lq: headers of the low-quality series.
        pair_by: ``"position"`` (along the slice normal; the nearest LQ slice within ``tolerance`` mm),
            ``"instance"`` (InstanceNumber) or ``"auto"`` (position when every slice of both series has a distinct
            one, else instance).
        tolerance: position tolerance in mm.

    Returns:
        ``(hq, lq)`` pairs sorted by the HQ key.

    Raises:
        DataError: a key is missing or repeated, a slice has no partner, or the two slices differ in size; the
            message names the files.
    """
    if pair_by not in ("auto", "position", "instance"):
        raise ValueError(f"pair_by must be 'auto', 'position' or 'instance', got {pair_by!r}")
    attr = pair_by
    if pair_by == "auto":
        attr = "position" if _unique_keys(hq, "position") and _unique_keys(lq, "position") else "instance"
    name = "slice position" if attr == "position" else "InstanceNumber"
    hq_sorted, lq_sorted = _keyed(hq, attr, name), _keyed(lq, attr, name)
    lq_keys = np.asarray([getattr(h, attr) for h in lq_sorted], dtype=float)
    pairs, used = [], set()
    unpaired = []
    for h in hq_sorted:
        key = float(getattr(h, attr))
        j = int(np.argmin(np.abs(lq_keys - key))) if len(lq_keys) else -1
        limit = tolerance if attr == "position" else 0.0
        if j < 0 or abs(lq_keys[j] - key) > limit or j in used:
            unpaired.append(h.path)
            continue
        used.add(j)
        pairs.append((h, lq_sorted[j]))
    unpaired += [h.path for j, h in enumerate(lq_sorted) if j not in used]
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else "")
        raise DataError(f"{len(unpaired)} DICOM slice(s) have no partner of the same {name}: {shown}")
    for a, b in pairs:
        if (a.rows, a.columns) != (b.rows, b.columns):
            raise DataError(f"{a.path} ({a.rows}x{a.columns}) and {b.path} ({b.rows}x{b.columns}): LQ/HQ sizes differ")
    return pairs
