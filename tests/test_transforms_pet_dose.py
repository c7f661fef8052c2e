"""Tests of scripts.transforms.pet_dose (low-dose PET simulation, count thinning, OSEM, SUV factor)."""

import math

import numpy as np
import pydicom
import pytest
import torch
from scripts.transforms import SimulateLowDosePET, SimulateLowDosePETd, _tomo, osem, suv_from_dicom, thin_counts

F18_HALF_LIFE_S = 6586.2

# small and fast settings for the tests (the defaults are sized for 192 x 400 slices)
FAST = {"num_angles": 48, "iterations": 3, "subsets": 4}


def _phantom(h: int = 48, w: int = 96) -> np.ndarray:
    y = np.arange(h)[:, None] - h / 2 + 0.5
    x = np.arange(w)[None, :] - w / 2 + 0.5
    img = np.where((y / (0.42 * h)) ** 2 + (x / (0.45 * w)) ** 2 <= 1, 1.0, 0.0)
    img[(y + 4) ** 2 / 36 + (x + 20) ** 2 / 100 <= 1] = 3.0  # "liver"
    return img[None].astype(np.float32)


def _uniform_roi(h: int = 48, w: int = 96) -> np.ndarray:
    y = np.arange(h)[:, None] - h / 2 + 0.5
    x = np.arange(w)[None, :] - w / 2 + 0.5
    return (y - 4) ** 2 + (x - 20) ** 2 <= 8**2


def test_thinning_keeps_one_over_drf_of_the_counts():
    rng = np.random.default_rng(0)
    counts = rng.poisson(50.0, size=200_000)
    thinned = thin_counts(counts, 12.0, rng)
    assert thinned.dtype == np.int64 and np.all(thinned <= counts) and np.all(thinned >= 0)
    assert thinned.sum() / counts.sum() == pytest.approx(1 / 12, rel=0.01)
    # thinning a Poisson variable gives a Poisson variable of mean lambda / DRF: variance equals mean
    assert thinned.var() == pytest.approx(50.0 / 12, rel=0.03)
    assert thinned.mean() == pytest.approx(50.0 / 12, rel=0.01)
    np.testing.assert_array_equal(thin_counts(counts[:100], 1.0, rng), counts[:100])


@pytest.mark.parametrize(("counts", "drf"), [([1, 2], 0.5), ([-1, 2], 2.0), ([1.5, 2.0], 2.0)])
def test_thinning_bad_input_raises(counts, drf):
    with pytest.raises(ValueError):
        thin_counts(np.array(counts), drf, np.random.default_rng(0))


def test_osem_recovers_noiseless_object():
    img = _phantom()[0].astype(np.float64)
    grid, crop = _tomo.embed_in_circle(img)
    theta = _tomo.angles(48)
    sino = _tomo.forward(grid, theta) * 100.0
    support = np.zeros(grid.shape, dtype=bool)
    support[crop] = True
    recon = osem(sino, theta, support, iterations=10, subsets=4)
    assert np.all(recon[~support] == 0)
    inner = _uniform_roi()
    # scale recovered (x 100) and edges aside, the object is reproduced
    assert recon[crop][inner].mean() / 100.0 == pytest.approx(1.0, rel=0.03)
    assert np.corrcoef(recon[crop].ravel(), img.ravel())[0, 1] > 0.97


def test_lower_dose_higher_noise_about_sqrt_drf():
    img, roi = _phantom(), _uniform_roi()
    std = {}
    for drf in (1.0, 4.0, 16.0):
        out = SimulateLowDosePET(drf=drf, total_counts=4e5, seed=1, **FAST)(img)
        std[drf] = float(out[0][roi].std())
    assert 1.5 < std[4.0] / std[1.0] < 2.6
    assert 2.8 < std[16.0] / std[1.0] < 5.5


def test_mean_activity_preserved():
    img = _phantom()
    for drf in (1.0, 12.0):
        out = SimulateLowDosePET(drf=drf, total_counts=4e5, seed=2, **FAST)(img)
        assert float(out.mean()) / float(img.mean()) == pytest.approx(1.0, rel=0.03)
        assert float(out.min()) >= 0.0
    # the scale comes from the count calibration, not the image: doubling the input doubles the output
    a = SimulateLowDosePET(drf=4.0, seed=3, **FAST)(img)
    b = SimulateLowDosePET(drf=4.0, seed=3, **FAST)(2 * img)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-4, atol=1e-5)


def test_pair_has_matched_full_dose_with_less_noise():
    img, roi = _phantom(), _uniform_roi()
    low, full = SimulateLowDosePET(drf=8.0, total_counts=4e5, seed=4, **FAST).simulate_pair(img)
    assert full[0][roi].std() < 0.6 * low[0][roi].std()
    assert float(full.mean()) / float(img.mean()) == pytest.approx(1.0, rel=0.03)
    # the low-dose image of the pair is the one __call__ returns for the same seed
    np.testing.assert_array_equal(low, SimulateLowDosePET(drf=8.0, total_counts=4e5, seed=4, **FAST)(img))


def test_seeded_determinism():
    img = _phantom()
    a = SimulateLowDosePET(seed=5, **FAST)(img)
    np.testing.assert_array_equal(a, SimulateLowDosePET(seed=5, **FAST)(img))
    assert not np.array_equal(a, SimulateLowDosePET(seed=6, **FAST)(img))
    t = SimulateLowDosePET(**FAST).set_random_state(seed=5)
    np.testing.assert_array_equal(t(img), a)


def test_types_shapes_and_input_not_modified():
    img = _phantom()
    img[0, 0, 0] = -0.1  # interpolation undershoot: treated as zero, no error
    before = img.copy()
    out = SimulateLowDosePET(seed=7, **FAST)(img)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(img, before)
    out_t = SimulateLowDosePET(seed=7, **FAST)(torch.as_tensor(img))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_array_equal(out_t.numpy(), out)
    vol = np.stack([img[0], img[0]], axis=-1)[None]
    out_v = SimulateLowDosePET(seed=7, **FAST)(vol)
    assert out_v.shape == vol.shape and not np.array_equal(out_v[..., 0], out_v[..., 1])
    np.testing.assert_array_equal(SimulateLowDosePET(**FAST)(np.zeros((1, 8, 8))), np.zeros((1, 8, 8)))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"drf": 0.5}, "drf"), ({"total_counts": 0}, "total_counts"), ({"subsets": 300}, "subsets")]
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimulateLowDosePET(**kwargs)


def test_dict_version():
    img = _phantom()
    d = SimulateLowDosePETd(keys="image", seed=8, **FAST)({"image": img, "task": "pet"})
    np.testing.assert_array_equal(d["image"], SimulateLowDosePET(seed=8, **FAST)(img))
    d2 = SimulateLowDosePETd(keys="image", full_dose_key="hq", seed=8, **FAST)({"image": img})
    low, full = SimulateLowDosePET(seed=8, **FAST).simulate_pair(img)
    np.testing.assert_array_equal(d2["image"], low)
    np.testing.assert_array_equal(d2["hq"], full)
    with pytest.raises(ValueError, match="one key"):
        SimulateLowDosePETd(keys=["a", "b"], full_dose_key="hq")


# ---------------------------------------------------------------- SUV


def _pet_header(**overrides) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.Modality = "PT"
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.PatientWeight = 72.5
    ds.SeriesDate = "20240102"
    ds.SeriesTime = "110000"
    ds.AcquisitionDate = "20240102"
    ds.AcquisitionTime = "110500.25"
    item = pydicom.Dataset()
    item.RadionuclideTotalDose = 3.7e8
    item.RadionuclideHalfLife = F18_HALF_LIFE_S
    item.RadiopharmaceuticalStartTime = "100000"
    ds.RadiopharmaceuticalInformationSequence = [item]
    for key, value in overrides.items():
        setattr(ds, key, value)
    return ds


def _expected(weight_kg: float, dose: float, elapsed_s: float) -> float:
    return weight_kg * 1000.0 / (dose * 0.5 ** (elapsed_s / F18_HALF_LIFE_S))


def test_suv_factor_hand_computation():
    # injection 10:00:00, series start 11:00:00 -> one hour of decay
    assert suv_from_dicom(_pet_header()) == pytest.approx(_expected(72.5, 3.7e8, 3600.0), rel=1e-9)
    assert suv_from_dicom(_pet_header()) == pytest.approx(72500 / (3.7e8 * math.exp(-math.log(2) * 3600 / 6586.2)))


def test_suv_uses_earlier_acquisition_time_and_start_datetime():
    ds = _pet_header(AcquisitionTime="105000")  # series time moved after the acquisition (post-processing)
    assert suv_from_dicom(ds) == pytest.approx(_expected(72.5, 3.7e8, 3000.0), rel=1e-9)
    ds = _pet_header()
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20240101230000"
    assert suv_from_dicom(ds) == pytest.approx(_expected(72.5, 3.7e8, 12 * 3600.0), rel=1e-9)


def test_suv_midnight_crossing_without_dates():
    ds = _pet_header(SeriesTime="000500", AcquisitionTime="000600")
    del ds.SeriesDate, ds.AcquisitionDate
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "2300"
    assert suv_from_dicom(ds) == pytest.approx(_expected(72.5, 3.7e8, 3900.0), rel=1e-9)


def test_suv_admin_decay_correction_has_no_decay():
    assert suv_from_dicom(_pet_header(DecayCorrection="ADMIN")) == pytest.approx(72500 / 3.7e8)


@pytest.mark.parametrize(
    "tag", ["Units", "PatientWeight", "DecayCorrection", "RadionuclideTotalDose", "RadionuclideHalfLife", "StartTime"]
)
def test_suv_missing_tag_named(tag):
    ds = _pet_header()
    item = ds.RadiopharmaceuticalInformationSequence[0]
    if tag == "StartTime":
        del item.RadiopharmaceuticalStartTime
        tag = "RadiopharmaceuticalStartTime"
    elif tag in item:
        delattr(item, tag)
    else:
        delattr(ds, tag)
    with pytest.raises(ValueError, match=tag):
        suv_from_dicom(ds)


def test_suv_other_errors():
    with pytest.raises(ValueError, match="BQML"):
        suv_from_dicom(_pet_header(Units="CNTS"))
    with pytest.raises(ValueError, match="NONE"):
        suv_from_dicom(_pet_header(DecayCorrection="NONE"))
    ds = _pet_header()
    del ds.SeriesTime, ds.AcquisitionTime
    with pytest.raises(ValueError, match="SeriesTime"):
        suv_from_dicom(ds)
    ds = _pet_header()
    del ds.RadiopharmaceuticalInformationSequence
    with pytest.raises(ValueError, match="RadiopharmaceuticalInformationSequence"):
        suv_from_dicom(ds)
