"""What an image's header claims, checked before any pixel is read: its size, its kind of values, its rescale.

A header is a promise about the pixels to come: a NIfTI file of 100 bytes may claim 8192x8192x40 float32, a
DICOM file 65535x65535 pixels in 1000 frames. Reading such a claim would allocate the memory first and fail
(or be killed) after, with no word on which file. The checks here run on the header alone, in inference
(:class:`scripts.workflows.LoadImageInput`), in training (:func:`scripts.data.slices.load_nifti`,
:func:`scripts.data.loading.read_dicom_slice`) and in the training data check, so that each bad file is one line
naming it. They also refuse what the network cannot restore faithfully however it is read: complex or
RGB / multi-component values, and DICOM rescale values that are not finite or a slope of 0 (every pixel the same).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom

from ..errors import UserInputError

__all__ = [
    "DataError",
    "MAX_INPUT_VOXELS",
    "check_claimed_size",
    "check_nifti_header",
    "check_dicom_pixels",
    "check_dicom_rescale",
]

#: Default of the configs' ``max_input_voxels``: 2**31 voxels. The largest realistic CT (a 1024x1024 matrix,
#: 2048 slices: a whole-body scan at 0.5 mm) or MR volume (512**3 for a 3-D isotropic MR is 0.13e9) lies below it;
#: a float32 copy of that many voxels is 8 GiB, and 2**31 is also where 32-bit voxel indices (ITK, some kernels)
#: stop working. A real image above it is restored after raising the option, on a machine with the memory.
MAX_INPUT_VOXELS: int = 2**31


class DataError(UserInputError):
    """A data set or one of its files cannot be used; the message names the file (or folder) and the problem."""


def check_claimed_size(
    where: str | os.PathLike, shape: Sequence[int], dtype: Any, max_voxels: int | None = MAX_INPUT_VOXELS
) -> None:
    """Refuse an image whose header claims more than ``max_voxels`` voxels, before its pixels are read.

    Args:
        where: the file (or series), for the message.
        shape: the claimed shape (every axis, channels and frames included).
        dtype: the claimed stored data type (for the message: what it would take in memory).
        max_voxels: the limit (the configs' ``max_input_voxels``); None: no limit.

    Raises:
        DataError: one line naming the file, the claimed shape and the option.
    """
    voxels = math.prod(int(s) for s in shape)
    if max_voxels is None or voxels <= int(max_voxels):
        return
    size = "x".join(str(int(s)) for s in shape)
    gib = voxels * np.dtype(dtype).itemsize / 2**30
    raise DataError(
        f"{where}: the header claims an image of {size} {np.dtype(dtype).name} ({voxels} voxels, {gib:.1f} GiB as "
        f"stored), more than max_input_voxels ({int(max_voxels)}); if the image is real, raise --max_input_voxels "
        "(a float32 copy of it needs 4 bytes per voxel)"
    )


def check_nifti_header(path: str | os.PathLike, header: Any, max_voxels: int | None = MAX_INPUT_VOXELS) -> None:
    """Refuse a NIfTI image from its header alone: too large a claim, complex or multi-component (RGB) values.

    Args:
        path: the file, for the message.
        header: its nibabel header (``img.header``).
        max_voxels: see :func:`check_claimed_size`.

    Raises:
        DataError: naming the file and what is wrong.
    """
    dtype = np.dtype(header.get_data_dtype())
    if dtype.fields is not None or dtype.shape:  # nibabel's RGB24 / RGBA32 are structured types
        raise DataError(
            f"{path}: {dtype.names and '/'.join(dtype.names) or dtype} colour values (not one scalar per voxel); "
            "AMIR restores grey-scale CT, MR and PET images: convert it to one channel first"
        )
    if dtype.kind == "c":
        raise DataError(
            f"{path}: complex values ({dtype.name}); reading them would drop the imaginary part: store the "
            "magnitude (or the real part, if that is the image) as a real-valued NIfTI"
        )
    check_claimed_size(path, header.get_data_shape(), dtype, max_voxels)


def check_dicom_pixels(
    path: str | os.PathLike, ds: pydicom.Dataset, num_files: int = 1, max_voxels: int | None = MAX_INPUT_VOXELS
) -> None:
    """Refuse a DICOM image from its header: colour or multi-sample pixels, or too large a claim.

    Args:
        path: the file (the series' first), for the message.
        ds: its header (pixels not needed).
        num_files: files of the series, each assumed of this file's size (Rows x Columns x NumberOfFrames).
        max_voxels: see :func:`check_claimed_size`.

    Raises:
        DataError: naming the file and what is wrong.
    """
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples > 1 or (photometric and not photometric.startswith("MONOCHROME")):
        raise DataError(
            f"{path}: DICOM with {samples} sample(s) per pixel, PhotometricInterpretation {photometric or '?'} "
            "(a colour image); AMIR restores grey-scale (MONOCHROME) CT, MR and PET images"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), frames * int(num_files))
    bits = int(ds.get("BitsAllocated", 16) or 16)
    check_claimed_size(path, shape, np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32, max_voxels)


def check_dicom_rescale(ds: pydicom.Dataset, where: str | os.PathLike, task: str | None = None) -> None:
    """The rescale of a DICOM image gives its physical values: both tags for CT, finite values, a slope not 0.

    Without ``RescaleSlope`` and ``RescaleIntercept`` the offset of CT's stored values is unknown (often 1024 or
    none), so the file is refused rather than read 1024 HU off. A slope of 0 makes every pixel the intercept
    (a constant image, -1024 HU for CT) and a non-finite value makes every pixel NaN: refused for every modality.

    Args:
        ds: the file's header (pixels not needed).
        where: the file, for the message.
        task: ``"ct"`` requires both tags; other tasks (and None) only check those present.

    Raises:
        DataError: naming the file and the tag.
    """
    tags = ("RescaleSlope", "RescaleIntercept")
    missing = [tag for tag in tags if ds.get(tag) in (None, "")]
    if task == "ct" and missing:
        raise DataError(
            f"{where}: CT DICOM without {' and '.join(missing)}, so its Hounsfield units are unknown; "
            "add the tag(s) or convert the image to NIfTI in HU"
        )
    for tag in tags:
        if tag in missing:
            continue
        try:
            value = float(ds.get(tag))
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{where}: DICOM {tag} is {ds.get(tag)!s}, not a finite number; the values are unknown")
        if tag == "RescaleSlope" and value == 0:
            raise DataError(
                f"{where}: DICOM RescaleSlope is 0, which makes every pixel the intercept ({ds.get(tags[1])}); "
                "the header is damaged: fix RescaleSlope (usually 1)"
            )
