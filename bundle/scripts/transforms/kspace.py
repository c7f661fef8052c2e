"""MRI super-resolution degradation: keep the centre of k-space (the AMIR MRI 4x SR protocol).

MONAI's reconstruction transforms (``monai.apps.reconstruction``) mask k-space lines of complex
multi-coil data for accelerated acquisition; none truncates a centred 2-D window of a magnitude
image, so this one is written here with ``torch.fft``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

from ._common import check_channel_first, like_input

__all__ = ["KSpaceCrop", "KSpaceCropd", "kspace_truncate", "kspace_window"]


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
