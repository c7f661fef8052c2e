"""The task of an inference input (``"mri"``, ``"ct"``, ``"pet"``) and its values in the units the network knows.

:class:`ResolveModalityd` tells each image's task from the DICOM header or the ``--modality`` option, brings PET
DICOM to SUV, checks CT's rescale, and refuses an MRI whose values look normalised (0..1) unless the user stated
its scale with ``--mri_scale``, a factor applied before the network and undone on its output (``Invertd``), so
that the restoration is in the input's units. Every refusal is a :class:`~scripts.errors.UserInputError` of one
line naming the file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

from ..data.loading import check_ct_rescale, is_nifti
from ..errors import UserInputError
from ..transforms import MODALITY_WINDOWS, suv_from_dicom
from .dicom import read_dicom_header, scan_dicom_folder

__all__ = ["MODALITY_ALIASES", "NORMALISED_MRI_FRACTION", "canonical_modality", "ResolveModalityd"]

logger = logging.getLogger(__name__)

#: Accepted spellings of the modalities (DICOM's Modality tag values included) -> task.
MODALITY_ALIASES: dict[str, str] = {"mri": "mri", "mr": "mri", "ct": "ct", "pet": "pet", "pt": "pet"}

#: An MRI whose values all lie below this fraction of the MRI window (0..4095) looks normalised, not in scanner units.
NORMALISED_MRI_FRACTION = 0.01


def canonical_modality(modality: str) -> str:
    """``"mri"``, ``"ct"`` or ``"pet"`` for any accepted spelling (``MR``, ``PT``, ...).

    Raises:
        UserInputError: unknown modality; the message lists the accepted ones.
    """
    key = str(modality).strip().lower()
    if key not in MODALITY_ALIASES:
        raise UserInputError(f"modality {modality!r} is unknown; use one of mri, ct, pet (or DICOM's MR, CT, PT)")
    return MODALITY_ALIASES[key]


def _source(image: Any) -> Path | None:
    return Path(os.fspath(image.meta.get("filename_or_obj", ""))) if isinstance(image, MetaTensor) else None


def _checked_scale(mri_scale: float | None) -> float | None:
    if mri_scale is None:
        return None
    try:
        scale = float(mri_scale)
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise UserInputError(f"mri_scale must be a positive number (or null), got {mri_scale!r}")
    return scale


def check_mri_units(image: Any, source: Path | None) -> None:
    """Refuse an MRI whose positive peak lies below 1% of the MRI window (0..4095): stored normalised (e.g. 0..1).

    The network was trained on scanner units; a 0..1 image is nearly black to it, and its restoration is unusable
    (about 10 dB PSNR), so it is not restored unless the user states the scale (``--mri_scale``).

    Raises:
        UserInputError: naming the file, its peak and how to scale it.
    """
    peak = float(torch.as_tensor(image).max())
    limit = NORMALISED_MRI_FRACTION * MODALITY_WINDOWS["mri"][1]
    if 0 < peak <= limit:  # a blank image (peak 0) has no scale to get wrong
        factor = 3000.0 / peak
        raise UserInputError(
            f"{source}: MRI values reach only {peak:.3g}, below {limit:.3g}: it looks normalised, and the network "
            f"expects scanner units (0..4095); give --mri_scale {factor:.4g} (values are multiplied by it before "
            "restoring and divided after, so the output keeps the input's units), or --mri_scale 1 if these are "
            "its true units"
        )


class ResolveModalityd(MapTransform, InvertibleTransform):
    """Put the image's task (``"mri"``, ``"ct"``, ``"pet"``) in the item, bring PET DICOM to SUV, scale MRI.

    A DICOM input's task is its Modality tag (MR, CT, PT), read from the series whose pixels were loaded (its first
    file is the image's ``filename_or_obj``). ``modality`` is the task of NIfTI inputs, which cannot say theirs,
    and of DICOM series whose tag is none of those; when it contradicts a DICOM tag the tag is used and a warning
    names the file (a folder may mix NIfTI of one modality with DICOM of another). PET DICOM in Bq/ml (Units
    BQML) is converted to SUV (body weight), the unit the network was trained in; CT DICOM must have its rescale
    tags (:func:`scripts.data.loading.check_ct_rescale`, the training rule). An MRI is multiplied by
    ``mri_scale`` when given (the inverse, used by ``Invertd`` on the restoration, divides by it again); without
    it, an MRI that looks normalised is refused (:func:`check_mri_units`). Apply it after ``LoadImaged``.

    Args:
        keys: the image key (one).
        modality: fixed modality for every input (any spelling of :data:`MODALITY_ALIASES`), or None.
        task_key: key the task is written to.
        allow_missing_keys: don't raise if the key is missing.
        mri_scale: the factor that brings the MRI inputs to scanner units (e.g. 3000 for images stored as 0..1);
            None: they are in scanner units, and one that looks normalised is refused.

    Raises:
        UserInputError: unknown modality or a ``mri_scale`` that is not a positive number (at construction); per
            item, no modality for a NIfTI input, an unsupported DICOM modality without ``modality``, CT without
            rescale tags, PET without the tags SUV needs, an MRI that looks normalised; naming the file.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality: str | None = None,
        task_key: str = "task",
        allow_missing_keys: bool = False,
        mri_scale: float | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality = None if modality in (None, "") else canonical_modality(modality)
        self.task_key = task_key
        self.mri_scale = _checked_scale(mri_scale)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: item with the loaded image.

        Returns:
            A shallow copy with ``task_key`` set (PET DICOM values in SUV, MRI values scaled by ``mri_scale``).
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image, source = d[key], _source(d[key])
            header = _dicom_header(source) if source is not None else None
            task = self.task_of(header, source)
            if task == "pet" and header is not None and str(header.get("Units", "")).strip().upper() == "BQML":
                try:
                    factor = suv_from_dicom(header)
                except (ValueError, KeyError, AttributeError) as e:
                    raise UserInputError(f"{source}: PET in Bq/ml whose SUV factor cannot be computed: {e}") from e
                image = image * factor
            if task == "mri" and self.mri_scale is None:
                check_mri_units(image, source)
            elif task == "mri" and self.mri_scale != 1.0:
                image = image * self.mri_scale
                if isinstance(image, MetaTensor):  # Invertd divides the restoration by it again
                    image = self.push_transform(image, extra_info={"mri_scale": self.mri_scale})
            d[self.task_key] = task
            d[key] = image
        return d

    def task_of(self, header: pydicom.Dataset | None, source: Path | None) -> str:
        """The task of an image whose DICOM header is ``header`` (None for NIfTI); checks CT's rescale tags.

        Raises:
            UserInputError: see the class docstring.
        """
        if header is None:
            if self.modality is None:
                raise UserInputError(
                    f"{source}: a NIfTI image does not say its modality; give it with --modality mri|ct|pet "
                    '(MONAI Label: the request\'s "modality" option)'
                )
            return self.modality
        tag = str(header.get("Modality", "")).strip()
        from_tag = MODALITY_ALIASES.get(tag.lower())
        task = from_tag or self.modality
        if task is None:
            raise UserInputError(
                f"{source}: DICOM Modality {tag!r} is not MR, CT or PT; give one with --modality "
                '(MONAI Label: the request\'s "modality" option)'
            )
        if from_tag and self.modality and from_tag != self.modality:
            logger.warning(
                f"{source}: DICOM Modality {tag} contradicts --modality {self.modality}; restored as {from_tag} "
                "(the header's modality; --modality applies to NIfTI and to DICOM of other modalities)"
            )
        if task == "ct":
            check_ct_rescale(header, source)
        return task

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Divide a restored MRI by the ``mri_scale`` its input was multiplied by (used by ``Invertd``)."""
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            ops = image.applied_operations if isinstance(image, MetaTensor) else []
            if not ops or ops[-1].get(TraceKeys.ID) != id(self):
                continue  # nothing was scaled
            op = self.pop_transform(image)
            d[key] = image / float(op[TraceKeys.EXTRA_INFO]["mri_scale"])
        return d


def _dicom_header(source: Path) -> pydicom.Dataset | None:
    """Header of a DICOM file, or of the first file of the one series of a folder; None for anything else."""
    if source.is_dir():
        series = scan_dicom_folder(source)
        source = series[0].files[0] if len(series) == 1 else None
    if source is None or not source.is_file() or is_nifti(source) or not pydicom.misc.is_dicom(source):
        return None
    return read_dicom_header(source)
