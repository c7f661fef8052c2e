"""The slice pair the offline data builders (the demo set, the real-image corpus) produce before writing it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SlicePair"]


@dataclass
class SlicePair:
    """One LQ / HQ slice pair of the corpus.

    Attributes:
        task: ``mri``, ``ct`` or ``pet``.
        split: ``train``, ``val`` or ``test``.
        subject: the source's id.
        lq, hq: ``(H, W)`` float32, physical units, in the house orientation.
        spacing: (row, column) pixel size in mm.
        axcodes: the slice's (rows, columns, slice axis) directions, for the NIfTI affine.
        extra: keys added to the data-list item (``spacing``, ``body_diameter_cm``).
    """

    task: str
    split: str
    subject: str
    lq: np.ndarray
    hq: np.ndarray
    spacing: tuple[float, float]
    axcodes: tuple[str, str, str] = ("P", "L", "S")
    extra: dict = field(default_factory=dict)
