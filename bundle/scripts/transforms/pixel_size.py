"""Pixel sizes that vary during training: a full-dose slice resampled to a coarser grid drawn per call.

The corpus's CT training slices have 0.29 and 0.43 mm pixels; clinical body CT is reconstructed at 0.6-1 mm. A
network that only saw fine pixels learns that anatomy is smooth over several pixels and that anything sharper is
noise, and blurs the edges of a coarser image. Resampling the full-dose slice to a coarser grid (area averaging,
MONAI's ``Zoom``), and then simulating the low dose on that grid (:class:`~scripts.transforms.RandLowDoseCTd`, with
the updated ``spacing``), shows the network the pixel sizes it will meet. Both images are resampled so the pair
stays aligned; the LQ must then be made again from the HQ (the dose transform does that), which is why the
resampling belongs before it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Zoom

from ._common import of_task

__all__ = ["RandPixelSized"]


class RandPixelSized(Randomizable, MapTransform):
    """Resample one task's items to a pixel size ``factor`` times coarser, ``factor`` drawn per call from ``factors``.

    Args:
        keys: the image keys resampled (``(1, H, W)`` each, the same size).
        factors: the factors drawn from, each >= 1 (1: unchanged); None or ``(1,)``: off. Few distinct values keep
            the dose transform's noise banks small (one bank per slice and factor).
        task: the task whose items are resampled.
        task_key: item key of the task (None: every item).
        spacing_key: item key of the pixel spacing in mm, multiplied by the factor (None: no spacing kept).
        allow_missing_keys: leave items without the keys unchanged.

    Raises:
        ValueError: a factor below 1.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        factors: Sequence[float] | None = (1.0, 1.5, 2.0),
        task: str = "ct",
        task_key: str | None = "task",
        spacing_key: str | None = "spacing",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.factors = tuple(float(f) for f in (factors or (1.0,)))
        if not self.factors or min(self.factors) < 1.0:
            raise ValueError(f"RandPixelSized: factors must be >= 1, got {factors}.")
        self.task, self.task_key, self.spacing_key = task, task_key, spacing_key
        self.factor = 1.0

    def randomize(self, data: object = None) -> None:
        """Draw the factor of the next call."""
        self.factor = float(self.factors[self.R.randint(len(self.factors))])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: an item.

        Returns:
            A shallow copy, resampled and with the spacing scaled, for items of the task; other items unchanged.
        """
        d = dict(data)
        if not of_task(d, self.task_key, self.task):
            return d
        self.randomize()
        if self.factor == 1.0:
            return d
        zoom = Zoom(1.0 / self.factor, mode="area", keep_size=False)
        for key in self.key_iterator(d):
            d[key] = zoom(d[key])
        if self.spacing_key is not None and d.get(self.spacing_key) is not None:
            d[self.spacing_key] = [float(s) * self.factor for s in np.atleast_1d(d[self.spacing_key])]
        return d
