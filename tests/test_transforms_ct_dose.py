"""Tests of scripts.transforms.ct_dose (low-dose CT simulation by projection-domain noise insertion)."""

import numpy as np
import pytest
import torch
from _data_factories import disk_mask, water_disk
from scripts.transforms import SimulateLowDoseCT, SimulateLowDoseCTd, ct_noise_variance, water_equivalent_diameter_cm

TARGET_FULL_DOSE_STD_HU = 11.0  # documented calibration target (module docstring of ct_dose)


def _water_disk(size: int = 512, diameter_cm: float = 30.0, pixel_cm: float = 0.07) -> np.ndarray:
    return water_disk(size, diameter_cm, pixel_cm)


def _centre_roi(size: int = 512, radius: int = 50) -> np.ndarray:
    return disk_mask(size, radius)


@pytest.fixture(scope="module")
def full_dose_disk():
    """A noiseless 30 cm water disk simulated at full dose, and its centre noise std."""
    out = SimulateLowDoseCT(dose_fraction=1.0, input_dose_fraction=None, seed=11)(_water_disk())
    return out, float(out[0][_centre_roi()].std())


def test_full_dose_noise_matches_calibration_target(full_dose_disk):
    out, std = full_dose_disk
    assert std == pytest.approx(TARGET_FULL_DOSE_STD_HU, rel=0.15)
    assert abs(float(out[0][_centre_roi()].mean())) < 2.0  # water stays at 0 HU


def test_quarter_dose_doubles_the_noise(full_dose_disk):
    quarter = SimulateLowDoseCT(dose_fraction=0.25, input_dose_fraction=None, seed=12)(_water_disk())
    ratio = float(quarter[0][_centre_roi()].std()) / full_dose_disk[1]
    assert 1.8 < ratio < 2.25


def test_extra_noise_on_a_full_dose_scan_gives_quarter_dose_noise(full_dose_disk):
    """Input already carries full-dose noise: only the difference is added, total = quarter-dose noise."""
    full, std_full = full_dose_disk
    low = SimulateLowDoseCT(dose_fraction=0.25, seed=13)(full)  # input_dose_fraction=1 by default
    roi = _centre_roi()
    assert float(low[0][roi].std()) / std_full == pytest.approx(2.0, rel=0.12)
    # the inserted noise alone has sqrt(4 - 1) times the full-dose std
    assert float((low - full)[0][roi].std()) / std_full == pytest.approx(np.sqrt(3.0), rel=0.12)


def test_noise_independent_of_view_count_and_scales_with_pixel_size():
    """Fixed fluence per cm and per rotation: fewer views, same noise; smaller pixels, std ~ pixel^-1.5."""
    roi = _centre_roi(256, 30)
    std = {}
    for num_angles, pixel_cm in ((360, 0.07), (180, 0.07), (360, 0.05)):
        img = _water_disk(256, diameter_cm=10.0, pixel_cm=pixel_cm)
        t = SimulateLowDoseCT(1.0, input_dose_fraction=None, num_angles=num_angles, pixel_size_cm=pixel_cm, seed=3)
        std[num_angles, pixel_cm] = float(t(img)[0][roi].std())
    assert std[180, 0.07] / std[360, 0.07] == pytest.approx(1.0, rel=0.1)
    assert std[360, 0.05] / std[360, 0.07] == pytest.approx((0.07 / 0.05) ** 1.5, rel=0.1)


def _phantom(size: int) -> np.ndarray:
    off = np.arange(size) - size // 2
    y, x = off[:, None], off[None, :]
    img = np.where((x / (0.42 * size)) ** 2 + (y / (0.3 * size)) ** 2 <= 1, 40.0, -1000.0)
    img[(x - size // 8) ** 2 + y**2 <= (size // 12) ** 2] = 1000.0  # bone, sharp edges
    img[(x + size // 6) ** 2 + (y - 3) ** 2 <= (size // 14) ** 2] = -900.0  # lung
    return img[None].astype(np.float32)


def test_no_blur_signal_is_kept():
    img = _phantom(96)
    # nothing to add: dose equal to the input's dose returns the input exactly
    np.testing.assert_array_equal(SimulateLowDoseCT(dose_fraction=1.0, num_angles=90, seed=0)(img), img)
    # (almost) noiseless counts: projection + FBP blur must not appear, sharp edges survive
    out = SimulateLowDoseCT(dose_fraction=1.0, input_dose_fraction=None, i0=1e15, num_angles=90, seed=0)(img)
    assert float(np.abs(out - img).max()) < 0.5


def test_noise_zero_outside_fov_circle_and_zero_mean():
    img = _phantom(96)
    out = SimulateLowDoseCT(num_angles=90, i0=1e5, seed=1)(img)
    off = np.arange(96) - 48
    outside = off[:, None] ** 2 + off[None, :] ** 2 > 48**2
    np.testing.assert_array_equal(out[0][outside], img[0][outside])
    noise = (out - img)[0][~outside]
    assert noise.std() > 5.0 and abs(noise.mean()) < 0.1 * noise.std()


def test_circle_false_accepts_non_square():
    img = _phantom(64)[:, :, 8:56]
    out = SimulateLowDoseCT(num_angles=60, i0=1e5, circle=False, seed=2)(img)
    assert out.shape == img.shape and np.abs(out - img)[0, 0, 0] > 0  # noise reaches the corners
    with pytest.raises(ValueError, match="square"):
        SimulateLowDoseCT(num_angles=60)(img)


def test_seeded_determinism():
    img = _phantom(64)
    kw = {"num_angles": 60, "i0": 1e5}
    a = SimulateLowDoseCT(seed=5, **kw)(img)
    b = SimulateLowDoseCT(seed=5, **kw)(img)
    c = SimulateLowDoseCT(seed=6, **kw)(img)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    t = SimulateLowDoseCT(**kw).set_random_state(seed=5)
    np.testing.assert_array_equal(t(img), a)
    assert not np.array_equal(t(img), a)  # the next call draws new noise
    np.testing.assert_array_equal(t(img, randomize=False), t(img, randomize=False))


def test_types_and_input_not_modified():
    img = _phantom(64)
    before = img.copy()
    kw = {"num_angles": 60, "i0": 1e5, "seed": 3}
    out = SimulateLowDoseCT(**kw)(img)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(img, before)
    img_t = torch.as_tensor(img)
    out_t = SimulateLowDoseCT(**kw)(img_t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_array_equal(out_t.numpy(), out)
    np.testing.assert_array_equal(img_t.numpy(), before)


def test_volume_slices_get_independent_noise():
    vol = np.repeat(_phantom(48)[..., None], 2, axis=-1)
    out = SimulateLowDoseCT(num_angles=45, i0=1e5, seed=4)(vol)
    assert out.shape == vol.shape
    n0, n1 = (out - vol)[0, ..., 0], (out - vol)[0, ..., 1]
    assert n0.std() > 0 and n1.std() > 0 and abs(np.corrcoef(n0.ravel(), n1.ravel())[0, 1]) < 0.2


def test_noise_variance_formula_against_monte_carlo():
    rng = np.random.default_rng(0)
    p, i0, a, se = 4.0, 1e5, 0.25, 10.0
    lam = i0 * a * np.exp(-p)
    counts = rng.poisson(lam, 400_000) + rng.normal(0.0, se, 400_000)
    var_mc = np.var(-np.log(counts / (i0 * a)))
    assert ct_noise_variance(np.array(p), i0, a, se) == pytest.approx(var_mc, rel=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dose_fraction": 0.0}, "dose_fraction"),
        ({"dose_fraction": 1.5}, "dose_fraction"),
        ({"dose_fraction": 0.5, "input_dose_fraction": 0.25}, "noise cannot be removed"),
        ({"i0": -1.0}, "i0"),
        ({"electronic_noise_std": -1.0}, "electronic_noise_std"),
        ({"num_angles": 0}, "num_angles"),
        ({"body_diameter_cm": 30.0}, "circle=False"),
        ({"body_diameter_cm": -1.0, "circle": False}, "body_diameter_cm"),
        ({"kernel_resolution_cm": 0.0}, "kernel_resolution_cm"),
        ({"aec_reference_diameter_cm": 0.0}, "aec_reference_diameter_cm"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimulateLowDoseCT(**kwargs)


def test_a_crop_in_its_body_gets_the_noise_of_the_whole_body(full_dose_disk):
    """A 11.2 cm crop of the 30 cm disk: alone it is a small object (little noise); in a 30 cm water body its
    centre gets the whole disk's noise (same dose, same pixel size)."""
    _, whole_std = full_dose_disk
    crop = _water_disk()[:, 176:336, 176:336]
    stds = {}
    for body in (None, 30.0):
        simulate = SimulateLowDoseCT(1.0, input_dose_fraction=None, circle=False, body_diameter_cm=body, seed=3)
        stds[body] = float(simulate(crop)[0][_centre_roi(160)].std())
    assert stds[30.0] == pytest.approx(whole_std, rel=0.08)
    assert stds[None] < 0.4 * whole_std


def test_pixels_finer_than_the_kernel_get_the_kernels_noise():
    """A 12 cm water disk at 0.35 mm pixels: a ramp filter gives 2^1.5 times the noise of 0.7 mm pixels; a kernel
    resolving 0.7 mm gives about the 0.7 mm noise."""

    def centre_std(pixel_cm, size, **kwargs):
        disk = _water_disk(size, diameter_cm=12.0, pixel_cm=pixel_cm)
        out = SimulateLowDoseCT(1.0, input_dose_fraction=None, pixel_size_cm=pixel_cm, seed=5, **kwargs)(disk)
        return float(out[0][_centre_roi(size, radius=int(1.5 / pixel_cm))].std())

    coarse = centre_std(0.07, 180)
    assert centre_std(0.035, 360) == pytest.approx(2**1.5 * coarse, rel=0.15)
    assert centre_std(0.035, 360, kernel_resolution_cm=0.07) == pytest.approx(coarse, rel=0.2)


def test_water_equivalent_diameter_of_water_and_air():
    assert water_equivalent_diameter_cm(_water_disk()[0], 0.07) == pytest.approx(30.0, rel=0.01)
    assert water_equivalent_diameter_cm(np.full((64, 64), -1000.0), 0.07) == 0.0
    # denser than water counts more: bone-like 1000 HU doubles the area, so the diameter grows by sqrt(2)
    bone = np.where(_water_disk()[0] == 0.0, 1000.0, -1000.0)
    assert water_equivalent_diameter_cm(bone, 0.07) == pytest.approx(30.0 * np.sqrt(2.0), rel=0.01)


def test_exposure_control_gives_a_small_body_the_noise_of_the_reference(full_dose_disk):
    """A 16 cm water disk (a head): at the calibrated tube output it gets far less noise than the 30 cm disk; with
    exposure control for 30 cm, about the same (the output scales by exp(mu (16 - 30)))."""
    _, reference_std = full_dose_disk
    head = _water_disk(diameter_cm=16.0)
    stds = {}
    for aec in (None, 30.0):
        simulate = SimulateLowDoseCT(1.0, input_dose_fraction=None, aec_reference_diameter_cm=aec, seed=21)
        assert simulate.aec_factor(head[0]) == (1.0 if aec is None else pytest.approx(np.exp(0.1937 * -14), rel=0.02))
        stds[aec] = float(simulate(head)[0][_centre_roi()].std())
    assert stds[None] < 0.45 * reference_std
    assert stds[30.0] == pytest.approx(reference_std, rel=0.15)
    # the reference size itself is unchanged
    ref = SimulateLowDoseCT(1.0, input_dose_fraction=None, aec_reference_diameter_cm=30.0, seed=11)(_water_disk())
    assert float(ref[0][_centre_roi()].std()) == pytest.approx(reference_std, rel=0.05)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        SimulateLowDoseCT()(np.zeros((64, 64), dtype=np.float32))


def test_dict_version_matches_array_version():
    img = _phantom(64)
    kw = {"num_angles": 60, "i0": 1e5}
    d = SimulateLowDoseCTd(keys="image", seed=7, **kw)({"image": img, "label": img})
    np.testing.assert_array_equal(d["image"], SimulateLowDoseCT(seed=7, **kw)(img))
    assert d["label"] is img
    d2 = SimulateLowDoseCTd(keys="image", **kw).set_random_state(seed=7)({"image": img})
    np.testing.assert_array_equal(d2["image"], d["image"])
