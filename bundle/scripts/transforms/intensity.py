"""Per-modality intensity windows (the released AMIR code's normalisation) and DICOM CT to HU.

Every modality is clipped to a fixed physical window and min-max scaled to [0, 1]; the inverse maps
network outputs back to physical units. The windows are defined once here (``MODALITY_WINDOWS``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import pydicom
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

from ._common import like_input

__all__ = [
    "AIR_HU",
    "CT_METRIC_WINDOW",
    "MODALITY_WINDOWS",
    "IntensityWindow",
    "IntensityWindowd",
    "dicom_to_hu",
    "get_window",
]

#: (low, high) physical window per modality (released code): CT in HU, MRI in scanner units, PET in SUV.
MODALITY_WINDOWS: dict[str, tuple[float, float]] = {"ct": (-1024.0, 3071.0), "mri": (0.0, 4095.0), "pet": (0.0, 20.0)}

#: Soft-tissue window (HU) the released code clips CT to before computing metrics.
CT_METRIC_WINDOW: tuple[float, float] = (-160.0, 240.0)

#: HU of air, the lower end of the CT window; scanner padding is mapped to it.
AIR_HU: float = -1024.0


def get_window(modality: str) -> tuple[float, float]:
    """The (low, high) window of a modality.

    Args:
        modality: "ct", "mri" or "pet" (case-insensitive).

    Returns:
        The window from ``MODALITY_WINDOWS``.

    Raises:
        ValueError: unknown modality; the message lists the valid ones.
    """
    key = str(modality).lower() if isinstance(modality, str) else None
    if key not in MODALITY_WINDOWS:
        raise ValueError(f"Unknown modality {modality!r}; valid modalities are {sorted(MODALITY_WINDOWS)}.")
    return MODALITY_WINDOWS[key]


class IntensityWindow(Transform):
    """Clip to the modality's window and scale to [0, 1], or (``inverse=True``) map [0, 1] back to physical units.

    Forward: ``clip((x - low) / (high - low), 0, 1)``, which equals clipping ``x`` to
    ``[low, high]`` first. Inverse: ``low + clip(y, 0, 1) * (high - low)``, i.e. the result is
    clipped to the window. Both are MONAI's ``ScaleIntensityRange(..., clip=True)``.

    Args:
        modality: "ct", "mri" or "pet" (windows in ``MODALITY_WINDOWS``).
        inverse: map [0, 1] back to physical units instead.

    Raises:
        ValueError: unknown modality.
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, modality: str, inverse: bool = False) -> None:
        low, high = get_window(modality)
        self.modality = modality.lower()
        self.inverse = inverse
        if inverse:
            self.scaler = ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=low, b_max=high, clip=True)
        else:
            self.scaler = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: image of any shape, numpy or torch.

        Returns:
            float32 image of the same kind and shape.
        """
        # ScaleIntensityRange returns a MetaTensor for numpy input: bring it back to the input's kind
        return like_input(self.scaler(img), img)


class IntensityWindowd(MapTransform):
    """Dictionary version of :class:`IntensityWindow`; the modality may come from each item.

    In all-in-one training every item has its own task, so with ``modality=None`` the window is
    chosen per item from ``data[task_key]`` ("mri" | "ct" | "pet").

    Args:
        keys: keys of the images to window.
        modality: fixed modality for every item, or None to read it from ``data[task_key]``.
        task_key: key of the item's modality when ``modality`` is None.
        inverse: map [0, 1] back to physical units instead.
        allow_missing_keys: do not raise if a key is missing.

    Raises:
        ValueError: unknown modality (at construction, or per item when read from the data).
        KeyError: ``modality`` is None and the item has no ``task_key``.
    """

    backend = IntensityWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        modality: str | None = None,
        task_key: str = "task",
        inverse: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.task_key = task_key
        self.inverse = inverse
        self.windows = {m: IntensityWindow(m, inverse) for m in MODALITY_WINDOWS}
        self.modality = None if modality is None else IntensityWindow(modality, inverse).modality

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """
        Args:
            data: dictionary holding the images under ``keys`` (and the task under ``task_key``).

        Returns:
            A shallow copy of ``data`` with the images windowed.
        """
        d = dict(data)
        modality = self.modality
        if modality is None:
            if self.task_key not in d:
                raise KeyError(f"IntensityWindowd: modality=None but the item has no {self.task_key!r} key.")
            modality = d[self.task_key]
            if isinstance(modality, np.ndarray) and modality.ndim == 0:
                modality = modality.item()
            get_window(modality)  # clear ValueError for an unknown task
        window = self.windows[modality.lower()]
        for key in self.key_iterator(d):
            d[key] = window(d[key])
        return d


def dicom_to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """Hounsfield units of a CT DICOM slice: ``pixel * RescaleSlope + RescaleIntercept``, padding set to air.

    Scanner padding (pixels outside the reconstructed field of view) becomes air, -1024 HU, the
    lower end of the CT window:

    - stored values equal to ``PixelPaddingValue`` (or in the range up to
      ``PixelPaddingRangeLimit``) when the tag is present;
    - every value below -1024 HU, which covers the usual -2000 / -3024 HU outside-FOV fill written
      without the tag. Nothing real attenuates less than air, so only noise in air is lost.

    Args:
        ds: a single- or multi-frame CT dataset with pixel data and the rescale tags.

    Returns:
        float32 array in HU, (H, W) for one frame, (F, H, W) for a multi-frame dataset.

    Raises:
        ValueError: a required tag (RescaleSlope, RescaleIntercept, PixelData) is missing.
    """
    for tag in ("RescaleSlope", "RescaleIntercept", "PixelData"):
        if tag not in ds:
            raise ValueError(f"dicom_to_hu: the dataset has no {tag} tag.")
    stored = ds.pixel_array
    hu = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "PixelPaddingValue" in ds:
        pad = int(ds.PixelPaddingValue)
        limit = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else pad
        lo, hi = min(pad, limit), max(pad, limit)
        hu[(stored >= lo) & (stored <= hi)] = AIR_HU
    np.maximum(hu, AIR_HU, out=hu)
    return hu.astype(np.float32)
