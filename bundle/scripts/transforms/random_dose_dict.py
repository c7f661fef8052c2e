"""Dictionary versions of the drawn-dose transforms of :mod:`scripts.transforms.random_dose`: the LQ of one task's
items (and, with CT label noise, their HQ) made from the HQ at a level drawn per item, in physical units or in an
intensity window."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable

from ._common import like_input, of_task, to_numpy
from .intensity import get_window
from .random_dose import RandLowDoseCT, RandLowDosePET, _RandNoiseLevel

__all__ = ["ACQUIRED_KEY", "RandLowDoseCTd", "RandLowDosePETd"]

#: Item key marking an LQ that is a real low-dose acquisition, which no drawn dose may replace.
ACQUIRED_KEY = "lq_acquired"


class _RandNoiseLeveld(Randomizable, MapTransform):
    """Base of the dictionary versions: replace the LQ of one task's items by the HQ plus noise of a drawn level."""

    def __init__(
        self,
        keys: KeysCollection,
        transform: _RandNoiseLevel | None,
        task: str,
        task_key: str | None,
        window: str | Sequence[float] | None,
        allow_missing_keys: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"{type(self).__name__}: keys must be (LQ key, HQ key), got {self.keys}")
        self.image_key, self.label_key = self.keys
        self.transform, self.task, self.task_key = transform, task, task_key
        self.window = None if window is None else (get_window(window) if isinstance(window, str) else tuple(window))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        """Seed the wrapped array transform (see ``Randomizable.set_random_state``)."""
        super().set_random_state(seed, state)
        if self.transform is not None:
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """Draw the next level and noise."""
        if self.transform is not None:
            self.transform.randomize()

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> tuple[NdarrayOrTensor | None, NdarrayOrTensor]:
        """``(new HQ or None if unchanged, LQ)`` of the full-dose ``hq`` (physical units), the level already drawn."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: an item holding the HQ under the second key (physical units, or [0, 1] of ``window``).

        Returns:
            A shallow copy with the LQ key replaced (and the HQ key, if the transform gives the label noise), for
            items of the task; other items, and those whose LQ is a real low-dose acquisition (``"lq_acquired"``,
            :mod:`scripts.data.slices`), unchanged.
        """
        d = dict(data)
        if self.transform is None or not of_task(d, self.task_key, self.task) or d.get(ACQUIRED_KEY):
            return d
        if self.label_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{type(self).__name__}: the item has no {self.label_key!r} (full-dose image).")
        self.randomize()
        hq = d[self.label_key]
        if self.window is None:
            label, lq = self.degrade(hq, d)
        else:
            low, high = self.window
            label, lq = (
                None if v is None else like_input(np.clip((to_numpy(v, np.float32) - low) / (high - low), 0.0, 1.0), hq)
                for v in self.degrade(to_numpy(hq, np.float32) * (high - low) + low, d)
            )
        d[self.image_key] = lq
        if label is not None:
            d[self.label_key] = label
        return d


class RandLowDoseCTd(_RandNoiseLeveld):
    """Dictionary version of :class:`RandLowDoseCT`: the LQ of each CT item becomes its HQ at a dose drawn per call
    (with ``label_noise_range``, the HQ first gets full-dose noise of its own: see :meth:`RandLowDoseCT.pair`).

    Args:
        keys: ``(LQ key, HQ key)``.
        dose_range: see :class:`RandLowDoseCT`; None: off, the items' own LQ is kept (the paper's fixed pairs).
        task_key: item key of the task; only items whose task is ``task`` are changed (None: every item).
        task: the task degraded.
        spacing_key: item key of the in-plane pixel spacing in mm (a number or (row, column); their mean is used),
            overriding ``pixel_size_cm`` where present.
        body_diameter_key: item key of the diameter (cm) of the body a cropped slice was cut from (<= 0: none).
        window: None if the images are in HU; else they are in [0, 1] of this window (a modality name or
            ``(low, high)``, as after :class:`~scripts.transforms.IntensityWindowd`): converted for the simulation,
            and the LQ (and a noisy HQ) is windowed (clipped) again.
        allow_missing_keys: leave items without the HQ key unchanged.
        kwargs: the other arguments of :class:`RandLowDoseCT` (``label_noise_range``, ...).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        dose_range: Sequence[float] | None = (0.15, 0.4),
        task_key: str | None = "task",
        task: str = "ct",
        spacing_key: str | None = "spacing",
        body_diameter_key: str | None = "body_diameter_cm",
        window: str | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        transform = None if dose_range is None else RandLowDoseCT(dose_range, **kwargs)
        super().__init__(keys, transform, task, task_key, window, allow_missing_keys)
        self.spacing_key, self.body_diameter_key = spacing_key, body_diameter_key

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> tuple[NdarrayOrTensor | None, NdarrayOrTensor]:
        """HQ (HU) -> (HQ with label noise or None, LQ) in HU with this item's geometry."""
        spacing = d.get(self.spacing_key) if self.spacing_key is not None else None
        pixel_cm = None if spacing is None else float(np.mean(np.asarray(spacing, dtype=float))) / 10.0
        body = d.get(self.body_diameter_key) if self.body_diameter_key is not None else None
        body_cm = float(body) if body is not None and float(body) > 0 else None
        label, lq = self.transform.pair(hq, pixel_size_cm=pixel_cm, body_diameter_cm=body_cm, randomize=False)
        return (None if self.transform.label_noise_range is None else label), lq


class RandLowDosePETd(_RandNoiseLeveld):
    """Dictionary version of :class:`RandLowDosePET`: the LQ of each PET item becomes its HQ at a DRF drawn per call.

    Args:
        keys: ``(LQ key, HQ key)``.
        drf_range: see :class:`RandLowDosePET`; None: off, the items' own LQ is kept (the paper's fixed pairs).
        task_key: item key of the task; only items whose task is ``task`` are changed (None: every item).
        task: the task degraded.
        window: as for :class:`RandLowDoseCTd` (e.g. ``"pet"``).
        allow_missing_keys: leave items without the HQ key unchanged.
        kwargs: the other arguments of :class:`RandLowDosePET`.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        drf_range: Sequence[float] | None = (8.0, 20.0),
        task_key: str | None = "task",
        task: str = "pet",
        window: str | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        transform = None if drf_range is None else RandLowDosePET(drf_range, **kwargs)
        super().__init__(keys, transform, task, task_key, window, allow_missing_keys)

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> tuple[None, NdarrayOrTensor]:
        """HQ -> (None: the HQ is kept, LQ), same units."""
        return None, self.transform(hq, randomize=False)
