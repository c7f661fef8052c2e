"""Tests of scripts.transforms.random_dose: CT dose and PET DRF drawn per call, from per-slice noise banks."""

import _data_factories as factories
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scripts.transforms import (
    MODALITY_WINDOWS,
    NoiseBank,
    RandLowDoseCT,
    RandLowDoseCTd,
    RandLowDosePET,
    RandLowDosePETd,
    SimulateLowDoseCT,
    SimulateLowDosePET,
)

PX_CM = 0.25  # 128 px of 0.25 cm: a 32 cm field of view, quick to simulate


def water_disk(size: int = 128, diameter_cm: float = 30.0, pixel_cm: float = PX_CM) -> np.ndarray:
    return factories.water_disk(size, diameter_cm, pixel_cm)


def centre(size: int = 128, radius: int = 20) -> np.ndarray:
    return factories.disk_mask(size, radius)


def pet_phantom() -> np.ndarray:
    x = np.zeros((1, 64, 56), np.float32)
    x[0, 10:54, 8:48] = 4.0
    x[0, 26:38, 20:36] = 10.0
    return x


def test_ct_dose_varies_in_range_log_uniformly_and_is_fixed_for_a_point_range():
    hq = water_disk()
    t = RandLowDoseCT((0.15, 0.4), pixel_size_cm=PX_CM, bank_size=4, seed=0)
    doses, stds = [], []
    for _ in range(40):
        out = t(hq)
        doses.append(t.dose_fraction)
        stds.append(float((out - hq)[0][centre()].std()))
    doses = np.array(doses)
    assert doses.min() >= 0.15 and doses.max() <= 0.4 and len(np.unique(doses)) == 40
    assert abs(np.median(np.log(doses)) - np.log(np.sqrt(0.15 * 0.4))) < 0.15  # log-uniform: median near 0.245
    # lower dose, more noise: the inserted std follows sqrt(1/a - 1)
    expected = np.sqrt(1 / doses - 1)
    assert np.corrcoef(expected, stds)[0, 1] > 0.95
    fixed = RandLowDoseCT((0.25, 0.25), pixel_size_cm=PX_CM, bank_size=4, seed=0)
    first, second = fixed(hq), fixed(hq)
    assert fixed.dose_fraction == 0.25 and not np.array_equal(first, second)  # fixed dose, new noise


@pytest.mark.parametrize("dose", [0.15, 0.4])
def test_ct_banked_noise_level_matches_the_exact_simulation(dose):
    hq = water_disk()
    t = RandLowDoseCT((dose, dose), pixel_size_cm=PX_CM, bank_size=8, seed=1)
    banked = np.mean([float((t(hq) - hq)[0][centre()].std()) for _ in range(8)])
    exact = np.mean(
        [float((SimulateLowDoseCT(dose, pixel_size_cm=PX_CM, seed=s)(hq) - hq)[0][centre()].std()) for s in range(8)]
    )
    assert banked == pytest.approx(exact, rel=0.05)


def test_ct_determinism_with_a_seed_and_banks_independent_of_order():
    a, b = water_disk(), water_disk(diameter_cm=20.0)
    one = RandLowDoseCT(pixel_size_cm=PX_CM, bank_size=3, seed=7)
    two = RandLowDoseCT(pixel_size_cm=PX_CM, bank_size=3, seed=7)
    np.testing.assert_array_equal(one(a), two(a))
    three = RandLowDoseCT(pixel_size_cm=PX_CM, bank_size=3, seed=8)
    assert not np.array_equal(three(a), one(a))
    # the bank of a slice comes from its content: the same whatever came before
    fresh, other = (RandLowDoseCT(pixel_size_cm=PX_CM, bank_size=3) for _ in range(2))
    fresh(b)
    fresh.set_random_state(9)
    other.set_random_state(9)
    np.testing.assert_array_equal(fresh(a), other(a))
    # repeat the last draw
    out = one(a)
    np.testing.assert_array_equal(one(a, randomize=False), out)


def test_noise_bank_is_computed_once_per_slice_and_least_recently_used_dropped():
    calls = []

    def simulate(x, seed):
        calls.append(seed)
        return np.full_like(x, seed % 7, dtype=np.float32)

    bank = NoiseBank(size=3, cache_size=1)
    x, y = np.zeros((4, 4)), np.ones((4, 4))
    first = bank.get(x, (), simulate)
    assert first.shape == (3, 4, 4) and len(set(calls)) == 3
    bank.get(x, (), simulate)
    assert len(calls) == 3  # cached
    bank.get(y, (), simulate)
    bank.get(x, (), simulate)
    assert len(calls) == 9  # x was dropped when y came in


def test_pet_drf_varies_in_range_noise_scales_and_activity_stays_non_negative():
    _, hq = SimulateLowDosePET(12, seed=3).simulate_pair(pet_phantom())
    region = np.s_[0, 12:24, 10:46]
    t = RandLowDosePET((8.0, 20.0), bank_size=4, seed=0)
    drfs, stds = [], []
    for _ in range(30):
        out = t(hq)
        assert float(out.min()) >= 0.0
        drfs.append(t.drf)
        stds.append(float((out - hq)[region].std()))
    drfs = np.array(drfs)
    assert drfs.min() >= 8.0 and drfs.max() <= 20.0 and len(np.unique(drfs)) == 30
    assert np.corrcoef(np.sqrt(drfs - 1), stds)[0, 1] > 0.9
    banked = RandLowDosePET((12.0, 12.0), bank_size=6, seed=1)
    level = np.mean([float((banked(hq) - hq)[region].std()) for _ in range(6)])
    exact = []
    for s in range(6):
        low, high = SimulateLowDosePET(12, seed=100 + s).simulate_pair(pet_phantom())
        exact.append(float((low - high)[region].std()))
    assert level == pytest.approx(np.mean(exact), rel=0.15)  # the bank is built on the HQ, not on the phantom


def test_pet_determinism_with_a_seed():
    hq = SimulateLowDosePET(12, seed=3).simulate_pair(pet_phantom())[1]
    one, two = RandLowDosePET(bank_size=2, seed=5), RandLowDosePET(bank_size=2, seed=5)
    np.testing.assert_array_equal(one(hq), two(hq))
    assert one.drf == two.drf


def ct_item(task="ct", size=128, **extra):
    hq = MetaTensor(torch.from_numpy(water_disk(size)), meta={"filename_or_obj": "hq.nii.gz"})
    lq = MetaTensor(torch.zeros(1, size, size), meta={"filename_or_obj": "lq.nii.gz"})
    return {"image": lq, "label": hq, "task": task, **extra}


def test_dict_versions_change_only_their_task_and_are_off_without_a_range():
    item = ct_item(spacing=[PX_CM * 10, PX_CM * 10], body_diameter_cm=0.0)
    ct = RandLowDoseCTd(dose_range=(0.2, 0.3), bank_size=2)
    ct.set_random_state(0)
    out = ct(item)
    assert out["label"] is item["label"] and out["image"] is not item["image"]
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (1, 128, 128)
    assert 0.2 <= ct.transform.dose_fraction <= 0.3
    assert float((out["image"] - out["label"])[0][torch.from_numpy(centre())].std()) > 1.0
    for other in (ct_item(task="mri"), ct_item(task="pet")):
        assert ct(other)["image"] is other["image"]
    off = RandLowDoseCTd(dose_range=None)
    assert off(item)["image"] is item["image"]
    assert RandLowDosePETd(drf_range=None)(ct_item(task="pet"))["image"].sum() == 0
    assert RandLowDosePETd(bank_size=1)(item)["image"] is item["image"]  # a CT item: not PET's


def test_dict_ct_reads_the_items_geometry():
    """A 16 cm crop of a 30 cm water body: with its body diameter it gets the noise of the whole body's paths (at a
    fixed tube output: exposure control would raise the output for the small crop alone)."""
    crop = water_disk(256, pixel_cm=0.125)[:, 64:192, 64:192]
    item = {"image": np.zeros_like(crop), "label": crop, "task": "ct", "spacing": 1.25}
    levels = {}
    for body in (0.0, 30.0):
        t = RandLowDoseCTd(dose_range=(0.25, 0.25), bank_size=2, aec_reference_diameter_cm=None)
        t.set_random_state(0)
        out = t({**item, "body_diameter_cm": body})
        levels[body] = float((out["image"] - crop)[0][centre()].std())
    assert levels[30.0] > 3 * levels[0.0]


def test_dict_windowed_images_are_degraded_in_physical_units():
    low, high = MODALITY_WINDOWS["ct"]
    hu = water_disk()
    windowed = np.clip((hu - low) / (high - low), 0, 1)
    item = {"image": np.zeros_like(hu), "label": windowed, "task": "ct", "spacing": [2.5, 2.5]}
    plain, wind = RandLowDoseCTd(bank_size=2), RandLowDoseCTd(bank_size=2, window="ct")
    plain.set_random_state(4)
    wind.set_random_state(4)
    hu_out = plain({**item, "label": hu})["image"]
    win_out = wind(item)["image"]
    assert win_out.min() >= 0.0 and win_out.max() <= 1.0
    np.testing.assert_allclose(win_out, np.clip((hu_out - low) / (high - low), 0, 1), atol=1e-5)
    pet = RandLowDosePETd(bank_size=1, window="pet")
    out = pet({"image": None, "label": np.full((1, 32, 32), 0.25, np.float32), "task": "pet"})["image"]
    assert out.shape == (1, 32, 32) and 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandLowDoseCT((0.4, 0.15)), "low <= high"),
        (lambda: RandLowDoseCT((0.0, 0.3)), "dose_range"),
        (lambda: RandLowDoseCT((0.1, 0.6), input_dose_fraction=0.5), "dose_range"),
        (lambda: RandLowDoseCT(i0=-1.0), "i0"),
        (lambda: RandLowDosePET((0.5, 4.0)), "drf_range"),
        (lambda: RandLowDosePET(reference_drf=1.0), "reference_drf"),
        (lambda: NoiseBank(size=0), "size"),
        (lambda: RandLowDoseCTd(keys=("image",)), "keys"),
    ],
)
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_only_single_slices_are_accepted():
    with pytest.raises(ValueError, match="shape"):
        RandLowDoseCT(bank_size=1)(np.zeros((1, 32, 32, 2), np.float32))
