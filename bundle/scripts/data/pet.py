"""Low-dose PET data list: paired full / reduced-dose volumes (NIfTI or DICOM series), or full dose + simulation.

Dose entries are recognised by name (case-insensitive; spaces, ``_``, ``-`` and ``.`` interchangeable; see
:func:`parse_drf`): full dose (DRF 1) is ``Full_dose``, ``full``, ``normal``, ``normal_dose``, ``standard``,
``FD``, ``HD``; reduced dose is ``1-4 dose``, ``1_10_dose``, ``1-100``, ``D12``, ``DRF_12``, ``drf12``, ``LD12``.
An entry is a NIfTI file (``<subject>/Full_dose.nii.gz``) or a folder of single-slice DICOM files
(``<subject>/1-4 dose/*.dcm``, the UDPET layout), found at any depth below the root; the subject is the folder
holding the entry. Dose-first trees also work: a dose folder holding one NIfTI per subject
(``D12/sub01.nii.gz``) or one DICOM folder per subject (``Full_dose/sub01/*.dcm``).

LQ choice per subject: the entry of the requested ``drf``; when it is missing, the nearest available DRF (on a
log scale) with a warning, or an error with ``strict_drf``; when the subject has only full dose, the LQ is
simulated (``"degrade": "pet"``) unless ``simulate=False``. ``simulate=True`` always simulates.

NIfTI volumes are cut along ``plane`` (coronal by default: AMIR's 192x400 whole-body slices are not axial);
DICOM series are used file by file (as acquired, usually axial). Air-only slices, whose HQ maximum is below
``air_threshold`` times the HQ volume's maximum, are dropped.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from ..transforms.random_dose_dict import ACQUIRED_KEY
from .dicom_series import pair_dicom_series, read_dicom_series
from .folders import walk_folders
from .slices import DataError, checked_slice_axis, nearest_value, nifti_info, select_subjects

__all__ = ["PET_SPLIT_COUNTS", "parse_drf", "PetEntry", "find_pet_entries", "build_pet_datalist"]

PET_SPLIT_COUNTS: tuple[int, int, int] = (120, 10, 29)  # AMIR's 159 whole-body scans

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.I)
_FULL = re.compile(r"^(full|normal|standard|std|high)(_?dose)?$|^(fd|hd|nd)$")
_ONE_IN = re.compile(r"^1_(\d+)(_?dose)?$")
_DRF = re.compile(r"^(drf|d|ld|low_?dose)_?(\d+)(_?dose)?$")


def parse_drf(name: str) -> int | None:
    """Dose-reduction factor named by a file or folder name (full dose = 1), or None.

    Args:
        name: e.g. ``"Full_dose"``, ``"1-4 dose"``, ``"D12.nii.gz"``, ``"DRF_12"``.

    Returns:
        The DRF, or None when the name is not a dose name.
    """
    stem = _NIFTI.sub("", name).lower()
    key = re.sub(r"[\s_\-.]+", "_", stem).strip("_")
    if _FULL.match(key):
        return 1
    match = _ONE_IN.match(key) or _DRF.match(key)
    if match is None:
        return None
    value = int(match.group(1) if match.re is _ONE_IN else match.group(2))
    return value if value >= 1 else None


@dataclass(frozen=True)
class PetEntry:
    """One subject's image at one dose: a NIfTI file or a DICOM series folder."""

    subject: str
    drf: int
    path: Path
    kind: str  # "nifti" or "dicom"


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _entries_in_dose_folder(root: Path, folder: Path, drf: int) -> list[PetEntry]:
    """Entries of one dose-named folder: per-subject NIfTI files / DICOM folders, or itself as a DICOM series."""
    children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    niftis = [p for p in children if p.is_file() and _NIFTI.search(p.name)]
    if niftis:  # dose-first: one NIfTI per subject
        return [PetEntry(_NIFTI.sub("", p.name), drf, p, "nifti") for p in niftis]
    if any(p.is_file() for p in children):  # a DICOM series of the subject holding the folder
        subject = folder.parent.relative_to(root).as_posix() if folder.parent != root else root.name
        return [PetEntry(subject, drf, folder, "dicom")]
    # dose-first with one DICOM folder per subject
    return [PetEntry(p.name, drf, p, "dicom") for p in children if p.is_dir() and _has_files(p)]


def find_pet_entries(dataset_dir: str | os.PathLike) -> dict[str, dict[int, PetEntry]]:
    """Every subject's dose entries under ``dataset_dir`` (see the module docstring for names and layouts).

    Returns:
        ``{subject: {drf: entry}}``.

    Raises:
        DataError: missing root, no dose entry, or two entries of one dose for one subject.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"{root}: PET folder not found")
    found: dict[str, dict[int, PetEntry]] = {}
    entries: list[PetEntry] = []
    for folder, dirnames, filenames in walk_folders(root):  # linked folders once each
        for name in filenames:
            drf = parse_drf(name)
            if drf is not None and _NIFTI.search(name):
                subject = folder.relative_to(root).as_posix() if folder != root else root.name
                entries.append(PetEntry(subject, drf, folder / name, "nifti"))
        dose_dirs = [d for d in dirnames if parse_drf(d) is not None]
        for d in dose_dirs:
            entries.extend(_entries_in_dose_folder(root, folder / d, parse_drf(d)))  # type: ignore[arg-type]
        dirnames[:] = [d for d in dirnames if d not in dose_dirs]  # a dose folder is not searched further
    for entry in entries:
        doses = found.setdefault(entry.subject, {})
        if entry.drf in doses:
            raise DataError(f"{doses[entry.drf].path} and {entry.path}: two DRF {entry.drf} images of {entry.subject}")
        doses[entry.drf] = entry
    if not found:
        raise DataError(f"{root}: no PET dose file or folder (Full_dose, 1-4 dose, D12, drf12, ...) found")
    return found


def _choose_lq(subject: str, doses: dict[int, PetEntry], drf: int, simulate: bool | None, strict: bool):
    """The LQ entry for one subject, or None to simulate DRF ``drf``; returns (entry, drf)."""
    if 1 not in doses:
        raise DataError(f"{next(iter(doses.values())).path}: subject {subject} has no full-dose image")
    reduced = sorted(d for d in doses if d > 1)
    if simulate or not reduced:
        if simulate is False:
            raise DataError(f"{doses[1].path}: subject {subject} has no reduced-dose image and simulate=False")
        return None, drf
    if drf in doses:
        return doses[drf], drf
    if strict:
        raise DataError(f"{doses[1].path}: subject {subject} has no DRF {drf} image (has DRF {reduced})")
    chosen = int(nearest_value(reduced, drf))
    warnings.warn(f"PET subject {subject}: no DRF {drf} image, using the nearest, DRF {chosen}", stacklevel=3)
    return doses[chosen], chosen


def _air_mask(maxima: np.ndarray, threshold: float, where: str) -> np.ndarray:
    """True for slices to keep: HQ slice max at least ``threshold`` times the volume max."""
    if not np.all(np.isfinite(maxima)):
        raise DataError(f"{where}: non-finite values in the full-dose image")
    peak = float(maxima.max()) if maxima.size else 0.0
    if peak <= 0:
        raise DataError(f"{where}: full-dose image has no positive activity")
    return maxima >= threshold * peak


def _nifti_items(hq: PetEntry, lq: PetEntry | None, plane: str, threshold: float) -> list[dict]:
    info = nifti_info(hq.path)
    if lq is not None:
        lq_info = nifti_info(lq.path)
        if lq_info.shape != info.shape:
            raise DataError(f"{lq.path} {lq_info.shape} and {hq.path} {info.shape}: LQ/HQ shapes differ")
    axis = checked_slice_axis(hq.path, info.shape, info.affine, plane)
    try:
        volume = np.asarray(nib.load(os.fspath(hq.path)).dataobj, dtype=np.float32).reshape(info.shape)
    except Exception as e:
        raise DataError(f"{hq.path}: cannot read image data ({type(e).__name__}: {e})") from e
    maxima = volume.max(axis=tuple(a for a in range(3) if a != axis))
    keep = _air_mask(maxima, threshold, os.fspath(hq.path))
    del volume
    return [{"slice": int(k), "slice_axis": int(axis)} for k in np.flatnonzero(keep)]


def _dicom_items(hq: PetEntry, lq: PetEntry | None, pair_by: str, threshold: float) -> list[dict]:
    hq_headers = read_dicom_series(hq.path)
    if lq is not None:
        pairs = [(a.path, b.path) for a, b in pair_dicom_series(hq_headers, read_dicom_series(lq.path), pair_by)]
    else:
        pairs = [(h.path, None) for h in sorted(hq_headers, key=lambda h: (h.position or 0.0, h.instance or 0))]
    maxima = []
    for hq_path, _ in pairs:
        try:
            ds = pydicom.dcmread(hq_path)
            # the rescale slope of PET slices varies slice by slice; the SUV factor is one per series, so the
            # relative air test needs only the rescaled values
            values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
            maxima.append(float(values.max()) + float(ds.get("RescaleIntercept", 0) or 0))
        except Exception as e:
            raise DataError(f"{hq_path}: cannot read DICOM pixels ({type(e).__name__}: {e})") from e
    keep = _air_mask(np.asarray(maxima), threshold, os.fspath(hq.path))
    return [{"label": a, **({"image": b} if b else {})} for (a, b), k in zip(pairs, keep, strict=True) if k]


def build_pet_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    drf: int = 12,
    simulate: bool | None = None,
    strict_drf: bool = False,
    plane: str = "coronal",
    air_threshold: float = 0.01,
    pair_by: str = "auto",
    seed: int = 0,
    subjects: Sequence[str] | None = None,
    split_counts: Sequence[int] = PET_SPLIT_COUNTS,
) -> list[dict]:
    """Data list of PET slices for low-dose PET synthesis.

    Builds read headers, plus each selected subject's full-dose pixels once for the air-slice test.

    Args:
        dataset_dir: the data set's root (see the module docstring for names and layouts).
        split: ``train``, ``val``, ``test`` or ``all``; subjects split 120 / 10 / 29 (scaled to the number found)
            after a permutation seeded by ``seed`` of the sorted ids.
        drf: dose-reduction factor of the LQ (AMIR: 12).
        simulate: True: always simulate DRF ``drf`` from the full dose; False: never (error without LQ);
            None: simulate only for subjects with no reduced-dose image.
        strict_drf: error instead of using the nearest DRF when ``drf`` is missing.
        plane: ``"coronal"``, ``"axial"`` or ``"sagittal"``: how NIfTI volumes are cut.
        air_threshold: slices whose HQ maximum is below this fraction of the volume maximum are dropped.
        pair_by: DICOM pairing (see :func:`scripts.data.dicom_series.pair_dicom_series`).
        seed: split seed.
        subjects: explicit subject ids, overriding ``split``.
        split_counts: reference (train, val, test) sizes.

    Returns:
        Items ``{"image": lq, "label": hq, ["slice": k, "slice_axis": a,] "task": "pet", "drf": d,
        "subject": s}``; simulated ones have ``"degrade": "pet"`` and no ``"image"``.

    Raises:
        DataError: see :func:`find_pet_entries`; also no full dose, mixed NIfTI / DICOM for one subject, shape
            mismatch, unpairable DICOM slices, or an empty full-dose image.
    """
    entries = find_pet_entries(dataset_dir)
    chosen = select_subjects(entries, split, split_counts, seed, subjects, where=os.fspath(dataset_dir))
    items = []
    for subject in chosen:
        doses = entries[subject]
        lq, lq_drf = _choose_lq(subject, doses, drf, simulate, strict_drf)
        hq = doses[1]
        if lq is not None and lq.kind != hq.kind:
            raise DataError(f"{lq.path} and {hq.path}: one is NIfTI, the other DICOM")
        extra = {"task": "pet", "drf": int(lq_drf), "subject": subject}
        if lq is None:
            extra["degrade"] = "pet"
        else:
            extra[ACQUIRED_KEY] = True
        if hq.kind == "nifti":
            paths = {"label": os.fspath(hq.path), **({"image": os.fspath(lq.path)} if lq else {})}
            items += [{**paths, **s, **extra} for s in _nifti_items(hq, lq, plane, air_threshold)]
        else:
            items += [{**s, **extra} for s in _dicom_items(hq, lq, pair_by, air_threshold)]
    return items
