"""DICOM in, DICOM out: the restoration of a DICOM series as a new derived series beside the NIfTI output.

Each output slice is a copy of the input slice's header (patient, study, frame of reference, acquisition) with
what a derived image must change: new Series and SOP Instance UIDs, ``ImageType`` ``DERIVED\\SECONDARY``, a series
description and derivation description naming this bundle and its version, a reference to the source slice, and
the restored pixels as uint16 with the ``RescaleSlope`` / ``RescaleIntercept`` that hold them in the input's units
(HU for CT; for PET the input's ``Units``, SUV or Bq/ml, the network's SUV converted back with the factor the
inference used; scanner units for MR). Geometry (``ImagePositionPatient``, ``ImageOrientationPatient``,
``PixelSpacing``, ``SliceThickness``) is the input's, or the finer in-plane grid of a zero-filled MRI. The
datasets are built with pydicom (``Dataset.set_pixel_data``) and written into a temporary folder that is renamed
into place, so an output series is complete or absent; the folder also holds the record of what made it
(:data:`~scripts.workflows.provenance.SERIES_RECORD`), so a rerun tells a current series from a stale one.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.utils import convert_to_numpy
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from ..atomic import atomic_folder, remove_stale_temporaries
from ..errors import UserInputError
from ..ownership import MARKER, folder_kind
from ..transforms import suv_from_dicom
from .inputs import MODALITY_ALIASES, canonical_modality
from .provenance import SERIES_RECORD, read_series_record, record_differences

__all__ = [
    "DICOM_OUTPUT_KIND",
    "OUTPUT_FORMATS",
    "bundle_identity",
    "derived_series",
    "read_series_headers",
    "rescale_for",
    "series_output_status",
    "series_task",
    "write_dicom_series",
    "write_series_folder",
]

#: ``output_format`` values: ``auto`` writes DICOM for a DICOM series and NIfTI for a NIfTI file.
OUTPUT_FORMATS = ("auto", "nifti", "dicom")
#: The ownership marker's kind of an output series folder (see :mod:`scripts.ownership`).
DICOM_OUTPUT_KIND = "dicom-output"

_BUNDLE_ROOT = Path(__file__).resolve().parents[2]
# Attributes of the source that would be wrong for the new pixels (their values are in the source's stored units).
_STALE = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "IconImageSequence",
    "RescaleType",
)


@functools.lru_cache(maxsize=4)  # read once, not for every series written
def bundle_identity(metadata: str | os.PathLike | None = None) -> tuple[str, str]:
    """The bundle's name and version, from ``configs/metadata.json``."""
    path = Path(metadata) if metadata else _BUNDLE_ROOT / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    return "AMIR bundle", str(meta.get("version", "unknown"))


def read_series_headers(
    source: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
) -> list[pydicom.Dataset]:
    """The headers (no pixels) of one DICOM series: the given files in their order, or a folder's in name order.

    Args:
        source: the series' files (e.g. a ``DicomSeries``' files, in slice order), or a folder holding one series.
        series_uid: the SeriesInstanceUID to take from a folder holding several series.

    Raises:
        UserInputError: no DICOM image, several series and no ``series_uid``, or a multi-frame image.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
    else:
        files = [Path(f) for f in source]
        path = files[0].parent if files else Path()
    headers = []
    for f in files:
        if pydicom.misc.is_dicom(f):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            if ds.get("Rows"):  # images only (not a DICOMDIR, SR, ...)
                headers.append(ds)
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in headers}
    if series_uid is not None:
        headers = [ds for ds in headers if str(ds.get("SeriesInstanceUID", "")) == series_uid]
    elif len(series) > 1:
        raise UserInputError(f"{path}: holds {len(series)} DICOM series; DICOM output needs one series per input.")
    if not headers:
        raise UserInputError(f"{path}: no DICOM image to derive the output series from.")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in headers):
        raise UserInputError(f"{path}: multi-frame DICOM is not written back as DICOM; use output_format nifti.")
    return headers


def series_task(headers: Sequence[pydicom.Dataset], modality: str | None = None) -> str:
    """The task of a series as the inference resolves it: its Modality tag (MR, CT, PT), else ``modality``.

    Raises:
        UserInputError: the tag is none of those and no ``modality`` is given.
    """
    tag = str(headers[0].get("Modality", "")).strip()
    task = MODALITY_ALIASES.get(tag.lower())
    if task is None and not modality:
        raise UserInputError(f"DICOM Modality {tag!r} is not MR, CT or PT; give the modality")
    return task or canonical_modality(modality)


def series_output_status(path: str | os.PathLike, record: Mapping[str, Any] | None = None) -> str:
    """What is at an output series' path: ``"missing"``, ``"complete"`` (a series folder the bundle wrote: it is
    renamed into place whole), ``"foreign"`` (anything else, never replaced), or, given the ``record`` this run
    would write, ``"stale"`` (the bundle's, made from other inputs, weights or settings, or without a record)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return "missing"
    if path.is_symlink() or not path.is_dir() or folder_kind(path) != DICOM_OUTPUT_KIND:
        return "foreign"
    if record is not None and record_differences(read_series_record(path), record):
        return "stale"
    return "complete"


def rescale_for(values: np.ndarray, quantum: float | None) -> tuple[float, float]:
    """``(slope, intercept)`` that hold ``values`` as uint16 stored values (``value = stored * slope + intercept``).

    Args:
        values: the values to store (finite).
        quantum: the step to keep (1 for CT's integer HU, the input's slope for MR); None: the finest step that
            spans the range, with intercept 0 for non-negative values (PET's convention).

    Returns:
        Slope and intercept, each exactly representable as a DICOM decimal string.
    """
    lo, hi = float(values.min()), float(values.max())
    margin = 1.0 + 1e-9  # the decimal string may round the slope down; keep the largest value below 65535 steps
    if quantum:
        intercept = float(np.floor(lo / quantum) * quantum)
        slope = max(float(quantum), (hi - intercept) / 65535.0 * margin)
    else:
        intercept = min(lo, 0.0)
        slope = (hi - intercept) / 65535.0 * margin if hi > intercept else 1.0
    return float(DSfloat(slope, auto_format=True)), float(DSfloat(intercept, auto_format=True))


def _slice_pixels(volume: np.ndarray, affine_lps: np.ndarray, header: pydicom.Dataset) -> tuple[np.ndarray, dict]:
    """The restored pixels of one source slice (rows, columns) and the geometry of the output slice.

    The source plane is found in the restoration's voxel grid: its in-plane directions must be axes of the grid
    and its position a whole slice of it. The output slice keeps the source's orientation; its position and pixel
    spacing are the grid's (the source's, or a zero-filled MRI's finer grid).
    """
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in header:
            raise UserInputError(f"a slice has no {keyword}; DICOM output needs the geometry: use output_format nifti.")
    position = np.asarray(header.ImagePositionPatient, dtype=np.float64)
    orientation = np.asarray(header.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (columns increase), along a column (rows)
    to_voxel = np.linalg.inv(affine_lps)
    voxel = to_voxel[:3, :3] @ position + to_voxel[:3, 3]
    axes, signs = [], []
    for direction in (col_dir, row_dir):  # output rows, then output columns
        step = to_voxel[:3, :3] @ direction
        axis = int(np.argmax(np.abs(step)))
        if abs(abs(step[axis]) - np.linalg.norm(step)) > 1e-3 * np.linalg.norm(step):
            raise UserInputError("the restored grid's axes are not the series' row and column directions.")
        axes.append(axis)
        signs.append(1 if step[axis] > 0 else -1)
    if axes[0] == axes[1]:
        raise UserInputError("the slice's row and column directions are one axis of the restored grid.")
    (slice_axis,) = {0, 1, 2} - set(axes)
    k = round(voxel[slice_axis])
    if abs(voxel[slice_axis] - k) > 1e-3 or not 0 <= k < volume.shape[slice_axis]:
        raise UserInputError(f"slice at {list(position)} mm is not a slice of the restored volume.")
    plane = np.moveaxis(volume, (axes[0], axes[1], slice_axis), (0, 1, 2))[:, :, k]
    plane = plane[:: signs[0], :: signs[1]]
    first = np.zeros(3)
    first[axes[0]] = 0 if signs[0] > 0 else volume.shape[axes[0]] - 1
    first[axes[1]] = 0 if signs[1] > 0 else volume.shape[axes[1]] - 1
    first[slice_axis] = k
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    geometry = {
        "ImagePositionPatient": affine_lps[:3, :3] @ first + affine_lps[:3, 3],
        "PixelSpacing": [spacing[axes[0]], spacing[axes[1]]],  # row spacing (between rows), column spacing
    }
    return np.ascontiguousarray(plane), geometry


def _units_factor(task: str, header: pydicom.Dataset, suv_factor: float | None) -> float:
    """What the restoration (HU, scanner units, SUV) is multiplied by to be in the input's units."""
    if task != "pet" or str(header.get("Units", "")).strip().upper() != "BQML":
        return 1.0
    return 1.0 / (suv_factor if suv_factor else suv_from_dicom(header))  # the network works in SUV


def _series_number(header: pydicom.Dataset) -> int:
    """The source's SeriesNumber, 0 when it is missing or not an integer (a malformed tag never stops the output)."""
    try:
        return int(header.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def derived_series(
    pred: MetaTensor,
    headers: Sequence[pydicom.Dataset],
    task: str,
    suv_factor: float | None = None,
    description: str | None = None,
) -> list[pydicom.Dataset]:
    """The restoration as a new derived series: one dataset per source slice, in the source's order.

    Args:
        pred: ``(1, X, Y, Z)`` restoration with its RAS affine (MONAI's), in HU / scanner units / SUV.
        headers: the source series' headers (:func:`read_series_headers`).
        task: ``"ct"``, ``"mri"`` or ``"pet"``.
        suv_factor: the SUV factor the inference used for PET in Bq/ml (default: from the first header).
        description: the series description (default: "restored by AMIR bundle <version>" after the source's).

    Returns:
        pydicom datasets with file meta, ready to save.

    Raises:
        UserInputError: the restoration's grid does not hold the source slices, or the geometry is missing.
    """
    volume = convert_to_numpy(pred, dtype=np.float64)[0]
    if volume.ndim == 2:
        volume = volume[..., None]
    if not np.isfinite(volume).all():
        raise ValueError("the restoration holds non-finite values; no DICOM written.")
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ to_affine_nd(3, convert_to_numpy(pred.affine, dtype=np.float64))
    name, version = bundle_identity()
    factor = _units_factor(task, headers[0], suv_factor)
    planes = [_slice_pixels(volume, affine_lps, h) for h in headers]
    values = np.stack([p for p, _ in planes]) * factor
    source_slope = float(headers[0].get("RescaleSlope", 1) or 1)
    slope, intercept = rescale_for(values, {"ct": 1.0, "mri": source_slope}.get(task))
    stored = np.clip(np.rint((values - intercept) / slope), 0, 65535).astype(np.uint16)
    series_uid, now = generate_uid(), datetime.datetime.now()
    datasets = []
    for header, (_, geometry), pixels in zip(headers, planes, stored, strict=True):
        ds = copy.deepcopy(header)
        for keyword in _STALE:
            if keyword in ds:
                delattr(ds, keyword)
        _set_pixel_data(ds, pixels)  # Rows, Columns, Bits*, new SOP Instance UID
        ds.RescaleSlope, ds.RescaleIntercept = DSfloat(slope, auto_format=True), DSfloat(intercept, auto_format=True)
        if task == "ct":
            ds.RescaleType = "HU"
        source_description = str(header.get("SeriesDescription", "")).strip()
        default = f"{source_description} restored by {name} {version}".strip()
        ds.SeriesDescription = (description or default)[-64:]  # LO: 64 characters, keep the bundle's name
        ds.DerivationDescription = (
            f"Restored by the {name} {version} ({task}); a network's estimate, not for diagnosis."
        )
        ds.ImageType = ["DERIVED", "SECONDARY", *list(header.get("ImageType", []))[2:]]
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = _series_number(header) + 1000
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
        ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
        ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in geometry["ImagePositionPatient"]]
        ds.PixelSpacing = [DSfloat(v, auto_format=True) for v in geometry["PixelSpacing"]]
        reference = pydicom.Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = header.SOPClassUID, header.SOPInstanceUID
        ds.SourceImageSequence = [reference]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
            ds.SOPClassUID,
            ds.SOPInstanceUID,
        )
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        datasets.append(ds)
    return datasets


def _set_pixel_data(ds: pydicom.Dataset, pixels: np.ndarray) -> None:
    """``ds.set_pixel_data(pixels, "MONOCHROME2", 16)`` of pydicom 3; the same elements under pydicom 2 (MONAI
    Label's environment, ``pydicom<3``), which lacks it."""
    if hasattr(ds, "set_pixel_data"):
        ds.set_pixel_data(pixels, "MONOCHROME2", 16)
        return
    for keyword in ("NumberOfFrames", "PlanarConfiguration"):
        if keyword in ds:
            del ds[keyword]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False
    ds.SOPInstanceUID = generate_uid()


def _save_as(ds: pydicom.Dataset, path: Path) -> None:
    """Save ``ds`` as a DICOM file (preamble, file meta) in its file meta's explicit VR little endian, with
    pydicom 3 or 2."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
        return
    ds.is_little_endian, ds.is_implicit_VR = True, False  # pydicom 2 encodes by these, not by the file meta
    ds.save_as(path, write_like_original=False)


def write_series_folder(
    datasets: Sequence[pydicom.Dataset],
    target: str | os.PathLike,
    overwrite: bool = False,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``datasets`` as the files of the folder ``target``, atomically (temporary folder, then rename).

    The folder carries the bundle's marker (:data:`~scripts.ownership.MARKER`, a hidden file DICOM readers skip),
    so that a later run may replace it with ``overwrite``; a folder without it is never replaced. Temporary
    folders an interrupted earlier run left (:func:`scripts.atomic.remove_stale_temporaries`) are removed first.

    Args:
        datasets: the series' datasets with file meta.
        target: the output folder.
        overwrite: replace an existing output series folder the bundle wrote.
        record: what made the series (:func:`~scripts.workflows.provenance.make_record`), written into the folder.

    Returns:
        ``target``.

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is false.
        UserInputError: ``target`` exists and is not a series folder the bundle wrote.
    """
    target = Path(target)
    remove_stale_temporaries(target.parent)  # what a killed earlier write left
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; overwrite=true replaces it.")
        if not target.is_dir() or folder_kind(target) != DICOM_OUTPUT_KIND:
            raise UserInputError(f"{target} exists and was not written by the bundle (no {MARKER}); left untouched.")
    with atomic_folder(target, DICOM_OUTPUT_KIND) as tmp:
        width = max(4, len(str(len(datasets))))
        for index, ds in enumerate(datasets):
            path = tmp / f"{index + 1:0{width}d}.dcm"
            _save_as(ds, path)
            os.chmod(path, 0o644)
        if record is not None:
            (tmp / SERIES_RECORD).write_text(json.dumps(record, sort_keys=True) + "\n")
    return target


def write_dicom_series(
    pred: MetaTensor,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    target: str | os.PathLike,
    task: str,
    overwrite: bool = False,
    suv_factor: float | None = None,
    series_uid: str | None = None,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Write the restoration of the DICOM series ``source`` as a derived series in the folder ``target``.

    Args:
        pred: ``(1, X, Y, Z)`` restoration with its affine, in HU / scanner units / SUV (the inference's output).
        source: the input series' files (in the order the inference read them: its first file's header gave the
            SUV factor of PET in Bq/ml) or its folder.
        target: the output folder (created; see :func:`write_series_folder`).
        task: ``"ct"``, ``"mri"`` or ``"pet"``.
        overwrite: replace an output series the bundle wrote before.
        suv_factor: the SUV factor the inference used for PET in Bq/ml (default: from the series' first file).
        series_uid: which series of ``source`` (default: its only one).
        record: what made the series, written into its folder (see :func:`write_series_folder`).

    Returns:
        ``target``.
    """
    headers = read_series_headers(source, series_uid)
    try:
        datasets = derived_series(pred, headers, task, suv_factor)
    except UserInputError as e:
        name = source if isinstance(source, (str, os.PathLike)) else Path(next(iter(source))).parent
        raise UserInputError(f"{name}: {e}") from e
    return write_series_folder(datasets, target, overwrite, record)
