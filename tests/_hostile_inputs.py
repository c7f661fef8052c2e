"""Inputs whose headers lie or whose values cannot be restored faithfully: tiny files claiming huge images, complex
and colour images, DICOM with a rescale slope of 0, JPEG-LS pixel data; shared by the reader and CLI tests."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file


def claim_nifti(path: Path, shape: Sequence[int], dtype=np.float32) -> Path:
    """A NIfTI file of a few hundred bytes (gzipped: under 100) whose header claims ``shape`` of ``dtype``."""
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape))
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    data = header.binaryblock + b"\0" * 4 + b"\0" * 16  # no extension, 16 bytes of "pixels"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def complex_nifti(path: Path, shape=(24, 20, 3)) -> Path:
    """A complex64 NIfTI whose imaginary part is not zero."""
    rng = np.random.default_rng(0)
    values = (rng.uniform(0, 1000, shape) + 1j * rng.uniform(0, 1000, shape)).astype(np.complex64)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    return path


def rgb_nifti(path: Path, shape=(24, 20, 3)) -> Path:
    """An RGB24 NIfTI (nibabel's structured colour type)."""
    rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    values = np.zeros(shape, dtype=rgb)
    values["R"] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    return path


def set_tags(paths: Sequence[Path], **tags) -> list[Path]:
    """Set DICOM attributes (keywords) in each file, in place (test inputs only)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    return list(paths)


def jpeg_ls_slice(path: Path, damaged: bool = False) -> Path:
    """pydicom's JPEG-LS lossless MR slice (64x64); ``damaged``: its compressed stream cut to a few bytes, which no
    decoder can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), path)
    if damaged:
        ds = pydicom.dcmread(path)
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 12])
        ds.save_as(path, enforce_file_format=True)
    return path
