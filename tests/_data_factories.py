"""Small synthetic data for the tests: DICOM series, IXI-named and PET NIfTI volumes, CT water disks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid
from scripts.data.slices import affine_from_axcodes


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    instance: int | None,
    position_z: float | None,
    series_number: int = 1,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    extra: dict | None = None,
) -> Path:
    """Write one single-frame int16 DICOM slice with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else PositronEmissionTomographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "TEST"
    ds.SeriesNumber = series_number
    if instance is not None:
        ds.InstanceNumber = instance
    if position_z is not None:
        ds.ImagePositionPatient = [-100.0, -100.0, float(position_z)]
        ds.ImageOrientationPatient = list(orientation)
        ds.SliceLocation = float(position_z)
    ds.PixelSpacing = [0.7, 0.7]
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    values: Sequence[int],
    offset: int,
    series_number: int,
    prefix: str,
    size: int = 32,
    instance_offset: int = 0,
    positions: bool = True,
    seed: int = 0,
    modality: str = "CT",
) -> list[Path]:
    """A series of ``len(values)`` slices; slice z holds ``values[z] + offset`` everywhere (to check pairing).

    File names are shuffled relative to the slice order, so a pairing by name would fail.
    """
    order = list(range(len(values)))
    random.Random(seed).shuffle(order)
    paths = []
    for name_index, z in enumerate(order):
        pixels = np.full((size, size), values[z] + offset, dtype=np.int16)
        path = folder / f"{prefix}.{series_number:04d}.{name_index:04d}.IMA"
        paths.append(
            write_dicom_slice(
                path,
                pixels,
                instance=z + 1 + instance_offset,
                position_z=(-50.0 + 1.0 * z) if positions else None,
                series_number=series_number,
                modality=modality,
                intercept=-1024.0 if modality == "CT" else 0.0,
            )
        )
    return paths


def make_mayo_tree(
    root: Path, layout: str, patients: Sequence[str], n_slices: int = 3, suffix: str = "1mm", **kwargs
) -> Path:
    """Mayo-like tree: ``"patient"`` (<root>/L067/full_1mm) or ``"dose"`` (<root>/full_1mm/L067/full_1mm).

    Full-dose slice z holds ``1000 + 10 z`` (stored), the quarter-dose one ``1000 + 10 z + 1``; series numbers and
    instance numbers differ between the two.
    """
    values = [1000 + 10 * z for z in range(n_slices)]
    for i, patient in enumerate(patients):
        for dose, offset, series, inst in (("full", 0, 2, 0), ("quarter", 1, 7, 100)):
            name = f"{dose}_{suffix}"
            folder = root / patient / name if layout == "patient" else root / name / patient / name
            write_series(folder, values, offset, series, f"{patient}_{dose}", instance_offset=inst, seed=i, **kwargs)
    return root


def write_nifti(path: Path, array: np.ndarray, codes: Sequence[str] = ("R", "A", "S"), spacing=None) -> Path:
    """Write ``array`` as float32 NIfTI with an affine whose axes point along ``codes``."""
    spacing = spacing or (1.0,) * 3
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine_from_axcodes(codes, spacing)), str(path))
    return path


def coordinate_volume(shape: Sequence[int]) -> np.ndarray:
    """A volume whose every voxel value is unique: ``i + 100 j + 10000 k``."""
    i, j, k = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return (i + 100 * j + 10000 * k).astype(np.float32)


def water_disk(size: int, diameter_cm: float, pixel_cm: float) -> np.ndarray:
    """A ``(1, size, size)`` CT slice in HU: a water disk (0 HU) of ``diameter_cm`` centred in air (-1000 HU)."""
    return np.where(disk_mask(size, diameter_cm / 2 / pixel_cm), 0.0, -1000.0)[None].astype(np.float32)


def disk_mask(size: int, radius: float) -> np.ndarray:
    """The ``(size, size)`` mask of the centred disk of ``radius`` pixels."""
    off = np.arange(size) - size // 2
    return off[:, None] ** 2 + off[None, :] ** 2 <= radius**2


def mri_slice_item(tmp_path: Path, index: int = 3) -> dict:
    """A data-list item of one slice of a small MRI volume (a bright square), written to ``tmp_path``."""
    vol = np.zeros((32, 32, 8), dtype=np.float32)
    vol[8:24, 8:24] = 1000.0
    path = write_nifti(tmp_path / "IXI002-Guys-0828-T2.nii.gz", vol)
    return {
        "label": str(path),
        "slice": index,
        "slice_axis": 2,
        "task": "mri",
        "degrade": "kspace",
        "subject": "IXI002",
    }
