"""The inputs of a folder run: NIfTI files and DICOM series found under a folder, checked, and their modality.

:func:`find_inputs` walks a folder (one input per NIfTI file and per DICOM series, see :mod:`.dicom`), leaving out
the run's output folder and the bundle's own outputs; :class:`CheckInputd` refuses what the network cannot restore
faithfully (several channels or volumes, non-finite values); :class:`ResolveModalityd` tells each image's task
(``"mri"``, ``"ct"``, ``"pet"``) from the DICOM header or the ``--modality`` option. Every refusal is a
:class:`~scripts.errors.UserInputError` of one line naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage, LoadImaged, MapTransform
from monai.utils import ensure_tuple

from ..data.loading import check_ct_rescale, is_nifti
from ..errors import UserInputError
from ..ownership import folder_kind
from ..transforms import MODALITY_WINDOWS, suv_from_dicom
from .dicom import DicomSeries, DicomSeriesReader, read_dicom_header, scan_dicom_folder
from .outputs import is_bundle_output

__all__ = [
    "MODALITY_ALIASES",
    "canonical_modality",
    "is_nifti",
    "find_inputs",
    "input_source",
    "folder_datalist",
    "LoadImageInput",
    "LoadImageInputd",
    "CheckInputd",
    "ResolveModalityd",
]

logger = logging.getLogger(__name__)

#: Accepted spellings of the modalities (DICOM's Modality tag values included) -> task.
MODALITY_ALIASES: dict[str, str] = {"mri": "mri", "mr": "mri", "ct": "ct", "pet": "pet", "pt": "pet"}


def canonical_modality(modality: str) -> str:
    """``"mri"``, ``"ct"`` or ``"pet"`` for any accepted spelling (``MR``, ``PT``, ...).

    Raises:
        UserInputError: unknown modality; the message lists the accepted ones.
    """
    key = str(modality).strip().lower()
    if key not in MODALITY_ALIASES:
        raise UserInputError(f"modality {modality!r} is unknown; use one of mri, ct, pet (or DICOM's MR, CT, PT)")
    return MODALITY_ALIASES[key]


def _within(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def find_inputs(dataset_dir: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path | DicomSeries]:
    """The images of a folder, recursively: every NIfTI file and every DICOM series (grouped by SeriesInstanceUID).

    The bundle's own outputs (NIfTI files carrying :data:`~scripts.workflows.outputs.OUTPUT_MARKER`, and below
    ``dataset_dir`` the folders carrying the bundle's :data:`~scripts.ownership.MARKER`: DICOM output series, run
    folders) and the ``exclude`` folders (the run's output folder, when inside the input folder) are left out, so
    that a second run never restores the first one's results.

    Args:
        dataset_dir: a folder, or a single NIfTI file, DICOM file or DICOM series folder.
        exclude: folders not to look into.

    Returns:
        NIfTI paths and :class:`~scripts.workflows.dicom.DicomSeries`, sorted by path.

    Raises:
        UserInputError: ``dataset_dir`` does not exist, is neither NIfTI nor DICOM, or holds no input.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise UserInputError(f"{root}: the input folder (dataset_dir) does not exist")
    if root.is_file():
        if is_nifti(root):
            return [root]
        if pydicom.misc.is_dicom(root):
            return [replace(series, path=root) for series in scan_dicom_folder(root.parent, [root])]
        raise UserInputError(f"{root}: neither a NIfTI file (.nii, .nii.gz) nor a DICOM file")
    top = root.resolve()
    skip = [e for e in (Path(x).resolve() for x in exclude) if top in e.parents]  # strictly inside the input folder
    found: list[Path | DicomSeries] = []
    outputs = 0
    for folder, subfolders, files in os.walk(root):
        folder = Path(folder)
        subfolders[:] = sorted(
            d
            for d in subfolders
            if not d.startswith(".") and not _within((folder / d).resolve(), skip) and folder_kind(folder / d) is None
        )
        for name in sorted(f for f in files if is_nifti(f) and not f.startswith(".")):
            if is_bundle_output(folder / name):
                outputs += 1
            else:
                found.append(folder / name)
        if any(not is_nifti(f) for f in files):
            found += scan_dicom_folder(folder)
    if outputs:
        logger.info(f"{root}: {outputs} restoration(s) written by this bundle left out of the inputs")
    if not found:
        raise UserInputError(f"{root}: holds no NIfTI file (.nii, .nii.gz) and no DICOM series to restore")
    # by path; the series of one folder in the order of their first file name
    return sorted(found, key=lambda i: (i.path, min(i.files)) if isinstance(i, DicomSeries) else (i, i))


def input_source(item: Path | DicomSeries | str | os.PathLike) -> str | list[str]:
    """What ``LoadImaged`` is given for an input: the NIfTI path, or a DICOM series' files in slice order."""
    return item.source if isinstance(item, DicomSeries) else os.fspath(item)


def folder_datalist(
    dataset_dir: str | os.PathLike, image_key: str = "image", exclude: Sequence[str | os.PathLike] = ()
) -> list[dict[str, Any]]:
    """Data-list items of every input of a folder (see :func:`find_inputs`).

    Returns:
        ``{image_key: path or a series' files, "input": the Path or DicomSeries}`` per input.
    """
    return [{image_key: input_source(i), "input": i} for i in find_inputs(dataset_dir, exclude)]


class LoadImageInput(LoadImage):
    """MONAI ``LoadImage`` whose DICOM inputs go to :class:`~scripts.workflows.dicom.DicomSeriesReader` alone.

    A folder, a DICOM file or a DICOM series' files are read as one checked series (``LoadImage`` given a reader
    would fall back to its other readers when it refuses a file, and read a list of files as channels); anything
    else (NIfTI) is read by MONAI's own choice of reader. A file that cannot be read is a
    :class:`~scripts.errors.UserInputError` naming it.

    Args:
        args: passed to ``LoadImage`` (without ``reader``).
        kwargs: passed to ``LoadImage``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(None, *args, **kwargs)
        self.dicom_reader = DicomSeriesReader()

    def __call__(self, filename: Any, reader: ImageReader | None = None) -> Any:
        """Load ``filename`` (a path or a DICOM series' files); see ``LoadImage.__call__``."""
        if reader is None and self.dicom_reader.verify_suffix(filename):
            reader = self.dicom_reader
        try:
            return super().__call__(filename, reader)
        except (UserInputError, MemoryError):
            raise
        except Exception as e:
            name = os.fspath(ensure_tuple(filename)[0])
            raise UserInputError(f"{name}: cannot be read as an image ({type(e).__name__}: {e})") from e


class LoadImageInputd(LoadImaged):
    """Dictionary version of :class:`LoadImageInput`: a ``LoadImaged`` (MONAI Label and the App SDK treat it as one).

    Args:
        keys: image keys.
        dtype: data type of the loaded image.
        image_only: return the image only (a MetaTensor), as ``LoadImaged``.
        ensure_channel_first: add or move the channel axis first.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: DtypeLike = np.float32,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            dtype=dtype,
            image_only=image_only,
            ensure_channel_first=ensure_channel_first,
            allow_missing_keys=allow_missing_keys,
        )
        self._loader = LoadImageInput(image_only=image_only, dtype=dtype, ensure_channel_first=ensure_channel_first)


def _source(image: Any) -> Path | None:
    return Path(os.fspath(image.meta.get("filename_or_obj", ""))) if isinstance(image, MetaTensor) else None


class CheckInputd(MapTransform):
    """Refuse an image the network cannot restore faithfully: one 2-D or 3-D image of finite values only.

    Apply it after ``LoadImaged(..., ensure_channel_first=True)``. A 4-D image (a time series, several echoes or
    channels) has more than one channel then; NaN or infinite values would spread through the whole restoration.

    Args:
        keys: image keys.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        UserInputError: naming the file and what is wrong.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: item with channel-first images.

        Returns:
            ``data`` (a shallow copy), unchanged.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image, source = d[key], _source(d[key])
            spatial = tuple(image.shape[1:])
            if image.shape[0] != 1 or len(spatial) not in (2, 3):
                raise UserInputError(
                    f"{source}: {image.shape[0]} volumes or channels of shape {spatial} (a 4-D or multi-channel "
                    "image); AMIR restores one 2-D or 3-D image: split it into single volumes"
                )
            values = torch.as_tensor(image)
            bad = int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
            if bad:
                raise UserInputError(
                    f"{source}: {bad} of {values.numel()} values are not finite (NaN or Inf); "
                    "fix or mask them before restoring"
                )
        return d


class ResolveModalityd(MapTransform):
    """Put the image's task (``"mri"``, ``"ct"``, ``"pet"``) in the item, and bring PET DICOM to SUV.

    A DICOM input's task is its Modality tag (MR, CT, PT), read from the series whose pixels were loaded (its first
    file is the image's ``filename_or_obj``). ``modality`` is the task of NIfTI inputs, which cannot say theirs,
    and of DICOM series whose tag is none of those; when it contradicts a DICOM tag the tag is used and a warning
    names the file (a folder may mix NIfTI of one modality with DICOM of another). PET DICOM in Bq/ml (Units
    BQML) is converted to SUV (body weight), the unit the network was trained in; CT DICOM must have its rescale
    tags (:func:`scripts.data.loading.check_ct_rescale`, the training rule). Apply it after ``LoadImaged``.

    Args:
        keys: the image key (one).
        modality: fixed modality for every input (any spelling of :data:`MODALITY_ALIASES`), or None.
        task_key: key the task is written to.
        allow_missing_keys: don't raise if the key is missing.

    Raises:
        UserInputError: unknown modality (at construction); per item, no modality for a NIfTI input, an
            unsupported DICOM modality without ``modality``, CT without rescale tags, PET without the tags SUV
            needs; naming the file.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality: str | None = None,
        task_key: str = "task",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality = None if modality in (None, "") else canonical_modality(modality)
        self.task_key = task_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: item with the loaded image.

        Returns:
            A shallow copy with ``task_key`` set (and PET DICOM values in SUV).
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image, source = d[key], _source(d[key])
            header = _dicom_header(source) if source is not None else None
            if header is None:
                if self.modality is None:
                    raise UserInputError(
                        f"{source}: a NIfTI image does not say its modality; give it with --modality mri|ct|pet"
                    )
                d[self.task_key] = self.modality
                _warn_if_normalised(image, self.modality, source)
                continue
            tag = str(header.get("Modality", "")).strip()
            from_tag = MODALITY_ALIASES.get(tag.lower())
            task = from_tag or self.modality
            if task is None:
                raise UserInputError(f"{source}: DICOM Modality {tag!r} is not MR, CT or PT; give one with --modality")
            if from_tag and self.modality and from_tag != self.modality:
                logger.warning(
                    f"{source}: DICOM Modality {tag} contradicts --modality {self.modality}; restored as {from_tag} "
                    "(the header's modality; --modality applies to NIfTI and to DICOM of other modalities)"
                )
            if task == "ct":
                check_ct_rescale(header, source)
            if task == "pet" and str(header.get("Units", "")).strip().upper() == "BQML":
                try:
                    factor = suv_from_dicom(header)
                except (ValueError, KeyError, AttributeError) as e:
                    raise UserInputError(f"{source}: PET in Bq/ml whose SUV factor cannot be computed: {e}") from e
                d[key] = image * factor
            d[self.task_key] = task
            _warn_if_normalised(d[key], task, source)
        return d


#: An MRI whose values all lie below this fraction of the MRI window (0..4095) looks normalised, not in scanner units.
NORMALISED_MRI_FRACTION = 0.01


def _warn_if_normalised(image: Any, task: str, source: Path | None) -> None:
    """Warn, naming the file, about an MRI stored as 0..1 (or similar): the network reads it as nearly black."""
    if task != "mri":
        return
    peak = float(torch.as_tensor(image).max())
    limit = NORMALISED_MRI_FRACTION * MODALITY_WINDOWS["mri"][1]
    if peak <= limit:
        logger.warning(
            f"{source}: MRI values reach only {peak:.3g}, below {limit:.3g}: it looks normalised; the network expects "
            "scanner units in the MRI window 0..4095, so it sees a nearly black image (scale it, e.g. to a peak of "
            "about 3000)"
        )


def _dicom_header(source: Path) -> pydicom.Dataset | None:
    """Header of a DICOM file, or of the first file of the one series of a folder; None for anything else."""
    if source.is_dir():
        series = scan_dicom_folder(source)
        source = series[0].files[0] if len(series) == 1 else None
    if source is None or not source.is_file() or is_nifti(source) or not pydicom.misc.is_dicom(source):
        return None
    return read_dicom_header(source)
