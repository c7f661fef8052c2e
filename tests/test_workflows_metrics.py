"""Metrics in the released code's units: per-slice PSNR / SSIM / RMSE and their task averages."""

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scipy.ndimage import correlate
from scripts.workflows import RestorationMetrics, metric_window, restoration_metrics
from skimage.metrics import structural_similarity


def reference_metrics(pred: np.ndarray, target: np.ndarray, low: float, high: float) -> dict:
    """Independent float64 computation of the released code's metrics (zero-padded Gaussian SSIM, and its map)."""
    p, t = np.clip(pred, low, high), np.clip(target, low, high)
    data_range = t.max() - t.min()
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2

    def filt(x):
        return correlate(x, window, mode="constant", cval=0.0)

    mx, my = filt(p), filt(t)
    sxx, syy, sxy = filt(p * p) - mx**2, filt(t * t) - my**2, filt(p * t) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    mse = np.mean((p - t) ** 2)
    return {
        "psnr": 10 * math.log10(data_range**2 / mse),
        "ssim": ssim_map.mean(),
        "rmse": math.sqrt(mse),
        "map": ssim_map,
    }


@pytest.mark.parametrize("task, scale, offset", [("mri", 3000.0, 0.0), ("ct", 600.0, -300.0), ("pet", 12.0, 0.0)])
def test_matches_independent_computation(task, scale, offset):
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (40, 36)) * scale + offset
    pred = target + rng.normal(0, 0.05 * scale, target.shape)
    got = restoration_metrics(torch.tensor(pred)[None], torch.tensor(target)[None], task)
    want = reference_metrics(pred, target, *metric_window(task))
    assert got["psnr"] == pytest.approx(want["psnr"], abs=1e-9)
    assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-12)
    assert got["ssim"] == pytest.approx(want["ssim"], abs=1e-5)


def test_ssim_is_skimage_inside_and_counts_the_zero_padded_border():
    # skimage averages the SSIM map without its 5-px border; the released code zero-pads and keeps the border
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 4000, (48, 48))
    pred = np.clip(target + rng.normal(0, 150, target.shape), 0, 4095)  # inside the MRI window: no clipping
    ours = restoration_metrics(torch.tensor(pred)[None], torch.tensor(target)[None], "mri")["ssim"]
    skimage_ssim = structural_similarity(
        pred, target, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=np.ptp(target)
    )
    reference = reference_metrics(pred, target, 0, 4095)
    assert reference["map"][5:-5, 5:-5].mean() == pytest.approx(skimage_ssim, abs=1e-10)
    assert ours == pytest.approx(reference["ssim"], abs=1e-5)
    assert abs(ours - skimage_ssim) > 1e-4  # the border counts


def test_ct_is_clipped_to_soft_tissue_window():
    target = torch.full((1, 20, 20), 100.0)
    target[..., :10] = -100.0
    pred = target.clone()
    pred[..., 0, 0] = 5000.0  # clipped to 240 HU before the error
    values = restoration_metrics(pred, target, "ct")
    assert values["rmse"] == pytest.approx(math.sqrt((240.0 - -100.0) ** 2 / 400))
    # data range from the clipped HQ slice: 200 HU
    assert values["psnr"] == pytest.approx(10 * math.log10(200.0**2 / ((340.0**2) / 400)))


def test_constant_target_and_perfect_prediction_stay_defined():
    target = torch.zeros(1, 16, 16)
    values = restoration_metrics(target + 1.0, target, "pet")
    assert math.isfinite(values["psnr"])  # range 0 falls back to the window width (20)
    assert values["psnr"] == pytest.approx(10 * math.log10(20.0**2 / 1.0))
    assert restoration_metrics(target, target, "pet")["psnr"] == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        restoration_metrics(target, torch.zeros(1, 16, 17), "pet")
    with pytest.raises(ValueError, match="Unknown task"):
        restoration_metrics(target, target, "xray")


def test_task_average_and_reported_names():
    metric = RestorationMetrics(tasks=("mri", "ct"))
    rng = np.random.default_rng(2)
    mri = [torch.tensor(rng.uniform(0, 3000, (1, 24, 24))) for _ in range(3)]
    ct = [torch.tensor(rng.uniform(-150, 230, (1, 32, 20)))]
    noisy = [x + 30.0 for x in mri] + [x + 10.0 for x in ct]
    metric.update((noisy, mri + ct, ["mri"] * 3 + ["ct"]))
    result = metric.compute()
    mri_psnr = np.mean([restoration_metrics(p, t, "mri")["psnr"] for p, t in zip(noisy[:3], mri, strict=True)])
    ct_psnr = restoration_metrics(noisy[3], ct[0], "ct")["psnr"]
    assert result["val_psnr_mri"] == pytest.approx(mri_psnr)
    assert result["val_psnr"] == pytest.approx((mri_psnr + ct_psnr) / 2)  # tasks weigh equally
    assert set(result) == {"val_psnr", "val_ssim"} | {
        f"val_{m}_{t}" for m in ("psnr", "ssim", "rmse") for t in "mri ct".split()
    }

    engine = Engine(lambda e, b: None)
    metric.completed(engine, "val_psnr")
    assert engine.state.metrics["val_psnr"] == result["val_psnr"]
    assert engine.state.metrics["val_rmse_ct"] == result["val_rmse_ct"]


def test_tasks_of_other_data_are_labelled_and_left_out_of_the_key_metric():
    metric = RestorationMetrics(tasks=("mri",), sources={"mri": None, "ct": "demo", "pet": "demo"})
    rng = np.random.default_rng(3)
    images = {t: torch.tensor(rng.uniform(0, 8, (1, 24, 24))) for t in ("mri", "ct", "pet")}
    images["ct"] = images["ct"] * 40 - 150
    noisy = {t: x + (5.0 if t == "mri" else 1.0) for t, x in images.items()}
    metric.update(([noisy[t] for t in images], list(images.values()), list(images)))
    result = metric.compute()
    assert result["val_psnr"] == result["val_psnr_mri"] and result["val_ssim"] == result["val_ssim_mri"]
    for task in ("ct", "pet"):
        assert result[f"demo_val_psnr_{task}"] == pytest.approx(
            restoration_metrics(noisy[task], images[task], task)["psnr"]
        )
        assert f"val_psnr_{task}" not in result
    only_other = RestorationMetrics(tasks=("mri",), sources={"ct": "demo"})
    only_other.update(([noisy["ct"]], [images["ct"]], ["ct"]))
    with pytest.raises(RuntimeError, match="no slices of the training's own tasks"):
        only_other.compute()


def test_reads_tasks_from_the_engine_batch():
    metric = RestorationMetrics(tasks=("pet",), prefix="")
    engine = Engine(lambda e, b: None)
    target = torch.rand(1, 16, 16) * 10
    engine.state.output = [{"pred": target + 0.5, "label": target}]
    engine.state.batch = [{"task": "pet"}]
    metric.iteration_completed(engine)
    assert metric.compute()["rmse_pet"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not among"):
        metric.update(([target], [target], ["mri"]))
