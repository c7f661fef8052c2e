"""Tests of scripts.transforms.kspace (MRI k-space truncation)."""

import numpy as np
import pytest
import torch
from scripts.transforms import KSpaceCrop, KSpaceCropd, kspace_truncate, kspace_window


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
