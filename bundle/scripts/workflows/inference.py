"""Inference on folders of NIfTI images and DICOM series: modality, slice orientation, slice-wise inferer, runner.

The pieces are MONAI transforms and an inferer, so MONAI Label's bundle infer task can use them as they are
(``preprocessing`` -> ``inferer`` -> ``postprocessing``, the restoration as ``pred``). :class:`FolderInference`, an
Ignite engine, adds what a folder run needs: finding the inputs, never touching them, never overwriting outputs
unless asked, writing each output atomically, and going on past a bad file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from ignite.engine import Engine, Events, State
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor, NibabelWriter
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer
from monai.transforms import InvertibleTransform, MapTransform, Orientation
from monai.utils import TraceKeys
from nibabel.orientations import aff2axcodes

from ..transforms import suv_from_dicom

__all__ = [
    "MODALITY_ALIASES",
    "canonical_modality",
    "is_nifti",
    "find_inputs",
    "through_plane_axis",
    "ResolveModalityd",
    "SliceOrientationd",
    "SliceWiseInferer",
    "folder_datalist",
    "output_name",
    "FolderInference",
]

#: Accepted spellings of the modalities (DICOM's Modality tag values included) -> task.
MODALITY_ALIASES: dict[str, str] = {"mri": "mri", "mr": "mri", "ct": "ct", "pet": "pet", "pt": "pet"}

# In-plane (rows, columns) directions of the training slices per slice-axis family (the data builders' "house"
# orientation: axial (P, L), coronal (I, L), sagittal (I, P)).
_INPLANE: dict[str, tuple[str, str]] = {"SI": ("P", "L"), "AP": ("I", "L"), "LR": ("I", "P")}
_FAMILY: dict[str, str] = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "S": "SI", "I": "SI"}


def canonical_modality(modality: str) -> str:
    """``"mri"``, ``"ct"`` or ``"pet"`` for any accepted spelling (``MR``, ``PT``, ...).

    Raises:
        ValueError: unknown modality; the message lists the accepted ones.
    """
    key = str(modality).strip().lower()
    if key not in MODALITY_ALIASES:
        raise ValueError(f"Unknown modality {modality!r}; use one of mri, ct, pet (or DICOM's MR, CT, PT).")
    return MODALITY_ALIASES[key]


def is_nifti(path: str | os.PathLike) -> bool:
    """True for ``.nii`` / ``.nii.gz`` names."""
    name = os.fspath(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _dicom_files(folder: Path) -> list[Path]:
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if pydicom.misc.is_dicom(p))


def find_inputs(dataset_dir: str | os.PathLike) -> list[Path]:
    """The images of a folder: every NIfTI file and every folder holding DICOM files (one series each), recursively.

    Args:
        dataset_dir: a folder, or a single NIfTI file or DICOM series folder.

    Returns:
        Sorted paths (files for NIfTI, folders for DICOM series).

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: it holds no NIfTI file and no DICOM file.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise FileNotFoundError(f"dataset_dir {root} does not exist.")
    if root.is_file():
        if is_nifti(root) or pydicom.misc.is_dicom(root):
            return [root]
        raise ValueError(f"{root} is neither a NIfTI file nor a DICOM file.")
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        folder = Path(folder)
        found += [folder / f for f in sorted(files) if is_nifti(f) and not f.startswith(".")]
        if any(not is_nifti(f) for f in files) and _dicom_files(folder):
            found.append(folder)
    if not found:
        raise ValueError(f"{root} holds no NIfTI file (.nii, .nii.gz) and no DICOM series.")
    return sorted(found)


def through_plane_axis(image: MetaTensor) -> int:
    """The stored spatial axis a 3-D volume's slices are stacked along, from its header.

    In order: a singleton axis; the NIfTI header's ``slice_dim`` (``dim_info``); the axis of clearly largest
    spacing (the slice thickness, more than 1% above the others); else the axis closest to the body's S-I axis.

    Args:
        image: channel-first ``(C, X, Y, Z)`` MetaTensor with an affine.

    Returns:
        0, 1 or 2.
    """
    shape = image.shape[1:]
    singletons = [a for a, s in enumerate(shape) if s == 1]
    if singletons:
        return singletons[-1]
    dim_info = image.meta.get("dim_info")
    if dim_info is not None:
        slice_dim = (int(np.asarray(dim_info).item()) >> 4) & 3  # NIfTI: bits 4-5, 1-based, 0 = unknown
        if slice_dim:
            return slice_dim - 1
    affine = np.asarray(image.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    order = np.argsort(spacing)
    if spacing[order[-1]] > 1.01 * spacing[order[-2]]:
        return int(order[-1])
    return int(np.argmax(np.abs(affine[2, :3]) / spacing))


class ResolveModalityd(MapTransform):
    """Put the image's task (``"mri"``, ``"ct"``, ``"pet"``) in the item, and bring PET DICOM to SUV.

    The modality is the given one, or else the Modality tag (MR, CT, PT) of a DICOM input (read from the first file
    of the series). A NIfTI file has no modality: without ``modality`` it is an error saying how to give it. PET
    DICOM in Bq/ml (Units BQML) is converted to SUV (body weight), the unit the network was trained in. Apply it
    after ``LoadImaged`` (the source path is the image's ``filename_or_obj``).

    Args:
        keys: the image key (one).
        modality: fixed modality for every input (any spelling of :data:`MODALITY_ALIASES`), or None.
        task_key: key the task is written to.
        allow_missing_keys: don't raise if the key is missing.

    Raises:
        ValueError: unknown modality (at construction); per item, no modality for a NIfTI input or an unsupported
            DICOM modality, naming the file.
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
            image = d[key]
            source = Path(os.fspath(image.meta.get("filename_or_obj", ""))) if isinstance(image, MetaTensor) else None
            header = _first_dicom_header(source) if source is not None else None
            if header is None:
                if self.modality is None:
                    raise ValueError(
                        f"{source}: a NIfTI image does not say its modality; give it with --modality mri|ct|pet."
                    )
                d[self.task_key] = self.modality
                continue
            tag = str(header.get("Modality", "")).strip()
            task = self.modality or MODALITY_ALIASES.get(tag.lower())
            if task is None:
                raise ValueError(f"{source}: DICOM Modality {tag!r} is not MR, CT or PT; give one with --modality.")
            if task == "pet" and str(header.get("Units", "")).strip().upper() == "BQML":
                d[key] = image * suv_from_dicom(header)
            d[self.task_key] = task
        return d


def _first_dicom_header(source: Path) -> pydicom.Dataset | None:
    """Header of the DICOM file, or of the first DICOM file of the series folder; None if not DICOM."""
    if source.is_dir():
        files = _dicom_files(source)
        source = files[0] if files else None
    if source is None or not source.is_file() or is_nifti(source) or not pydicom.misc.is_dicom(source):
        return None
    return pydicom.dcmread(source, stop_before_pixels=True)


class SliceOrientationd(MapTransform, InvertibleTransform):
    """Reorient a 3-D volume so that its slices are the last axis and lie as the training slices did.

    The slice axis is ``slice_axis`` (a stored axis of the input) or :func:`through_plane_axis`; the in-plane axes
    are flipped / swapped to the training orientation of that plane (axial (P, L), coronal (I, L), sagittal
    (I, P)), with MONAI's ``Orientation``, so ``Invertd`` puts the restoration back on the input's grid. 2-D images
    pass through.

    Args:
        keys: image keys.
        slice_axis: stored spatial axis (0, 1, 2) to restore slices along; None: from the header.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, slice_axis: int | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if slice_axis not in (None, 0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1, 2 or None, got {slice_axis!r}.")
        self.slice_axis = slice_axis
        # one Orientation per target, kept: its inverse checks it is the same object that was applied
        self._orienters: dict[str, Orientation] = {}

    def target_axcodes(self, image: MetaTensor) -> str:
        """Axis codes (e.g. ``"PLS"``) that put ``image``'s slice axis last in the training orientation."""
        axis = through_plane_axis(image) if self.slice_axis is None else self.slice_axis
        slice_code = aff2axcodes(np.asarray(image.affine))[axis]
        return "".join(_INPLANE[_FAMILY[slice_code]]) + slice_code

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: item with channel-first MetaTensors.

        Returns:
            A shallow copy with the 3-D images reoriented.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor) or image.ndim != 4:
                continue
            codes = self.target_axcodes(image)
            orienter = self._orienters.setdefault(codes, Orientation(axcodes=codes, labels=None))
            d[key] = orienter(image)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the reorientation (used by ``Invertd``)."""
        d = dict(data)
        by_id = {id(o): o for o in self._orienters.values()}
        for key in self.key_iterator(d):
            image = d[key]
            ops = image.applied_operations if isinstance(image, MetaTensor) else []
            if not ops or ops[-1].get(TraceKeys.ID) not in by_id:
                continue  # a 2-D image: nothing was applied
            d[key] = by_id[ops[-1][TraceKeys.ID]].inverse(image)
        return d


class SliceWiseInferer(Inferer):
    """Runs a 2-D network on whole slices: a 2-D image at once, a 3-D volume slice by slice along its last axis.

    Whole slices by default, because AMIR's attention and routing instruction are global (tiles would change the
    result). Only slices above ``max_slice_pixels`` pixels are tiled, in ``tile_size`` windows with Gaussian
    blending, to bound memory: peak memory is about ``batch_size`` times one slice's (or tile's) activations.

    Args:
        batch_size: slices (or tiles) per network call.
        max_slice_pixels: largest slice restored whole (default 1024 x 1024).
        tile_size: tile of larger slices.
        tile_overlap: overlap of the tiles.
        progress: show a progress bar over the batches.
    """

    def __init__(
        self,
        batch_size: int = 4,
        max_slice_pixels: int = 1024 * 1024,
        tile_size: Sequence[int] = (512, 512),
        tile_overlap: float = 0.25,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.max_slice_pixels = max_slice_pixels
        self.tile_size = tuple(tile_size)
        self.tile_overlap = tile_overlap
        self.progress = progress

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """
        Args:
            inputs: ``(N, C, H, W)`` or ``(N, C, H, W, S)`` (slices along the last axis).
            network: 2-D network.
            args: passed to the network.
            kwargs: passed to the network.

        Returns:
            The network's output, same spatial shape as ``inputs``.
        """
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected (N, C, H, W) or (N, C, H, W, S) input, got shape {tuple(inputs.shape)}.")
        h, w = inputs.shape[2:4]
        tiled = h * w > self.max_slice_pixels
        options = {
            "roi_size": self.tile_size if tiled else (-1, -1),
            "sw_batch_size": self.batch_size,
            "overlap": self.tile_overlap if tiled else 0.0,
            "mode": "gaussian" if tiled else "constant",
            "progress": self.progress,
        }
        inferer = SliceInferer(spatial_dim=2, **options) if inputs.ndim == 5 else SlidingWindowInferer(**options)
        return inferer(inputs, network, *args, **kwargs)


def folder_datalist(dataset_dir: str | os.PathLike, image_key: str = "image") -> list[dict[str, str]]:
    """Data-list items ``{image_key: path}`` of every input of a folder (see :func:`find_inputs`)."""
    return [{image_key: os.fspath(path)} for path in find_inputs(dataset_dir)]


def _root_cause(error: BaseException) -> str:
    """The innermost cause of ``error`` (MONAI wraps transform errors in "applying transform ..."), as text."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def output_name(source: str | os.PathLike, input_root: str | os.PathLike, postfix: str = "restored") -> Path:
    """Where the restoration of ``source`` goes, relative to the output folder: ``<rel>/<name>_<postfix>.nii.gz``.

    Args:
        source: a NIfTI file or a DICOM series folder.
        input_root: the input folder (or the source itself).
        postfix: appended to the name (none if empty).

    Returns:
        The relative output path, mirroring the input tree.
    """
    source, root = Path(source), Path(input_root)
    root = root if root.is_dir() else root.parent
    relative = source.relative_to(root) if source != root else Path(source.name)
    name = relative.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return relative.parent / (f"{name}_{postfix}.nii.gz" if postfix else f"{name}.nii.gz")


class FolderInference(Engine):
    """Ignite engine restoring a dataset of images (NIfTI files, DICOM series) into NIfTI files, one per iteration.

    ``dataset`` holds ``{"image": path}`` items (:func:`folder_datalist`) and applies the preprocessing when
    indexed. Each input ``<dataset_dir>/<rel>/<name>.nii[.gz]`` or DICOM folder ``<rel>/<name>`` gives
    ``output_dir/<rel>/<name>_<postfix>.nii.gz``: float32, the input's shape and affine, physical units (HU for CT,
    SUV for PET). Inputs are only read. An existing output is kept unless ``overwrite``; outputs are written to a
    temporary file and renamed, so none is ever partial. An input that fails is logged by name and the others go
    on; their paths are in ``state.failed`` after :meth:`run`.

    Args:
        dataset: MONAI ``Dataset`` of ``{"image": path}`` items with the preprocessing as its transform.
        dataset_dir: the folder the inputs were found in (output names are relative to it).
        output_dir: folder of the outputs.
        network: the network (weights loaded by a handler such as ``CheckpointLoader``, or already).
        inferer: runs the network (e.g. :class:`SliceWiseInferer`).
        postprocessing: transform of the item with ``pred`` to physical units on the input grid.
        device: device of the network.
        overwrite: replace existing outputs.
        output_postfix: appended to the output names.
        handlers: Ignite handlers to attach (``CheckpointLoader``, ``ProgressBar``, ...).
    """

    def __init__(
        self,
        dataset: Dataset,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        inferer: Inferer,
        postprocessing: Callable,
        device: str | torch.device = "cpu",
        overwrite: bool = False,
        output_postfix: str = "restored",
        handlers: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(self._iteration)
        self.dataset = dataset
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.network = network
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.overwrite = overwrite
        self.output_postfix = output_postfix
        self.add_event_handler(Events.STARTED, self._started)
        for handler in handlers or ():
            handler.attach(self)
        self.add_event_handler(Events.COMPLETED, self._completed)

    def run(self, data: Sequence[int] | None = None, max_epochs: int = 1, **kwargs: Any) -> State:
        """Restore every item of the dataset (or the given indices).

        Returns:
            The engine state; ``state.failed`` lists the inputs that failed.
        """
        return super().run(range(len(self.dataset)) if data is None else data, max_epochs=max_epochs, **kwargs)

    def output_path(self, source: Path) -> Path:
        """Where the restoration of ``source`` goes."""
        return self.output_dir / output_name(source, self.dataset_dir, self.output_postfix)

    def restore(self, index: int) -> MetaTensor:
        """The restoration of item ``index``, in physical units on the input's grid."""
        data = self.dataset[index]
        with torch.inference_mode():
            inputs = data["image"].unsqueeze(0).to(self.device)
            data["pred"] = self.inferer(inputs, self.network)[0].cpu()
        data = self.postprocessing(data)
        pred, image = data["pred"], data["image"]
        expected = tuple(int(s) for s in image.meta.get("spatial_shape", pred.shape[1:]))
        if tuple(pred.shape[1:]) != expected:
            raise RuntimeError(f"restoration of shape {tuple(pred.shape[1:])} does not match the input {expected}.")
        return pred

    @staticmethod
    def write(pred: MetaTensor, path: Path) -> None:
        """Write ``pred`` (channel-first) as float32 NIfTI with its affine, atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = NibabelWriter(output_dtype=np.float32)
        writer.set_data_array(pred, channel_dim=0)
        writer.set_metadata(pred.meta, resample=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[: -len('.nii.gz')]}.", suffix=".nii.gz")
        os.close(fd)
        try:
            writer.write(tmp, verbose=False)
            os.chmod(tmp, 0o644)  # mkstemp creates the file private (0600); outputs are ordinary files
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _started(self, engine: Engine) -> None:
        self.state.failed = []
        self.network.eval()

    def _iteration(self, engine: Engine, index: int) -> dict[str, Any]:
        source = Path(self.dataset.data[index]["image"])
        target = self.output_path(source)
        if target.exists() and not self.overwrite:
            self.logger.warning(f"{target} exists, kept (overwrite=true replaces it).")
            return {"source": source, "target": target, "status": "kept"}
        try:
            if target.resolve() == source.resolve():
                raise ValueError("the output would replace the input; choose another output_dir or postfix.")
            self.write(self.restore(index), target)
        except Exception as e:  # one bad input must not stop the others
            self.state.failed.append(os.fspath(source))
            self.logger.error(f"{source}: failed: {_root_cause(e)}")
            return {"source": source, "target": target, "status": "failed"}
        self.logger.info(f"{source} -> {target}")
        return {"source": source, "target": target, "status": "restored"}

    def _completed(self, engine: Engine) -> None:
        total, failed = len(self.dataset), self.state.failed
        self.logger.info(f"{total - len(failed)} of {total} inputs restored or kept in {self.output_dir}.")
        if failed:
            self.logger.error(f"{len(failed)} failed: {', '.join(failed)}")
