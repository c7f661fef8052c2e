"""RandPixelSized: one task's slices resampled to a coarser grid drawn per call, the spacing scaled with them."""

import numpy as np
import pytest
import torch
from _data_factories import water_disk
from scripts.transforms import RandLowDoseCTd, RandPixelSized


def _item(task: str = "ct", size: int = 48) -> dict:
    rng = np.random.default_rng(0)
    hq = torch.from_numpy(rng.normal(0.0, 1.0, (1, size, size)).astype(np.float32))
    return {"image": hq + 0.1, "label": hq, "task": task, "spacing": [0.4, 0.4]}


def test_factors_are_drawn_from_the_set_and_the_pair_stays_aligned():
    t = RandPixelSized(factors=(1.0, 2.0, 3.0))
    t.set_random_state(0)
    seen = set()
    for _ in range(40):
        item = _item()
        out = t(item)
        seen.add(t.factor)
        size = round(48 / t.factor)
        assert out["image"].shape == out["label"].shape == (1, size, size)
        assert out["spacing"] == pytest.approx([0.4 * t.factor] * 2)
        # area averaging: every output pixel is the mean of its block, and the pair keeps its difference
        if t.factor == 2.0:
            block = item["label"][0, :2, :2].mean()
            assert float(out["label"][0, 0, 0]) == pytest.approx(float(block), abs=1e-5)
        np.testing.assert_allclose(np.asarray(out["image"]) - np.asarray(out["label"]), 0.1, atol=1e-5)
        assert item["spacing"] == [0.4, 0.4]  # the input item is not modified
    assert seen == {1.0, 2.0, 3.0}


def test_other_tasks_and_the_off_setting_leave_items_unchanged():
    t = RandPixelSized(factors=(2.0,))
    item = _item("mri")
    assert t(item)["label"] is item["label"]
    off = RandPixelSized(factors=None)
    ct = _item()
    out = off(ct)
    assert out["label"] is ct["label"] and out["spacing"] == [0.4, 0.4]


def test_the_dose_transform_after_it_simulates_on_the_coarser_grid():
    """Noise at a coarser pixel is lower (more photons per pixel): the resampled spacing reaches the simulation."""
    disk = water_disk(96, diameter_cm=24.0, pixel_cm=0.3)
    stds = {}
    for factor in (1.0, 2.0):
        item = {"image": disk, "label": disk, "task": "ct", "spacing": [3.0, 3.0]}
        item = RandPixelSized(factors=(factor,))(item)
        dose = RandLowDoseCTd(dose_range=(0.25, 0.25), bank_size=2, aec_reference_diameter_cm=None, seed=0)
        out = dose(item)
        n = out["image"].shape[-1]
        centre = slice(n // 2 - n // 8, n // 2 + n // 8)
        stds[factor] = float(
            np.std(np.asarray(out["image"])[0, centre, centre] - np.asarray(out["label"])[0, centre, centre])
        )
    assert stds[2.0] < 0.8 * stds[1.0]


def test_factors_below_one_raise():
    with pytest.raises(ValueError, match="factors"):
        RandPixelSized(factors=(0.5, 1.0))
