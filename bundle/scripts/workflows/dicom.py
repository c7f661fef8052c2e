"""DICOM inputs of a folder run: one input per series (grouped by SeriesInstanceUID), checked, read in slice order.

A folder may hold several series (two CT series, a CT and an MR, an image series beside a structured report).
:func:`scan_dicom_folder` reads the headers and groups the image files by ``SeriesInstanceUID``; each series is its
own input, named after its folder plus, when the folder holds several, its SeriesNumber (or a short UID).
:class:`DicomSeriesReader` (the reader of the bundle's ``LoadImaged``) reads a series given as its sorted files
(or as a folder holding one series) with ITK, as MONAI's own ``ITKReader`` does, after checking every file:
an image (not an RT Plan, SR, ...), pixel data complete, one size and orientation, no two slices at one place.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.data import ITKReader
from monai.utils import ensure_tuple, optional_import
from pydicom.uid import UID

from ..data.loading import is_nifti
from ..errors import UserInputError
from .naming import safe_component

itk, _ = optional_import("itk", allow_namespace_pkg=True)

__all__ = ["DicomSeries", "dicom_files", "read_dicom_header", "scan_dicom_folder", "DicomSeriesReader"]

logger = logging.getLogger(__name__)

# uncompressed transfer syntaxes, whose pixel data length can be checked against Rows x Columns x ...
_NATIVE = {pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian}


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM input: the image files of one series, sorted along the slice normal.

    Args:
        path: what names the input: the series' folder, or the file when it is a single file given or unreadable.
        files: the series' files, in slice order.
        uid: SeriesInstanceUID ("" for a file whose header cannot be read).
        modality: the Modality tag ("" if unknown).
        label: the series' label when its folder holds several series (SeriesNumber, else a short UID), else "".
    """

    path: Path
    files: tuple[Path, ...]
    uid: str = ""
    modality: str = ""
    label: str = ""

    @property
    def name(self) -> str:
        """The input as messages name it: the folder (with its series label) or the file."""
        return f"{self.path} (series {self.label})" if self.label else os.fspath(self.path)

    @property
    def source(self) -> list[str]:
        """What ``LoadImaged`` is given: the series' files, in slice order."""
        return [os.fspath(f) for f in self.files]

    def __str__(self) -> str:
        return self.name


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files (``DICM`` preamble) directly in ``folder``, hidden files and NIfTI left out, sorted by name."""
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if not is_nifti(p) and pydicom.misc.is_dicom(p))


def read_dicom_header(path: Path) -> pydicom.Dataset:
    """The header of a DICOM file, without its pixel data.

    Raises:
        UserInputError: the file cannot be parsed as DICOM, naming it.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:
        raise UserInputError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _is_image(ds: pydicom.Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds


def _kind(ds: pydicom.Dataset) -> str:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return UID(uid).name if uid else f"Modality {ds.get('Modality', '?')}"


def _not_an_image(path: Path, ds: pydicom.Dataset) -> UserInputError:
    return UserInputError(
        f"{path}: a DICOM {_kind(ds)} object, not an image (no pixel data); AMIR restores CT, MR and PET images"
    )


def _normal(ds: pydicom.Dataset) -> np.ndarray | None:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        return None
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def _sorted(files: Sequence[tuple[Path, pydicom.Dataset]]) -> list[tuple[Path, pydicom.Dataset]]:
    """Slice order: ascending along the slice normal (as ITK and GDCM expect); else InstanceNumber; else name."""
    normal = _normal(files[0][1])
    if normal is not None and all(_normal(ds) is not None for _, ds in files):
        return sorted(files, key=lambda f: float(np.dot(np.asarray(f[1].ImagePositionPatient, float), normal)))
    return sorted(files, key=lambda f: (int(f[1].get("InstanceNumber") or 0), f[0].name))


_IS = r"[+-]?[0-9]{1,12}"  # an Integer String (SeriesNumber)
_UI = r"[0-9][0-9.]{0,63}"  # a Unique Identifier


def _uid_label(uid: str, path: Path, whole: bool = False) -> str:
    """A series' UID as a name part: its last 8 digits (``whole``: all, dots as ``_``); a hash for a malformed UID."""
    uid = safe_component(uid, path, "SeriesInstanceUID", pattern=_UI)
    return uid.replace(".", "_") if whole else uid.replace(".", "")[-8:]


def _series_labels(groups: dict[str, list[tuple[Path, pydicom.Dataset]]]) -> dict[str, str]:
    """SeriesNumber when set, a plain number and unique in the folder, else the UID's last 8 digits (the whole UID
    if they clash). A tag that is no valid value (``..``, ``/``, control characters, too long) is not used, with
    a warning naming the file (see :mod:`.naming`)."""
    numbers = {}
    for uid, files in groups.items():
        path, number = files[0][0], str(files[0][1].get("SeriesNumber", "") or "").strip()
        if number and re.fullmatch(_IS, number) is None:
            safe_component(number, path, "SeriesNumber", _uid_label(uid, path), pattern=_IS)  # the warning
            number = ""  # the series is named by its UID
        numbers[uid] = number
    labels = {}
    for uid, number in numbers.items():
        if number and list(numbers.values()).count(number) == 1:
            labels[uid] = f"series{number}"
        else:
            labels[uid] = _uid_label(uid, groups[uid][0][0])
    clashes = {u for u, label in labels.items() if list(labels.values()).count(label) > 1}
    return {u: (_uid_label(u, groups[u][0][0], whole=True) if u in clashes else label) for u, label in labels.items()}


def scan_dicom_folder(folder: Path, files: Sequence[Path] | None = None) -> list[DicomSeries]:
    """The DICOM inputs of a folder: one per image series; only headers are read.

    Objects that are not images (RT Plan, SR, ...) beside an image series are left out with a warning; a folder of
    such objects only is one input, which fails naming them when read. A file whose header cannot be read is an
    input of its own, which fails naming it.

    Args:
        folder: a folder.
        files: its DICOM files (default: :func:`dicom_files`).

    Returns:
        The inputs, in the order of their first file name.
    """
    files = dicom_files(folder) if files is None else list(files)
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    bad, others = [], []
    for path in files:
        try:
            ds = read_dicom_header(path)
        except UserInputError:
            bad.append(path)
            continue
        if _is_image(ds):
            groups[str(ds.get("SeriesInstanceUID", ""))].append((path, ds))
        else:
            others.append((path, ds))
    inputs = [DicomSeries(path, (path,)) for path in bad]
    if not groups and others:
        inputs.append(DicomSeries(folder, tuple(p for p, _ in others)))
    for path, ds in others if groups else ():
        logger.warning(f"{path}: a DICOM {_kind(ds)} object, not an image: left out")
    labels = _series_labels(groups) if len(groups) > 1 else {}
    for uid, members in groups.items():
        ordered = _sorted(members)
        modality = str(ordered[0][1].get("Modality", "")).strip()
        inputs.append(DicomSeries(folder, tuple(p for p, _ in ordered), uid, modality, labels.get(uid, "")))
    return sorted(inputs, key=lambda s: min(s.files))


def _check_file(path: Path) -> pydicom.Dataset:
    """Read a file whole and check that its pixel data is there and complete; returns its header."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise UserInputError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    if not _is_image(ds) or "PixelData" not in ds:
        raise _not_an_image(path, ds)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax in _NATIVE:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * frames * ds.BitsAllocated // 8
        if len(ds.PixelData) < expected:
            raise UserInputError(
                f"{path}: truncated DICOM: {len(ds.PixelData)} bytes of pixel data where {ds.Rows}x{ds.Columns}"
                f" pixels need {expected}"
            )
    del ds.PixelData  # checked; ITK reads the pixels
    return ds


def check_series(files: Sequence[Path]) -> list[Path]:
    """Check the files of one series (each an image, complete, one size and orientation, distinct positions).

    Args:
        files: the series' files.

    Returns:
        The files in slice order.

    Raises:
        UserInputError: the first problem, naming the file(s).
    """
    headers = [(Path(f), _check_file(Path(f))) for f in files]
    first, ds0 = headers[0]
    if len(headers) > 1 and int(ds0.get("NumberOfFrames", 1) or 1) > 1:
        raise UserInputError(f"{first}: a multi-frame file within a series of {len(headers)} files")
    for path, ds in headers[1:]:
        if str(ds.get("SeriesInstanceUID", "")) != str(ds0.get("SeriesInstanceUID", "")):
            raise UserInputError(f"{path} and {first}: two series given as one input")
        if (ds.Rows, ds.Columns) != (ds0.Rows, ds0.Columns):
            raise UserInputError(
                f"{path}: slice of {ds.Rows}x{ds.Columns} pixels in a series of {ds0.Rows}x{ds0.Columns} ({first})"
            )
        if not np.allclose(ds.get("ImageOrientationPatient", []), ds0.get("ImageOrientationPatient", []), atol=1e-4):
            raise UserInputError(f"{path}: slice orientation differs from the rest of its series ({first})")
    ordered = _sorted(headers)
    normal = _normal(ds0)
    if normal is not None and len(ordered) > 1:
        depth = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for _, ds in ordered]
        for k in np.flatnonzero(np.diff(depth) < 1e-3):
            raise UserInputError(
                f"{ordered[k][0]} and {ordered[k + 1][0]}: two slices at one position in one series "
                "(two acquisitions under one SeriesInstanceUID?); separate them"
            )
    return [path for path, _ in ordered]


def _series_of(data: Sequence[os.PathLike | str] | os.PathLike | str) -> list[Path]:
    """The files of the one series that ``data`` (a folder, a file or a series' files) stands for."""
    names = [Path(os.fspath(n)) for n in ensure_tuple(data)]
    if len(names) == 1 and names[0].is_dir():
        folder = names[0]
        inputs = scan_dicom_folder(folder)
        if not inputs:
            raise UserInputError(f"{folder}: holds no DICOM file")
        if len(inputs) > 1:
            raise UserInputError(
                f"{folder}: holds {len(inputs)} DICOM series ({', '.join(i.label or i.name for i in inputs)}); "
                "give the folder to the bundle's folder inference, which restores each series on its own"
            )
        return list(inputs[0].files)
    return names


class DicomSeriesReader(ITKReader):
    """MONAI ``ITKReader`` for one checked DICOM series: a folder holding one series, one file, or a series' files.

    Every file is checked first (see :func:`check_series`) and the files are read in slice order (ascending along
    the slice normal), so the volume and its affine are those of MONAI's ``ITKReader`` on a one-series folder.
    NIfTI and other formats are left to the other readers of ``LoadImage``.

    Args:
        kwargs: passed to ``ITKReader``.
    """

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True for a folder, or for files that are all DICOM (not NIfTI)."""
        names = [Path(os.fspath(n)) for n in ensure_tuple(filename)]
        if len(names) == 1 and names[0].is_dir():
            return True
        return all(p.is_file() and not is_nifti(p) for p in names) and all(pydicom.misc.is_dicom(p) for p in names)

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs):
        """The series as one ITK image.

        Raises:
            UserInputError: the input is not one readable image series; the message names the file.
        """
        files = check_series(_series_of(data))
        names = [os.fspath(f) for f in files]
        try:
            return itk.imread(names if len(names) > 1 else names[0], **{**self.kwargs, **kwargs})
        except Exception as e:
            raise UserInputError(f"{files[0]}: ITK cannot read the series ({type(e).__name__}: {e})") from e
