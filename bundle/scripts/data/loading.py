"""Load one data-list item as an LQ / HQ pair of 2-D slices in physical units, simulating the LQ when asked.

:class:`LoadSlicePaird` is deterministic (the simulation's seed comes from the item), so MONAI's
``PersistentDataset`` / ``CacheDataset`` cache its output and each simulation runs once: see
:func:`scripts.data.datasets.make_dataset`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from ..transforms import KSpaceCrop, SimulateLowDoseCT, SimulateLowDosePET, dicom_to_hu, suv_from_dicom
from ..transforms.ct_dose import ct_simulation_args
from .headers import MAX_INPUT_VOXELS, check_dicom_pixels, check_dicom_rescale
from .slices import MIN_SIZE, TASKS, DataError, load_nifti, orient_slice

__all__ = [
    "DEGRADATIONS",
    "is_nifti",
    "read_nifti_slice",
    "check_ct_rescale",
    "read_dicom_slice",
    "read_slice",
    "item_seed",
    "item_id",
    "LoadSlice",
    "LoadSlicePaird",
    "LoadSlicePairD",
    "LoadSlicePairDict",
]

DEGRADATIONS: tuple[str, ...] = ("kspace", "ct", "pet")


def is_nifti(path: str | os.PathLike) -> bool:
    """True for ``.nii`` / ``.nii.gz`` names (anything else is read as DICOM)."""
    name = os.fspath(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti_slice(
    path: str | os.PathLike,
    index: int | None = None,
    axis: int | None = None,
    max_voxels: int | None = MAX_INPUT_VOXELS,
) -> np.ndarray:
    """Read one slice of a NIfTI image through nibabel's proxy (only that slice is read) and orient it.

    Args:
        path: NIfTI file.
        index: slice index along ``axis`` of the stored array; None for a 2-D image (``(H, W)`` or with one
            singleton axis, which is then the slice axis).
        axis: stored axis ``index`` counts along (0, 1, 2).
        max_voxels: the most voxels the header may claim (the configs' ``max_input_voxels``; None: no limit).

    Returns:
        float32 ``(H, W)`` in the house orientation (:func:`scripts.data.slices.orient_slice`).

    Raises:
        DataError: unreadable file, a header refused by :func:`~scripts.data.slices.load_nifti` (size, complex or
            colour values), bad index, or a 3-D volume addressed without a slice index.
    """
    img, info = load_nifti(path, max_voxels)
    if index is None:
        singletons = [a for a, s in enumerate(info.shape) if s == 1]
        if not singletons:
            raise DataError(f"{path}: 3-D volume of shape {info.shape} but the item names no slice")
        axis, index = singletons[-1], 0
    if axis not in (0, 1, 2):
        raise DataError(f"{path}: slice_axis must be 0, 1 or 2, got {axis!r}")
    if not 0 <= int(index) < info.shape[axis]:
        raise DataError(f"{path}: slice {index} out of range along axis {axis} of shape {info.shape}")
    try:
        if len(img.shape) == 2:
            plane = np.asarray(img.dataobj, dtype=np.float32)
        else:
            where: list[Any] = [slice(None)] * 3
            where[axis] = int(index)
            plane = np.asarray(img.dataobj[tuple(where)], dtype=np.float32)
    except Exception as e:
        raise DataError(f"{path}: cannot read image data ({type(e).__name__}: {e})") from e
    plane = plane.reshape([s for a, s in enumerate(info.shape) if a != axis])
    inplane = [c for a, c in enumerate(info.axcodes) if a != axis]
    return orient_slice(plane, inplane, info.axcodes[axis])


_LPS = (("R", "L"), ("A", "P"), ("I", "S"))  # DICOM patient axes: (negative, positive) direction codes


def _lps_code(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _LPS[axis][int(vector[axis] > 0)]


def check_ct_rescale(ds: pydicom.Dataset, where: str | os.PathLike) -> None:
    """The one rule for CT DICOM, in training (:func:`read_dicom_slice`) and inference: HU need both rescale tags,
    finite, with a slope not 0 (:func:`scripts.data.headers.check_dicom_rescale`).

    Args:
        ds: the file's header (pixels not needed).
        where: the file, for the message.

    Raises:
        DataError: a tag is missing, empty, not finite, or the slope is 0; naming the file.
    """
    check_dicom_rescale(ds, where, "ct")


def read_dicom_slice(path: str | os.PathLike, task: str, max_voxels: int | None = MAX_INPUT_VOXELS) -> np.ndarray:
    """Read a single-slice DICOM file in physical units and orient it.

    Units: CT in HU (:func:`scripts.transforms.dicom_to_hu`, padding to air); PET in SUV (``Units`` GML as
    stored, BQML through :func:`scripts.transforms.suv_from_dicom`); MRI as stored, rescaled.

    Args:
        path: DICOM file.
        task: ``"ct"``, ``"pet"`` or ``"mri"``.
        max_voxels: the most pixels the header may claim (the configs' ``max_input_voxels``; None: no limit).

    Returns:
        float32 ``(H, W)`` in the house orientation (from ImageOrientationPatient; as stored without it).

    Raises:
        DataError: unreadable or multi-frame file, pixel data that cannot be decoded, colour pixels, a claim above
            ``max_voxels``, missing tags for the units (CT: :func:`check_ct_rescale`), non-finite rescale values or
            a slope of 0 (:mod:`scripts.data.headers`).
    """
    ds = None
    try:
        ds = pydicom.dcmread(os.fspath(path))
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames); expected one slice per file")
        check_dicom_pixels(path, ds, 1, max_voxels)  # before the pixels are decoded
        check_dicom_rescale(ds, path, task)
        if task == "ct":
            values = dicom_to_hu(ds)
        else:
            values = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
            values += float(ds.get("RescaleIntercept", 0) or 0)
            if task == "pet" and str(ds.get("Units", "")).strip().upper() != "GML":
                values *= suv_from_dicom(ds)
    except DataError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0].rstrip(":")  # pydicom lists missing decoders on more lines
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = ""
        if syntax is not None and syntax.is_compressed:
            hint = f"; its pixel data is {syntax.name}: install a pydicom decoder for it or store it uncompressed"
        raise DataError(f"{path}: cannot read DICOM slice ({type(e).__name__}: {first}){hint}") from e
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise DataError(f"{path}: DICOM pixel data of shape {values.shape}; expected one 2-D slice")
    if "ImageOrientationPatient" not in ds:
        return values
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]  # directions of increasing column / row index
    return orient_slice(values, (_lps_code(col_dir), _lps_code(row_dir)), _lps_code(np.cross(row_dir, col_dir)))


def read_slice(
    path: str | os.PathLike,
    task: str,
    index: int | None = None,
    axis: int | None = None,
    max_voxels: int | None = MAX_INPUT_VOXELS,
) -> np.ndarray:
    """One oriented ``(H, W)`` float32 slice from a NIfTI (see :func:`read_nifti_slice`) or DICOM file
    (:func:`read_dicom_slice`), whose header claims at most ``max_voxels``."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    if is_nifti(path):
        return read_nifti_slice(path, index, axis, max_voxels)
    if index not in (None, 0):
        raise DataError(f"{path}: a DICOM file holds one slice, but the item names slice {index}")
    return read_dicom_slice(path, task, max_voxels)


def item_seed(item: Mapping[Hashable, Any], base_seed: int = 0, label_key: str = "label") -> int:
    """A seed for the item's LQ simulation, from what identifies the slice (not where the data set lives).

    Args:
        item: data-list item.
        base_seed: mixed in, to draw another noise realisation for the whole set.
        label_key: key of the HQ path.

    Returns:
        An integer in [0, 2**32).
    """
    parts = [
        str(base_seed),
        str(item.get("subject", "")),
        Path(os.fspath(item[label_key])).name,
        str(item.get("slice", "")),
        str(item.get("degrade", "")),
        str(item.get("drf", "")),
    ]
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def item_id(item: Mapping[Hashable, Any], label_key: str = "label") -> str:
    """A readable id of the item's slice, e.g. ``"IXI002/IXI002-Guys-0828-T2.nii.gz#57"``."""
    name = Path(os.fspath(item[label_key])).name
    subject = item.get("subject")
    text = f"{subject}/{name}" if subject else name
    return f"{text}#{item['slice']}" if item.get("slice") is not None else text


def _ct_geometry(hq: np.ndarray, item: Mapping[Hashable, Any]) -> dict[str, Any]:
    """The simulation geometry of a CT slice: its pixel size and body (a folder data set's items carry ``spacing``);
    the inscribed circle (the scanner's field of view) only for a square slice holding the whole body."""
    spacing, body = item.get("spacing"), item.get("body_diameter_cm")
    body = float(body) if body is not None and float(body) > 0 else None
    if spacing is None:
        return {"circle": hq.shape[0] == hq.shape[1] and body is None, "body_diameter_cm": body}
    return ct_simulation_args(hq.shape, float(np.mean(np.asarray(spacing, dtype=float))), body)


def _check_plane(array: np.ndarray, where: str) -> None:
    if min(array.shape) < MIN_SIZE:
        raise DataError(f"{where}: slice of {array.shape[0]}x{array.shape[1]} px is smaller than {MIN_SIZE} px")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{where}: {int(np.sum(~np.isfinite(array)))} non-finite values (NaN or inf) in the slice")


def _as_image(array: np.ndarray, path: str) -> MetaTensor:
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)[None]), meta={"filename_or_obj": path}
    )


class LoadSlice(Transform):
    """Load one slice of a NIfTI volume, a 2-D NIfTI image or a DICOM file as a checked ``(1, H, W)`` image.

    The array version of :class:`LoadSlicePaird` (see :func:`read_slice` for units and orientation).

    Args:
        task: ``"mri"``, ``"ct"`` or ``"pet"`` (sets the DICOM units).
        max_voxels: the most voxels a file's header may claim (the configs' ``max_input_voxels``; None: no limit).

    Raises:
        DataError: unreadable file, bad slice index, non-finite values or a slice below 16 px.
    """

    def __init__(self, task: str = "mri", max_voxels: int | None = MAX_INPUT_VOXELS) -> None:
        if task not in TASKS:
            raise ValueError(f"LoadSlice: task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.max_voxels = max_voxels

    def __call__(self, path: str | os.PathLike, index: int | None = None, axis: int | None = None) -> MetaTensor:
        """
        Args:
            path: NIfTI or DICOM file.
            index: slice index along ``axis`` of a NIfTI volume (None for 2-D images and DICOM files).
            axis: stored axis of the volume that ``index`` counts along.

        Returns:
            float32 MetaTensor ``(1, H, W)`` whose ``filename_or_obj`` is ``path``.
        """
        path = os.fspath(path)
        array = read_slice(path, self.task, index, axis, self.max_voxels)
        _check_plane(array, path)
        return _as_image(array, path)


class LoadSlicePaird(MapTransform):
    """Load a data-list item (schema in :mod:`scripts.data.slices`) as a pair of ``(1, H, W)`` float32 slices.

    The HQ is read from ``item[label_key]``; the LQ from ``item[image_key]`` when present, else simulated from
    the HQ as ``item["degrade"]`` says (``"kspace"``: :class:`~scripts.transforms.KSpaceCrop`, ``"ct"``:
    :class:`~scripts.transforms.SimulateLowDoseCT`, ``"pet"``: :class:`~scripts.transforms.SimulateLowDosePET`
    with ``item["drf"]``), seeded by :func:`item_seed` so the same item always gives the same LQ. Only the
    slice needed is read. Values are in physical units (HU for CT, SUV for PET DICOM, as stored otherwise), in
    the orientation of :func:`scripts.data.slices.orient_slice`. The item is not modified.

    The output holds ``image`` and ``label`` (MetaTensors, ``filename_or_obj`` the source path), ``task``,
    ``id`` (:func:`item_id`) and the ``keep_keys`` of the item; other keys are dropped so that items of all
    tasks collate together.

    Args:
        keys: ``(LQ key, HQ key)``.
        task_key: key of the task.
        kspace_fraction: kept k-space fraction per axis for ``"kspace"`` (0.25: 4x).
        ct_dose_fraction: dose of the ``"ct"`` simulation (0.25: quarter dose).
        pet_drf: DRF of the ``"pet"`` simulation when the item has no ``"drf"``.
        seed: base seed mixed into every item's seed.
        ct_options: other arguments of :class:`~scripts.transforms.SimulateLowDoseCT`.
        pet_options: other arguments of :class:`~scripts.transforms.SimulateLowDosePET`.
        keep_keys: item keys copied to the output (e.g. ``("subject",)``); missing ones are skipped.
        max_voxels: the most voxels a file's header may claim (the configs' ``max_input_voxels``; None: no limit).

    Raises:
        DataError: unreadable file, LQ / HQ shapes differ, non-finite values, slice below 16 px, unknown task or
            degradation, no LQ and nothing to simulate.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        task_key: str = "task",
        kspace_fraction: float = 0.25,
        ct_dose_fraction: float = 0.25,
        pet_drf: float = 12.0,
        seed: int = 0,
        ct_options: Mapping[str, Any] | None = None,
        pet_options: Mapping[str, Any] | None = None,
        keep_keys: Sequence[str] = (),
        max_voxels: int | None = MAX_INPUT_VOXELS,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"LoadSlicePaird: keys must be (LQ key, HQ key), got {self.keys}")
        self.image_key, self.label_key = self.keys
        self.task_key = task_key
        self.kspace_fraction = float(kspace_fraction)
        self.ct_dose_fraction = float(ct_dose_fraction)
        self.pet_drf = float(pet_drf)
        self.seed = int(seed)
        self.ct_options = dict(ct_options or {})
        self.pet_options = dict(pet_options or {})
        self.keep_keys = tuple(keep_keys)
        self.max_voxels = max_voxels

    def simulate(self, hq: np.ndarray, item: Mapping[Hashable, Any]) -> np.ndarray:
        """The simulated LQ ``(H, W)`` of the item's HQ slice ``hq``."""
        degrade = item.get("degrade")
        seed = item_seed(item, self.seed, self.label_key)
        x = hq[None]
        if degrade == "kspace":
            out = KSpaceCrop(self.kspace_fraction)(x)
        elif degrade == "ct":
            out = SimulateLowDoseCT(self.ct_dose_fraction, seed=seed, **_ct_geometry(hq, item), **self.ct_options)(x)
        elif degrade == "pet":
            drf = float(item.get("drf") or self.pet_drf)
            out = SimulateLowDosePET(drf, seed=seed, **self.pet_options)(x)
        else:
            raise DataError(
                f"{item[self.label_key]}: item has no {self.image_key!r} and its degrade {degrade!r} is not one "
                f"of {DEGRADATIONS}"
            )
        return np.asarray(out, dtype=np.float32)[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: a data-list item.

        Returns:
            ``{image_key: (1,H,W) LQ, label_key: (1,H,W) HQ, task_key: task, "id": str, **keep_keys}``.
        """
        task = data.get(self.task_key)
        if task not in TASKS:
            raise DataError(f"{data.get(self.label_key)}: item task {task!r} is not one of {TASKS}")
        if data.get(self.label_key) is None:
            raise DataError(f"item {dict(data)} has no {self.label_key!r} (HQ) path")
        index, axis = data.get("slice"), data.get("slice_axis")
        load = LoadSlice(task, self.max_voxels)
        hq_path = os.fspath(data[self.label_key])
        hq = load(hq_path, index, axis)
        if data.get(self.image_key) is not None:
            lq_path = os.fspath(data[self.image_key])
            lq = load(lq_path, index, axis)
            if lq.shape != hq.shape:
                shapes = f"{tuple(lq.shape[1:])} and {hq_path} {tuple(hq.shape[1:])}"
                raise DataError(f"{lq_path} {shapes}: LQ/HQ slice shapes differ")
        else:
            simulated = self.simulate(hq[0].numpy(), data)
            _check_plane(simulated, f"{hq_path} (simulated {data.get('degrade')})")
            lq = _as_image(simulated, hq_path)
        out: dict[Hashable, Any] = {
            self.image_key: lq,
            self.label_key: hq,
            self.task_key: task,
            "id": item_id(data, self.label_key),
        }
        out.update({k: data[k] for k in self.keep_keys if k in data})
        return out


LoadSlicePairD = LoadSlicePairDict = LoadSlicePaird
