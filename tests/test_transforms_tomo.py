"""Tests of scripts.transforms._tomo (parallel-beam helpers shared by the CT and PET simulations)."""

import warnings

import numpy as np
import pytest
from scripts.transforms import _tomo


def _ellipses(size: int) -> np.ndarray:
    off = np.arange(size) - size // 2
    y, x = off[:, None], off[None, :]
    img = np.where((x / (0.4 * size)) ** 2 + (y / (0.3 * size)) ** 2 <= 1, 1.0, 0.0)
    img[(x - size // 8) ** 2 + y**2 <= (size // 10) ** 2] += 2.0
    return img


@pytest.mark.parametrize("shape", [(192, 400), (31, 17), (64, 64)])
def test_embed_in_circle_holds_whole_image(shape):
    img = np.random.default_rng(0).uniform(0.5, 1.0, shape)
    grid, crop = _tomo.embed_in_circle(img)
    assert grid.shape[0] == grid.shape[1]
    np.testing.assert_array_equal(grid[crop], img)
    assert grid.sum() == pytest.approx(img.sum())
    assert not grid[~_tomo.circle_mask(grid.shape[0])].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage warns when the image leaks outside its circle
        sino = _tomo.forward(grid, _tomo.angles(8))
    # every angle sees all the activity (bilinear rotation conserves it to within a fraction of a percent)
    np.testing.assert_allclose(sino.sum(axis=0), img.sum(), rtol=5e-3)


def test_fbp_inverts_forward():
    img = _ellipses(64)
    theta = _tomo.angles(128)
    recon = _tomo.fbp(_tomo.forward(img, theta), theta, 64)
    inner = _tomo.circle_mask(64)
    assert np.abs(recon - img)[inner].mean() < 0.05


@pytest.mark.parametrize("factor", [2, 4])
def test_forward_downsampled_close_to_exact(factor):
    img = _ellipses(128)
    theta = _tomo.angles(30)
    exact = _tomo.forward(img, theta)
    approx = _tomo.forward_downsampled(img, theta, factor)
    assert approx.shape == exact.shape
    # mean error a small fraction of the line integrals (errors concentrate at edges)
    assert np.abs(approx - exact).mean() < 0.02 * exact.max()
    np.testing.assert_array_equal(_tomo.forward_downsampled(img, theta, 1), exact)


def test_forward_downsampled_centre_alignment():
    """An off-centre blob lands on the same detector position on the coarse grid as on the fine one."""
    img = np.zeros((128, 128))
    off = np.arange(128) - 64
    img[(off[:, None] + 20) ** 2 + (off[None, :] - 30) ** 2 <= 16] = 1.0
    theta = _tomo.angles(12)
    t = np.arange(128) - 64
    for sino in (_tomo.forward(img, theta), _tomo.forward_downsampled(img, theta, 4)):
        centroid = (sino * t[:, None]).sum(0) / sino.sum(0)
        expected = 30 * np.cos(np.deg2rad(theta)) + 20 * np.sin(np.deg2rad(theta))  # t = dc cos - dr sin
        np.testing.assert_allclose(centroid, expected, atol=0.3)
