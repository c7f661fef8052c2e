"""MRI k-space transforms: the 4x SR degradation (keep the centre of k-space) and zero-filling a real low-res image.

MONAI's reconstruction transforms (``monai.apps.reconstruction``) mask k-space lines of complex
multi-coil data for accelerated acquisition; none truncates a centred 2-D window of a magnitude
image or zero-fills one onto a finer grid, so these are written here with ``torch.fft``.

:class:`KSpaceCrop` makes the network's MRI input from a full-resolution image: the k-space centre on the full
grid. A real low-resolution acquisition (say 64 x 64) holds the same information on a coarse grid;
:class:`KSpaceZeroFill` puts it on the grid the network was trained for (256 x 256) by zero-filling its k-space,
which is what the scanner would have reconstructed from the same k-space centre on the finer matrix.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, TransformBackends, convert_to_numpy, convert_to_tensor, ensure_tuple_rep

from ._common import check_channel_first, like_input

__all__ = [
    "KSpaceCrop",
    "KSpaceCropd",
    "KSpaceZeroFill",
    "KSpaceZeroFilld",
    "kspace_truncate",
    "kspace_window",
    "kspace_zero_fill",
    "zero_fill_affine",
]


def kspace_window(n: int, fraction: float) -> slice:
    """Indices of the centred k-space window kept along one axis (after ``fftshift``).

    ``k = round(n * fraction)`` (Python's round, at least 1) points starting at ``n // 2 - k // 2``;
    ``fftshift`` puts the zero frequency at ``n // 2`` for odd and even ``n`` alike.

    Args:
        n: number of points on the axis.
        fraction: kept fraction of the axis, in (0, 1].

    Returns:
        The slice of kept indices.
    """
    k = max(1, round(n * fraction))
    start = n // 2 - k // 2
    return slice(start, start + k)


def kspace_truncate(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Complex image whose k-space is that of ``x`` inside the centred window, zero outside (no magnitude).

    Args:
        x: real tensor (C, H, W) or (C, H, W, D); the in-plane axes are 1 and 2.
        fraction: kept fraction of each in-plane axis, in (0, 1].

    Returns:
        Complex tensor of the shape of ``x``.
    """
    dims = (1, 2)  # H, W for both (C,H,W) and (C,H,W,D)
    spectrum = torch.fft.fftshift(torch.fft.fftn(x, dim=dims, norm="ortho"), dim=dims)
    mask = torch.zeros(spectrum.shape[1:3], dtype=torch.bool, device=spectrum.device)
    mask[kspace_window(x.shape[1], fraction), kspace_window(x.shape[2], fraction)] = True
    mask = mask.reshape((1, *mask.shape) + (1,) * (x.ndim - 3))
    # torch.where builds a new tensor: x (possibly sharing memory with the caller's input) is never written
    kept = torch.where(mask, spectrum, torch.zeros((), dtype=spectrum.dtype, device=spectrum.device))
    return torch.fft.ifftn(torch.fft.ifftshift(kept, dim=dims), dim=dims, norm="ortho")


class KSpaceCrop(Transform):
    """Low-resolution MRI by truncating k-space to its centre, zero-filled back to the input size.

    Centred 2-D FFT (``norm="ortho"``) over the two in-plane axes, keep the central
    ``k = round(N * fraction)`` points of each in-plane axis (window starting at ``N // 2 - k // 2``),
    zero the rest, inverse FFT, magnitude. With the default ``fraction=0.25`` 6.25 % of the points
    are kept: the 4x super-resolution degradation of AMIR's MRI task (IXI T2).

    Shapes: ``(1, H, W)`` transforms the last two axes; ``(1, H, W, D)`` treats each of the D
    slices independently (in-plane axes H and W, i.e. axes 1 and 2), as for an axial volume whose
    slices are the 2-D training images.

    The result is a magnitude, so ``fraction=1`` returns ``abs(input)`` (the input itself for the
    non-negative magnitude images this is meant for), within float32 round-off.

    Args:
        fraction: kept fraction of each in-plane axis, in (0, 1].

    Raises:
        ValueError: ``fraction`` outside (0, 1], or an input that is not (1,H,W) / (1,H,W,D).
    """

    backend = [TransformBackends.TORCH]  # numpy input is converted to torch and back

    def __init__(self, fraction: float = 0.25) -> None:
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"KSpaceCrop: fraction must be in (0, 1], got {fraction}.")
        self.fraction = float(fraction)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: real image (1,H,W) or (1,H,W,D), numpy or torch.

        Returns:
            The k-space-truncated magnitude image, float32, same kind and shape as ``img``.
        """
        check_channel_first(img, "KSpaceCrop")
        x = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        return like_input(kspace_truncate(x, self.fraction).abs(), img)


class KSpaceCropd(MapTransform):
    """Dictionary version of :class:`KSpaceCrop`.

    Args:
        keys: keys of the images to degrade.
        fraction: kept fraction of each in-plane axis, in (0, 1].
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = KSpaceCrop.backend

    def __init__(self, keys: KeysCollection, fraction: float = 0.25, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.crop = KSpaceCrop(fraction)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """
        Args:
            data: dictionary holding the images under ``keys``.

        Returns:
            A shallow copy of ``data`` with the images replaced by their degraded versions.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.crop(d[key])
        return d


def _zero_fill_axis(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Complex ``x`` resampled to ``size`` points along ``dim`` by zero-filling its spectrum (field of view kept).

    Fine sample ``m`` lies at coarse coordinate ``m * n / size - s`` with ``s = (1 - n / size) / 2``: the first and
    last fine voxels' outer edges are the coarse grid's, so the field of view and its centre stay where they were
    (a linear phase in k-space moves the samples by ``-s``). For even ``n`` the Nyquist coefficient is split in
    half between ``-n/2`` and ``+n/2``, so a real band-limited signal is interpolated exactly and stays real.
    """
    n = x.shape[dim]
    if size == n:
        return x
    coeffs = torch.fft.fft(x, dim=dim, norm="forward")  # c_k: x[t] = sum_k c_k exp(2 pi i k t / n)
    freqs = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)  # integer k, -n/2 (even n) at index n // 2
    shift = 0.5 * (1.0 - n / size)
    view = [1] * x.ndim
    view[dim] = n

    def phase(k: torch.Tensor) -> torch.Tensor:
        return torch.polar(torch.ones_like(k), -2.0 * math.pi * k * shift / n).to(coeffs.dtype)

    shape = list(x.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=coeffs.dtype, device=coeffs.device)
    index = torch.remainder(freqs.long(), size).to(coeffs.device)
    out.index_copy_(dim, index, coeffs * phase(freqs).reshape(view))
    if n % 2 == 0:  # split the Nyquist coefficient between -n/2 and +n/2
        nyquist = coeffs.narrow(dim, n // 2, 1) / 2
        half = torch.tensor([n / 2], dtype=torch.float64)
        out.index_copy_(dim, torch.tensor([size - n // 2], device=out.device), nyquist * phase(-half))
        out.index_copy_(dim, torch.tensor([n // 2], device=out.device), nyquist * phase(half))
    return torch.fft.ifft(out, dim=dim, norm="forward")


def kspace_zero_fill(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Complex image of ``x`` on a finer in-plane grid: its k-space zero-filled to ``size`` (no magnitude).

    Args:
        x: real or complex tensor (C, H, W) or (C, H, W, D); the in-plane axes are 1 and 2.
        size: the new (H, W), each at least the old one.

    Returns:
        Complex tensor (C, *size[, D]); same field of view, intensities kept (see :func:`zero_fill_affine`).
    """
    for dim, target in zip((1, 2), size, strict=True):
        if target < x.shape[dim]:
            raise ValueError(f"kspace_zero_fill: size {tuple(size)} is smaller than the image's {x.shape[1:3]}.")
        x = _zero_fill_axis(x, dim, int(target))
    return x


def zero_fill_affine(
    affine: NdarrayOrTensor, old_size: Sequence[int], new_size: Sequence[int], axes: Sequence[int] = (0, 1)
) -> np.ndarray:
    """The affine of the finer grid :func:`kspace_zero_fill` samples: voxel size scaled, field of view kept.

    Along each spatial axis ``a`` the voxel size is multiplied by ``old / new`` and the origin moves by
    ``-(1 - old / new) / 2`` old voxels, so the outer edges of the grid (the field of view) and its centre stay put.
    The grid is symmetric, so the same formula holds whatever the axis' direction (flipped or not).

    Args:
        affine: ``(d + 1, d + 1)`` voxel-to-world matrix.
        old_size: the old number of voxels along each of ``axes``.
        new_size: the new number of voxels along each of ``axes``.
        axes: spatial axes (columns of ``affine``) that change.

    Returns:
        The new affine, float64.
    """
    out = np.array(convert_to_numpy(affine), dtype=np.float64, copy=True)
    for axis, old, new in zip(axes, old_size, new_size, strict=True):
        ratio = old / new
        out[:-1, -1] -= out[:-1, axis] * 0.5 * (1.0 - ratio)
        out[:-1, axis] *= ratio
    return out


def _stored_axes(current: np.ndarray, original: np.ndarray, ndim: int) -> list[int] | None:
    """For each spatial axis of ``current``, the axis of ``original`` it is (flipped or not); None if not a match."""
    matches = []
    for b in range(ndim):
        col = current[:3, b]
        cos = [abs(float(col @ original[:3, a])) / (np.linalg.norm(col) * np.linalg.norm(original[:3, a]) + 1e-12)
               for a in range(ndim)]  # fmt: skip
        a = int(np.argmax(cos))
        if cos[a] < 0.999 or not np.isclose(np.linalg.norm(col), np.linalg.norm(original[:3, a]), rtol=1e-4):
            return None
        matches.append(a)
    return matches if sorted(matches) == list(range(ndim)) else None


class KSpaceZeroFill(Transform):
    """Bring a low-resolution MRI image onto a finer in-plane grid by zero-filling its k-space (a real low-res scan).

    Each in-plane axis (H and W, axes 1 and 2, as in :class:`KSpaceCrop`) grows from ``N`` to ``round(N * factor)``
    points: the centred spectrum is kept and the new high frequencies are zero, as a scanner reconstructing the
    same k-space centre on a larger matrix would. The result is the magnitude (the network's MRI input is a
    magnitude image). The field of view and its centre are kept, so the voxel size shrinks by ``factor`` and the
    first voxel centre moves half a coarse voxel minus half a fine one towards the grid's edge; a MetaTensor gets
    that affine (:func:`zero_fill_affine`). Its ``spatial_shape`` and ``original_affine`` (the image as read, in
    its stored axis order) are updated too when they can be matched to the current axes, since the restoration
    lives on the fine grid: the transform is not inverted.

    Args:
        factor: zero-filling factor of each in-plane axis (one number or one per axis), at least 1; 1 passes the
            image through.

    Raises:
        ValueError: a factor below 1 or not finite, or an input that is not (1,H,W) / (1,H,W,D).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, factor: float | Sequence[float] = 4) -> None:
        factors = tuple(float(f) for f in ensure_tuple_rep(factor, 2))
        if not all(math.isfinite(f) and f >= 1.0 for f in factors):
            raise ValueError(
                f"KSpaceZeroFill: factor must be a finite number >= 1 (one or one per axis), got {factor}."
            )
        self.factor = factors

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: real image (1,H,W) or (1,H,W,D), numpy or torch (a MetaTensor gets the new affine).

        Returns:
            The zero-filled magnitude image, float32, of the kind of ``img``; ``img`` itself if nothing changes.
        """
        check_channel_first(img, "KSpaceZeroFill")
        old = tuple(int(s) for s in img.shape[1:3])
        new = tuple(max(n, round(n * f)) for n, f in zip(old, self.factor, strict=True))
        if new == old:
            return img
        x = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        out = kspace_zero_fill(x, new).abs()
        if not isinstance(img, MetaTensor):
            return like_input(out, img)
        result = MetaTensor(out.to(img.device), meta=dict(img.meta), applied_operations=list(img.applied_operations))
        result.affine = torch.as_tensor(zero_fill_affine(img.affine, old, new), dtype=torch.float64)
        self._update_source_geometry(
            result.meta, convert_to_numpy(img.affine, dtype=np.float64), old, new, img.ndim - 1
        )
        return result

    @staticmethod
    def _update_source_geometry(meta: dict, affine: np.ndarray, old: tuple, new: tuple, ndim: int) -> None:
        """Put the fine grid in ``spatial_shape`` / ``original_affine`` (stored axis order) when the axes match."""
        shape, original = meta.get(MetaKeys.SPATIAL_SHAPE), meta.get(MetaKeys.ORIGINAL_AFFINE)
        if shape is None or original is None or len(shape) != ndim:
            return
        original = convert_to_numpy(original, dtype=np.float64)
        stored = _stored_axes(affine, original, ndim)
        if stored is None:
            return
        axes = [stored[0], stored[1]]
        new_shape = [int(s) for s in np.asarray(shape).reshape(-1)]
        for axis, size in zip(axes, new, strict=True):
            new_shape[axis] = size
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(new_shape)
        meta[MetaKeys.ORIGINAL_AFFINE] = zero_fill_affine(original, old, new, axes)


class KSpaceZeroFilld(MapTransform):
    """Dictionary version of :class:`KSpaceZeroFill`, optionally for MRI items only.

    Args:
        keys: keys of the images to zero-fill.
        factor: zero-filling factor of each in-plane axis, at least 1 (1: nothing changes).
        task_key: key of the item's task (``"mri"``, ``"ct"``, ``"pet"``, as set by the inference's
            ``ResolveModalityd``); None: every item is zero-filled.
        tasks: the tasks zero-filled when ``task_key`` is given (a CT or PET image is never a k-space crop).
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = KSpaceZeroFill.backend

    def __init__(
        self,
        keys: KeysCollection,
        factor: float | Sequence[float] = 4,
        task_key: str | None = None,
        tasks: Sequence[str] = ("mri",),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.zero_fill = KSpaceZeroFill(factor)
        self.task_key = task_key
        self.tasks = tuple(tasks)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """
        Args:
            data: dictionary holding the images under ``keys`` (and the task under ``task_key``).

        Returns:
            A shallow copy of ``data`` with the images on the finer grid.

        Raises:
            KeyError: ``task_key`` is given but not in ``data``.
        """
        d = dict(data)
        if self.task_key is not None:
            if self.task_key not in d:
                raise KeyError(f"KSpaceZeroFilld: the item has no {self.task_key!r} (resolve the modality first).")
            if d[self.task_key] not in self.tasks:
                return d
        for key in self.key_iterator(d):
            d[key] = self.zero_fill(d[key])
        return d
