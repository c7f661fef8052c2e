"""Classical baselines: k-space bicubic for MRI, tuned Gaussian / TV for CT and PET."""

import math

import numpy as np
import pytest
import torch
from scripts.transforms import KSpaceCrop
from scripts.workflows import (
    ClassicalBaseline,
    gaussian_denoise,
    kspace_bicubic,
    restoration_metrics,
    tune_parameter,
    tv_denoise,
)


def band_limited(h: int = 64, w: int = 48) -> torch.Tensor:
    """A positive (1, H, W) image of one-cycle frequencies, well inside the 4x k-space window."""
    y, x = np.mgrid[0:h, 0:w]
    image = 1500 + 600 * np.cos(2 * np.pi * y / h + 0.3) + 400 * np.sin(2 * np.pi * x / w) * np.cos(2 * np.pi * y / h)
    return torch.as_tensor(image[None], dtype=torch.float32)


def interior_error(restored: torch.Tensor, hq: torch.Tensor, border: int = 4) -> float:
    """Largest error away from the borders (where bicubic's clamped edges meet a periodic image), over the range."""
    inner = (..., slice(border, -border), slice(border, -border))
    return float((restored[inner] - hq[inner]).abs().max() / (hq.max() - hq.min()))


def test_kspace_bicubic_of_band_limited_image_is_close():
    hq = band_limited()
    lq = KSpaceCrop(0.25)(hq)
    restored = kspace_bicubic(lq)
    assert restored.shape == hq.shape and restored.dtype == torch.float32
    assert torch.allclose(restored.mean(), hq.mean(), rtol=1e-3)  # intensities keep their scale
    error = interior_error(restored, hq)
    assert error < 0.02
    # the half-pixel placement matters: the same image shifted by 1.5 px is much further off
    shifted = torch.roll(restored, shifts=(1, 1), dims=(1, 2))
    assert interior_error(shifted, hq) > 3 * error


def test_kspace_bicubic_odd_sizes_and_2d_input():
    hq = band_limited(61, 50)
    out = kspace_bicubic(KSpaceCrop(0.25)(hq)[0])
    assert out.shape == (61, 50)
    assert interior_error(out, hq[0]) < 0.03
    with pytest.raises(ValueError):
        kspace_bicubic(hq, fraction=0.0)


def noisy_pairs(task: str, scale: float, sigma: float, n: int = 2):
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(n):
        hq = torch.zeros(1, 48, 48)
        hq[:, 10:38, 12:30] = scale  # piecewise constant: TV's favourite
        pairs.append((hq + sigma * torch.randn(hq.shape, generator=generator), hq))
    return pairs


def test_tune_parameter_picks_the_best_candidate():
    pairs = noisy_pairs("pet", 10.0, 1.0)
    candidates = (0.0, 0.5, 1.0, 2.0, 8.0)
    best, psnr = tune_parameter(gaussian_denoise, candidates, pairs, "pet")
    scores = [
        np.mean([restoration_metrics(gaussian_denoise(lq, s), hq, "pet")["psnr"] for lq, hq in pairs])
        for s in candidates
    ]
    assert best == candidates[int(np.argmax(scores))] and psnr == pytest.approx(max(scores))
    assert best not in (0.0, 8.0)  # neither no filtering nor a blur of everything
    with pytest.raises(ValueError):
        tune_parameter(gaussian_denoise, (), pairs, "pet")


def test_tv_denoise_keeps_units_and_removes_noise():
    lq, hq = noisy_pairs("ct", 200.0, 40.0)[0]
    out = tv_denoise(lq, 0.05, "ct")
    assert out.shape == lq.shape
    assert restoration_metrics(out, hq, "ct")["psnr"] > restoration_metrics(lq, hq, "ct")["psnr"] + 3
    assert abs(float(out.mean() - hq.mean())) < 5  # HU stay HU


def test_classical_baseline_tunes_per_task_and_beats_noise():
    pairs = {"ct": noisy_pairs("ct", 200.0, 40.0), "pet": noisy_pairs("pet", 10.0, 1.0)}
    items = [{"task": task, "k": i} for task, p in pairs.items() for i in range(len(p))]

    def loader(item):
        lq, hq = pairs[item["task"]][item["k"]]
        return {"image": lq, "label": hq}

    baseline = ClassicalBaseline(items, loader=loader)
    for task, task_pairs in pairs.items():
        lq, hq = task_pairs[0]
        out = baseline(lq, task)
        assert restoration_metrics(out, hq, task)["psnr"] > restoration_metrics(lq, hq, task)["psnr"]
        name, parameter, psnr = baseline.choices[task]
        assert name == "tv"  # piecewise-constant images: TV beats the Gaussian
        assert parameter > 0 and math.isfinite(psnr)
    mri = band_limited()
    assert torch.equal(baseline(KSpaceCrop(0.25)(mri), "mri"), kspace_bicubic(KSpaceCrop(0.25)(mri)))
    with pytest.raises(ValueError, match="no tuning items"):
        ClassicalBaseline([], loader=loader)(pairs["ct"][0][0], "ct")
    with pytest.raises(ValueError, match="Unknown task"):
        baseline(mri, "xray")
