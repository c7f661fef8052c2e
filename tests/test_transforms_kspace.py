"""Tests of scripts.transforms.kspace (MRI k-space truncation and zero-filling)."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation
from scripts.transforms import (
    KSpaceCrop,
    KSpaceCropd,
    KSpaceZeroFill,
    KSpaceZeroFilld,
    kspace_truncate,
    kspace_window,
    zero_fill_affine,
)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def _kept_points(img: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean map of the non-zero (fftshifted) k-space points of the truncated complex image."""
    # float64 throughout, so round-off (~1e-16) is far below the smallest kept coefficient
    z = kspace_truncate(torch.as_tensor(img, dtype=torch.float64), fraction).numpy()[0]
    spec = np.fft.fftshift(np.fft.fft2(z, norm="ortho"))
    return np.abs(spec) > 1e-9 * np.abs(spec).max()


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 31, 45)])
def test_fraction_one_is_identity(shape):
    img = _rand(shape)
    np.testing.assert_allclose(KSpaceCrop(1.0)(img), img, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "fraction"), [(32, 32, 0.25), (31, 45, 0.25), (33, 27, 0.3), (16, 20, 0.5)])
def test_exactly_k_by_k_points_kept_in_centred_window(h, w, fraction):
    kept = _kept_points(_rand((1, h, w), seed=1), fraction)
    kh, kw = max(1, round(h * fraction)), max(1, round(w * fraction))
    assert kept.sum() == kh * kw
    rows, cols = np.nonzero(kept)
    # window starts at N//2 - k//2; the zero frequency (fftshift index N//2) is inside it
    assert rows.min() == h // 2 - kh // 2 and rows.max() == h // 2 - kh // 2 + kh - 1
    assert cols.min() == w // 2 - kw // 2 and cols.max() == w // 2 - kw // 2 + kw - 1
    assert kspace_window(h, fraction) == slice(h // 2 - kh // 2, h // 2 - kh // 2 + kh)


def test_default_keeps_6_25_percent_of_points():
    kept = _kept_points(_rand((1, 256, 256), seed=2), 0.25)
    assert kept.sum() / kept.size == pytest.approx(0.0625)


def test_energy_equals_energy_of_kept_window():
    """Parseval, computed independently with numpy: the truncated image holds exactly the window's energy."""
    img = _rand((1, 40, 36), seed=3)
    spec = np.fft.fftshift(np.fft.fft2(img[0].astype(np.float64), norm="ortho"))
    expected = (np.abs(spec[kspace_window(40, 0.25), kspace_window(36, 0.25)]) ** 2).sum()
    got = (np.abs(kspace_truncate(torch.as_tensor(img), 0.25).numpy()) ** 2).sum()
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (31, 33)])
def test_band_limited_image_passes_unchanged(h, w):
    k_h, k_w = round(h * 0.25), round(w * 0.25)
    y, x = np.mgrid[:h, :w]
    # frequencies strictly below k/2: both +f and -f are inside the window, positive image so |.| is the identity
    fy, fx = k_h // 2 - 1, k_w // 2 - 1
    img = (3.0 + np.cos(2 * np.pi * fy * y / h) + 0.5 * np.sin(2 * np.pi * fx * x / w + 0.3))[None].astype(np.float32)
    np.testing.assert_allclose(KSpaceCrop()(img), img, atol=1e-5)


def test_high_frequencies_are_removed():
    h = w = 32
    y, x = np.mgrid[:h, :w]
    img = (2.0 + np.cos(2 * np.pi * 10 * x / w))[None].astype(np.float32)  # 10 > k/2 = 4
    np.testing.assert_allclose(KSpaceCrop()(img), np.full_like(img, 2.0), atol=1e-5)


def test_numpy_in_numpy_out_torch_in_torch_out():
    img = _rand((1, 16, 24))
    out_np = KSpaceCrop()(img)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == img.shape
    out_t = KSpaceCrop()(torch.as_tensor(img, dtype=torch.float64))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == img.shape
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-6)


def test_input_not_modified():
    img = _rand((1, 16, 16))
    img_t = torch.as_tensor(img.copy())
    before, before_t = img.copy(), img_t.clone()
    KSpaceCrop()(img)
    KSpaceCrop()(img_t)
    np.testing.assert_array_equal(img, before)
    assert torch.equal(img_t, before_t)


def test_volume_equals_slicewise():
    vol = _rand((1, 20, 18, 5), seed=4)
    out = KSpaceCrop(0.3)(vol)
    for z in range(vol.shape[-1]):
        np.testing.assert_allclose(out[..., z], KSpaceCrop(0.3)(vol[..., z]), atol=1e-6)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fraction_raises(fraction):
    with pytest.raises(ValueError, match="fraction"):
        KSpaceCrop(fraction)


@pytest.mark.parametrize("shape", [(16, 16), (2, 16, 16), (1, 4, 4, 4, 4)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match="shape"):
        KSpaceCrop()(np.zeros(shape, dtype=np.float32))


def test_complex_input_raises():
    with pytest.raises(TypeError, match="real"):
        KSpaceCrop()(np.zeros((1, 8, 8), dtype=np.complex64))


def test_dict_version_wraps_array_version():
    img = _rand((1, 24, 24), seed=5)
    data = {"image": img, "label": img.copy(), "task": "mri"}
    out = KSpaceCropd(keys="image")(data)
    np.testing.assert_array_equal(out["image"], KSpaceCrop()(img))
    assert out["label"] is data["label"] and out["task"] == "mri"
    assert data["image"] is img  # the input dictionary is not modified
    with pytest.raises(KeyError):
        KSpaceCropd(keys="missing")(data)
    assert "missing" not in KSpaceCropd(keys="missing", allow_missing_keys=True)(data)


def band_limited(points: np.ndarray, period: float = 256.0) -> np.ndarray:
    """A positive image, periodic over ``period`` mm, with frequencies below 32 cycles: exact on a 64-point grid.

    Args:
        points: (..., 2) world coordinates in mm.
    """
    x, y = points[..., 0] / period, points[..., 1] / period
    return (
        1000.0
        + 300 * np.cos(2 * np.pi * 3 * x + 0.3) * np.sin(2 * np.pi * 5 * y + 1.1)
        + 200 * np.cos(2 * np.pi * (31 * x + 30 * y))
        + 100 * np.sin(2 * np.pi * -17 * y + 0.2)
    )


def voxel_centres(affine: np.ndarray, shape) -> np.ndarray:
    """World (x, y) of every voxel centre of a 2-D grid, shape (*shape, 2)."""
    i, j = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return np.stack(
        [affine[0, 0] * i + affine[0, 1] * j + affine[0, 3], affine[1, 0] * i + affine[1, 1] * j + affine[1, 3]], -1
    )


@pytest.mark.parametrize("size", [64, 63])
def test_zero_fill_restores_a_band_limited_image_on_the_fine_grid(size):
    spacing = 256.0 / size  # the same 256 mm field of view, 64 or 63 samples
    coarse_affine = np.diag([spacing, spacing, 1.0, 1.0])
    values = band_limited(voxel_centres(coarse_affine, (size, size)))[None]
    coarse = MetaTensor(torch.as_tensor(values, dtype=torch.float32), affine=torch.as_tensor(coarse_affine))
    fine = KSpaceZeroFill(4)(coarse)
    assert fine.shape == (1, 4 * size, 4 * size)
    affine = fine.affine.numpy()
    assert np.allclose(np.diag(affine)[:2], spacing / 4)
    assert np.allclose(affine[:2, 3], -1.5 * spacing / 4)  # first fine centre: coarse edge + half a fine voxel
    # the field of view (outer edges) and its centre are those of the coarse grid
    assert np.allclose(
        affine[0, 3] - affine[0, 0] / 2 + np.arange(2) * 4 * size * affine[0, 0], [-spacing / 2, 256 - spacing / 2]
    )
    expected = band_limited(voxel_centres(affine, fine.shape[1:]))
    np.testing.assert_allclose(fine[0].numpy(), expected, atol=2e-3)
    np.testing.assert_allclose(
        fine[0, ::4, ::4].numpy().mean(), band_limited(voxel_centres(coarse_affine, (size, size))).mean(), rtol=1e-5
    )


def test_zero_fill_of_a_volume_is_slicewise_with_separate_factors_and_keeps_the_input():
    volume = torch.as_tensor(_rand((1, 12, 10, 3)))
    before = volume.clone()
    out = KSpaceZeroFill((2, 3))(volume)
    assert out.shape == (1, 24, 30, 3) and out.dtype == torch.float32
    for k in range(3):
        torch.testing.assert_close(out[..., k], KSpaceZeroFill((2, 3))(volume[..., k]))
    assert torch.equal(volume, before)
    assert isinstance(KSpaceZeroFill(2)(_rand((1, 8, 8))), np.ndarray)
    same = MetaTensor(volume)
    assert KSpaceZeroFill(1)(same) is same  # factor 1: nothing to do


def test_zero_fill_updates_the_stored_geometry_of_a_reoriented_volume():
    stored_affine = np.array([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])  # axes A, L, S
    image = MetaTensor(torch.rand(1, 20, 24, 5), affine=torch.as_tensor(stored_affine))
    image.meta["spatial_shape"], image.meta["original_affine"] = np.array([20, 24, 5]), stored_affine
    oriented = Orientation(axcodes="PLS", labels=None)(image)  # as SliceOrientationd does: the first axis is flipped
    fine = KSpaceZeroFill(2)(oriented)
    assert fine.shape == (1, 40, 48, 5)
    assert list(fine.meta["spatial_shape"]) == [40, 48, 5]
    stored_fine = zero_fill_affine(stored_affine, (20, 24), (40, 48))
    np.testing.assert_allclose(fine.meta["original_affine"], stored_fine)
    # undoing the orientation on the fine grid lands on the stored fine grid (the grid is flip-symmetric)
    back = Orientation(axcodes="ALS", labels=None)(fine)
    np.testing.assert_allclose(back.affine.numpy(), stored_fine, atol=1e-9)
    assert [op["class"] for op in fine.applied_operations] == ["Orientation"]  # the zero-fill is not inverted


@pytest.mark.parametrize("factor", [0.5, 0, float("nan"), (2, 0.9)])
def test_bad_zero_fill_factor_raises(factor):
    with pytest.raises(ValueError, match="factor"):
        KSpaceZeroFill(factor)


def test_dict_zero_fill_applies_to_mri_items_only():
    fill = KSpaceZeroFilld("image", factor=2, task_key="task")
    mri = fill({"image": _rand((1, 8, 8)), "task": "mri"})
    assert mri["image"].shape == (1, 16, 16)
    ct = {"image": _rand((1, 8, 8)), "task": "ct"}
    assert fill(ct)["image"] is ct["image"]
    with pytest.raises(KeyError, match="task"):
        fill({"image": _rand((1, 8, 8))})
    assert KSpaceZeroFilld("image", factor=2)({"image": _rand((1, 8, 8))})["image"].shape == (1, 16, 16)
