"""The inputs of a folder run: NIfTI files and DICOM series found under a folder, checked, and their modality.

:func:`find_inputs` walks a folder (one input per NIfTI file and per DICOM series, see :mod:`.dicom`; linked
sub-folders once each, :func:`scripts.data.folders.walk_folders`), leaving out the run's output folder and the
bundle's own outputs; :class:`LoadImageInput` checks what the headers claim before reading pixels (size against
``max_input_voxels``, colour, complex values, DICOM rescale); :class:`CheckInputd` refuses what the network cannot
restore faithfully (several channels or volumes, non-finite values); :class:`~.modality.ResolveModalityd` tells each
image's task (``"mri"``, ``"ct"``, ``"pet"``) from the DICOM header or the ``--modality`` option. Every refusal is
a :class:`~scripts.errors.UserInputError` of one line naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage, LoadImaged, MapTransform
from monai.utils import ensure_tuple

from ..data.folders import walk_folders
from ..data.headers import MAX_INPUT_VOXELS, check_dicom_pixels, check_dicom_rescale, check_nifti_header
from ..data.loading import is_nifti
from ..errors import UserInputError
from ..ownership import folder_kind
from .dicom import DicomSeries, DicomSeriesReader, dicom_files, scan_dicom_folder
from .modality import MODALITY_ALIASES, ResolveModalityd, canonical_modality
from .outputs import is_bundle_output

__all__ = [
    "MODALITY_ALIASES",
    "canonical_modality",
    "is_nifti",
    "find_inputs",
    "input_source",
    "FolderDatalist",
    "folder_datalist",
    "check_input_header",
    "LoadImageInput",
    "LoadImageInputd",
    "CheckInputd",
    "ResolveModalityd",
]

logger = logging.getLogger(__name__)


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

    def searched(path: Path) -> bool:
        return not path.name.startswith(".") and not _within(path.resolve(), skip) and folder_kind(path) is None

    for folder, _, files in walk_folders(root, keep=searched):  # linked folders once each, warning on the others
        for name in (f for f in files if is_nifti(f) and not f.startswith(".")):
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


class FolderDatalist(Sequence):
    """Data-list items of every input of a folder (see :func:`find_inputs`), found when first used.

    The folder is searched at the first ``len`` or item, that is when the run starts, not when the config is parsed
    or instantiated: MONAI's property check and tools that load the config elsewhere (the model zoo's CI, MONAI
    Label) never touch the default ``dataset_dir``. A missing or empty folder is then reported by the run.

    Args:
        dataset_dir: a folder, or a single NIfTI file, DICOM file or DICOM series folder.
        image_key: key of the image in each item.
        exclude: folders not to look into.
    """

    def __init__(
        self, dataset_dir: str | os.PathLike, image_key: str = "image", exclude: Sequence[str | os.PathLike] = ()
    ) -> None:
        self.dataset_dir, self.image_key, self.exclude = dataset_dir, image_key, exclude
        self._items: list[dict[str, Any]] | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        """``{image_key: path or a series' files, "input": the Path or DicomSeries}`` per input."""
        if self._items is None:
            found = find_inputs(self.dataset_dir, self.exclude)
            self._items = [{self.image_key: input_source(i), "input": i} for i in found]
        return self._items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def folder_datalist(
    dataset_dir: str | os.PathLike, image_key: str = "image", exclude: Sequence[str | os.PathLike] = ()
) -> FolderDatalist:
    """Data-list items of every input of a folder, searched when first used (see :class:`FolderDatalist`)."""
    return FolderDatalist(dataset_dir, image_key, exclude)


_PIXEL_TAGS = [
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "RescaleSlope",
    "RescaleIntercept",
]


def check_input_header(filename: Any, max_voxels: int | None = MAX_INPUT_VOXELS) -> None:
    """Check what an input's headers claim before its pixels are read (see :mod:`scripts.data.headers`).

    NIfTI: the claimed shape x data type within ``max_voxels``, real scalar values (not complex, not RGB). DICOM
    (a file, a series' files or a folder): grey-scale pixels, finite rescale values and a slope not 0 in every file,
    and the largest file's Rows x Columns x NumberOfFrames times the number of files within ``max_voxels``
    (the series reader refuses files of different sizes before reading pixels). What cannot be parsed is left to
    the reader, which names it.

    Args:
        filename: a NIfTI path, a DICOM file or folder, or a DICOM series' files.
        max_voxels: the configs' ``max_input_voxels``; None: no limit.

    Raises:
        DataError: one line naming the file and what is wrong.
    """
    names = [Path(os.fspath(n)) for n in ensure_tuple(filename)]
    if len(names) == 1 and names[0].is_dir():
        names = dicom_files(names[0])
    if len(names) == 1 and is_nifti(names[0]):
        try:
            header = nib.load(names[0]).header
        except Exception:
            return  # the reader reports it
        check_nifti_header(names[0], header, max_voxels)
        return
    headers = []
    for path in (n for n in names if n.is_file() and not is_nifti(n)):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_PIXEL_TAGS)
        except Exception:
            continue  # the series reader reports it
        check_dicom_pixels(path, ds, 1, None)
        check_dicom_rescale(ds, path)
        headers.append((path, ds))
    if headers:

        def claim(header: tuple[Path, pydicom.Dataset]) -> int:
            ds = header[1]
            return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("NumberOfFrames", 1) or 1)

        path, ds = max(headers, key=claim)
        check_dicom_pixels(path, ds, len(headers), max_voxels)


class LoadImageInput(LoadImage):
    """MONAI ``LoadImage`` whose DICOM inputs go to :class:`~scripts.workflows.dicom.DicomSeriesReader` alone.

    A folder, a DICOM file or a DICOM series' files are read as one checked series (``LoadImage`` given a reader
    would fall back to its other readers when it refuses a file, and read a list of files as channels); anything
    else (NIfTI) is read by MONAI's own choice of reader. Before any pixel is read, the headers are checked
    (:func:`check_input_header`: size, colour, complex values, rescale). A file that cannot be read is a
    :class:`~scripts.errors.UserInputError` naming it.

    Args:
        args: passed to ``LoadImage`` (without ``reader``).
        max_voxels: the most voxels an input's header may claim (the configs' ``max_input_voxels``); None: no
            limit.
        kwargs: passed to ``LoadImage``.
    """

    def __init__(self, *args: Any, max_voxels: int | None = MAX_INPUT_VOXELS, **kwargs: Any) -> None:
        super().__init__(None, *args, **kwargs)
        self.dicom_reader = DicomSeriesReader()
        self.max_voxels = max_voxels

    def __call__(self, filename: Any, reader: ImageReader | None = None) -> Any:
        """Load ``filename`` (a path or a DICOM series' files); see ``LoadImage.__call__``."""
        if reader is None and self.dicom_reader.verify_suffix(filename):
            reader = self.dicom_reader
        check_input_header(filename, self.max_voxels)
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
        max_voxels: the most voxels an input's header may claim (the configs' ``max_input_voxels``); None: no
            limit.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: DtypeLike = np.float32,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        allow_missing_keys: bool = False,
        max_voxels: int | None = MAX_INPUT_VOXELS,
    ) -> None:
        super().__init__(
            keys,
            dtype=dtype,
            image_only=image_only,
            ensure_channel_first=ensure_channel_first,
            allow_missing_keys=allow_missing_keys,
        )
        self._loader = LoadImageInput(
            image_only=image_only, dtype=dtype, ensure_channel_first=ensure_channel_first, max_voxels=max_voxels
        )


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
