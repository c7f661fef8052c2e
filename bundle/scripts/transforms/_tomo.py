"""Parallel-beam tomography helpers on top of ``skimage.transform.radon`` / ``iradon`` (private).

Conventions (those of skimage, ``circle=True``): a square S x S grid rotating about pixel
(S // 2, S // 2); the sinogram has S detector bins of one pixel, bin ``i`` at offset
``t = i - S // 2``; a pixel at offset (dr, dc) from the centre projects to ``t = dc cos(theta) - dr sin(theta)``.
Everything outside the inscribed circle of radius S // 2 must be zero.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import downscale_local_mean, iradon, radon

__all__ = ["angles", "circle_mask", "embed_in_circle", "forward", "forward_downsampled", "backproject", "fbp"]


def angles(num_angles: int) -> np.ndarray:
    """``num_angles`` projection angles (degrees) evenly spaced over [0, 180)."""
    return np.linspace(0.0, 180.0, int(num_angles), endpoint=False)


def circle_mask(size: int) -> np.ndarray:
    """Boolean (size, size) mask of the pixels skimage counts as inside the reconstruction circle."""
    off = np.arange(size) - size // 2
    return off[:, None] ** 2 + off[None, :] ** 2 <= (size // 2) ** 2


def embed_in_circle(img: np.ndarray, margin: int = 2) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Centre a 2-D image in the smallest square grid whose inscribed circle holds the whole image.

    Args:
        img: (H, W) image.
        margin: extra pixels of radius, so that interpolation at the corners stays inside the circle.

    Returns:
        The zero-padded square image and the (row, column) slices that crop the original back.
    """
    h, w = img.shape
    radius = int(np.ceil(np.hypot(h // 2, w // 2))) + margin
    size = 2 * radius + 1
    r0, c0 = size // 2 - h // 2, size // 2 - w // 2
    out = np.zeros((size, size), dtype=img.dtype)
    crop = (slice(r0, r0 + h), slice(c0, c0 + w))
    out[crop] = img
    return out, crop


def forward(img: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Line integrals (S bins x len(theta)) of a square image zero outside its inscribed circle."""
    return radon(img, theta, circle=True, preserve_range=True)


def forward_downsampled(img: np.ndarray, theta: np.ndarray, factor: int) -> np.ndarray:
    """Approximate :func:`forward` computed on a grid coarser by ``factor``, resampled to the fine detector.

    The radon transform costs O(S^2) per angle, so this is ``factor**2`` times cheaper. It is meant
    for smooth uses of the line integrals (the noise variance of a CT ray), not for reconstruction:
    detail finer than ``factor`` pixels is averaged out.

    Args:
        img: square (S, S) image, zero outside its inscribed circle.
        theta: projection angles in degrees.
        factor: integer block size of the coarse grid (1 = exact :func:`forward`).

    Returns:
        (S, len(theta)) line integrals in fine-pixel units.
    """
    if factor == 1:
        return forward(img, theta)
    size = img.shape[0]
    pad = (-size) % factor
    padded = np.pad(img, ((0, pad), (0, pad)))
    # a coarse pixel spans `factor` fine pixels of path, so it carries factor x the mean attenuation per pixel
    coarse = downscale_local_mean(padded, (factor, factor)) * factor
    coarse[~circle_mask(coarse.shape[0])] = 0.0
    sino_c = forward(coarse, theta)
    centre_c = coarse.shape[0] // 2
    # the coarse rotation centre sits `delta` fine pixels from the fine one along both axes
    delta = centre_c * factor + (factor - 1) / 2 - size // 2
    t_fine = np.arange(size) - size // 2
    bins_c = np.arange(sino_c.shape[0]) - centre_c
    out = np.empty((size, len(theta)))
    for i, th in enumerate(np.deg2rad(theta)):
        t0 = delta * (np.cos(th) - np.sin(th))
        out[:, i] = np.interp((t_fine - t0) / factor, bins_c, sino_c[:, i], left=0.0, right=0.0)
    return out


def backproject(sino: np.ndarray, theta: np.ndarray, size: int) -> np.ndarray:
    """Unfiltered back-projection onto a (size, size) grid (skimage scales it by pi / (2 len(theta)))."""
    return iradon(sino, theta, output_size=size, filter_name=None, circle=True, preserve_range=True)


def fbp(sino: np.ndarray, theta: np.ndarray, size: int) -> np.ndarray:
    """Filtered back-projection with the ramp filter onto a (size, size) grid."""
    return iradon(sino, theta, output_size=size, filter_name="ramp", circle=True, preserve_range=True)
