"""Slice orientation of 3-D inputs: which stored axis the slices are stacked along, and the reorientation that
lays them as the training slices lay (invertible, so the restoration goes back on the input's grid)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Orientation
from monai.utils import TraceKeys
from nibabel.orientations import aff2axcodes

__all__ = ["through_plane_axis", "SliceOrientationd"]

# In-plane (rows, columns) directions of the training slices per slice-axis family (the data builders' "house"
# orientation: axial (P, L), coronal (I, L), sagittal (I, P)).
_INPLANE: dict[str, tuple[str, str]] = {"SI": ("P", "L"), "AP": ("I", "L"), "LR": ("I", "P")}
_FAMILY: dict[str, str] = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "S": "SI", "I": "SI"}


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
