"""Tests of scripts.transforms.random_dose: CT dose (and label noise) and PET DRF drawn per call, from per-slice noise
banks."""

import _data_factories as factories
import numpy as np
import pytest
from scripts.transforms import NoiseBank, RandLowDoseCT, RandLowDosePET, SimulateLowDoseCT, SimulateLowDosePET

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


def test_ct_label_noise_has_the_full_dose_level_and_is_independent_of_the_dose_noise():
    """With ``label_noise_range`` the label is the slice plus full-dose noise (variance 1 / input dose in the inserted
    units: at full input dose, that of an insertion down to half dose) and the LQ adds dose noise independent of it."""
    hq = water_disk()
    t = RandLowDoseCT((0.25, 0.25), pixel_size_cm=PX_CM, bank_size=8, seed=2, label_noise_range=(1.0, 1.0))
    label_std, dose_std, corr = [], [], []
    for _ in range(8):
        label, lq = t.pair(hq)
        label_noise, dose_noise = (label - hq)[0][centre()], (lq - label)[0][centre()]
        label_std.append(float(label_noise.std()))
        dose_std.append(float(dose_noise.std()))
        corr.append(float(np.corrcoef(label_noise.ravel(), dose_noise.ravel())[0, 1]))
    full = np.mean(
        [float((SimulateLowDoseCT(0.5, pixel_size_cm=PX_CM, seed=s)(hq) - hq)[0][centre()].std()) for s in range(8)]
    )
    quarter = RandLowDoseCT((0.25, 0.25), pixel_size_cm=PX_CM, bank_size=8, seed=2)
    plain = np.mean([float((quarter(hq) - hq)[0][centre()].std()) for _ in range(8)])
    assert np.mean(label_std) == pytest.approx(full, rel=0.1)
    assert np.mean(dose_std) == pytest.approx(plain, rel=0.1)  # the LQ's own dose noise is unchanged
    assert abs(np.mean(corr)) < 0.1
    np.testing.assert_array_equal(t(hq, randomize=False), t.pair(hq, randomize=False)[1])


def test_ct_label_noise_fraction_is_drawn_in_range_and_off_keeps_the_label():
    hq = water_disk(64, pixel_cm=0.5)
    t = RandLowDoseCT(pixel_size_cm=0.5, bank_size=2, seed=0, label_noise_range=(0.5, 2.0))
    fractions, stds = [], []
    for _ in range(20):
        label, _ = t.pair(hq)
        fractions.append(t.label_noise)
        stds.append(float((label - hq)[0][centre(64, 10)].std()))
    assert min(fractions) >= 0.5 and max(fractions) <= 2.0 and len(set(fractions)) == 20
    assert np.corrcoef(np.sqrt(fractions), stds)[0, 1] > 0.9  # the label's noise std follows the drawn fraction
    for rng in (None, (0.0, 0.0)):
        label, lq = RandLowDoseCT(pixel_size_cm=0.5, bank_size=2, seed=0, label_noise_range=rng).pair(hq)
        np.testing.assert_array_equal(label, hq)
        assert float((lq - hq)[0][centre(64, 10)].std()) > 0.3  # 5 mm pixels: little noise per pixel


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandLowDoseCT((0.4, 0.15)), "low <= high"),
        (lambda: RandLowDoseCT((0.0, 0.3)), "dose_range"),
        (lambda: RandLowDoseCT((0.1, 0.6), input_dose_fraction=0.5), "dose_range"),
        (lambda: RandLowDoseCT(i0=-1.0), "i0"),
        (lambda: RandLowDoseCT(label_noise_range=(2.0, 1.0)), "label_noise_range"),
        (lambda: RandLowDoseCT(label_noise_range=(-1.0, 1.0)), "label_noise_range"),
        (lambda: RandLowDoseCT(label_noise_range=(0.0, 1.0), input_dose_fraction=None), "label_noise_range"),
        (lambda: RandLowDosePET((0.5, 4.0)), "drf_range"),
        (lambda: RandLowDosePET(reference_drf=1.0), "reference_drf"),
        (lambda: NoiseBank(size=0), "size"),
    ],
)
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_only_single_slices_are_accepted():
    with pytest.raises(ValueError, match="shape"):
        RandLowDoseCT(bank_size=1)(np.zeros((1, 32, 32, 2), np.float32))
