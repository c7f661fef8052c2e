"""Tests of scripts.transforms.random_dose_dict: the dictionary versions of the drawn-dose transforms."""

import _data_factories as factories
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scripts.transforms import MODALITY_WINDOWS, RandLowDoseCTd, RandLowDosePETd

PX_CM = 0.25


def water_disk(size: int = 128, diameter_cm: float = 30.0, pixel_cm: float = PX_CM) -> np.ndarray:
    return factories.water_disk(size, diameter_cm, pixel_cm)


def centre(size: int = 128, radius: int = 20) -> np.ndarray:
    return factories.disk_mask(size, radius)


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
    real = ct_item(spacing=[PX_CM * 10, PX_CM * 10], body_diameter_cm=0.0, lq_acquired=True)
    assert ct(real)["image"] is real["image"]  # a real low-dose LQ is kept
    assert RandLowDosePETd(bank_size=1)(ct_item(task="pet", lq_acquired=True))["image"].sum() == 0
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


def test_dict_ct_with_label_noise_replaces_the_label_in_its_window():
    low, high = MODALITY_WINDOWS["ct"]
    windowed = np.clip((water_disk() - low) / (high - low), 0, 1).astype(np.float32)
    item = {"image": np.zeros_like(windowed), "label": windowed, "task": "ct", "spacing": [2.5, 2.5]}
    t = RandLowDoseCTd(bank_size=2, window="ct", label_noise_range=(1.0, 1.0))
    t.set_random_state(0)
    out = t(item)
    assert out["label"] is not item["label"] and 0.0 <= out["label"].min() and out["label"].max() <= 1.0
    label_std = float((out["label"] - windowed)[0][centre()].std()) * (high - low)
    dose_std = float((out["image"] - out["label"])[0][centre()].std()) * (high - low)
    assert 0.3 * dose_std < label_std < dose_std  # full-dose noise, below the quarter-dose noise added to it
    np.testing.assert_array_equal(item["label"], windowed)  # the input item is not modified


def test_bad_keys_raise():
    with pytest.raises(ValueError, match="keys"):
        RandLowDoseCTd(keys=("image",))
