"""Classical baselines of the three tasks, as reference rows of the evaluation report.

- MRI 4x super-resolution: :func:`kspace_bicubic`, the bicubic upsampling of the low-resolution grid the k-space
  crop leaves (centred window of ``k = round(N * 0.25)`` points per axis, inverse FFT at ``k x k``, magnitude,
  bicubic to ``N x N``). The inverse FFT runs unnormalised on a spectrum normalised by ``N``, so intensities keep
  their scale (the mean is unchanged); each low-resolution sample stands where the DFT puts it, at high-resolution
  position ``j * N / k``, so the bicubic grid is shifted to match (a half-pixel convention error alone costs
  several dB).
- Low-dose CT and PET: the better of a Gaussian filter (:func:`gaussian_denoise`) and total-variation denoising
  (:func:`tv_denoise`, scikit-image's ``denoise_tv_chambolle``), each with its parameter tuned on validation pairs
  (:func:`tune_parameter`) by the report's PSNR.

:class:`ClassicalBaseline` is the ``method(image, task)`` callable of :class:`~scripts.workflows.RestorationReport`
that picks the baseline of each task; it tunes the denoisers on first use from a data list (the validation split).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_tv_chambolle

from ..transforms import MODALITY_WINDOWS
from ..transforms.kspace import kspace_window
from .metrics import metric_window, restoration_metrics

__all__ = [
    "GAUSSIAN_SIGMAS",
    "TV_WEIGHTS",
    "kspace_bicubic",
    "gaussian_denoise",
    "tv_denoise",
    "tune_parameter",
    "tuning_items",
    "ClassicalBaseline",
]

logger = logging.getLogger(__name__)

#: Gaussian filter standard deviations tried (pixels).
GAUSSIAN_SIGMAS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
#: TV weights tried, for an image scaled so that the task's metric window spans 1.
TV_WEIGHTS: tuple[float, ...] = tuple(float(w) for w in np.geomspace(0.001, 1.0, 19))

Pair = tuple[torch.Tensor, torch.Tensor]


def _as_numpy_2d(image: torch.Tensor | np.ndarray) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a (1, H, W) or (H, W) slice, got shape {array.shape}.")
    return array


def _like(array: np.ndarray, image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``array`` (H, W) as a float32 tensor of the shape and device of ``image`` (plain tensor, no metadata)."""
    out = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    if isinstance(image, torch.Tensor):
        return out.reshape(image.shape).to(image.device)
    return out.reshape(np.shape(image))


def kspace_bicubic(image: torch.Tensor, fraction: float = 0.25) -> torch.Tensor:
    """Bicubic interpolation of the low-resolution grid of a k-space-cropped image.

    The centred ``k x k`` window of the image's spectrum (``k = round(N * fraction)`` per axis, as
    :class:`~scripts.transforms.KSpaceCrop`) is inverse-transformed at ``k x k`` with a phase ramp that places
    low-resolution sample ``j`` at high-resolution position ``j * N / k + (N / k - 1) / 2``, where bicubic
    interpolation with ``align_corners=False`` expects it; the magnitude is bicubic-upsampled to ``N x N`` and
    clipped at 0. Forward transform divided by ``N`` (per axis), inverse undivided: the intensities keep their
    scale. A band-limited image within the window comes back close to itself.

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` LQ slice (any units).
        fraction: kept fraction of each axis, in (0, 1].

    Returns:
        The upsampled slice, float32, shape and device of ``image``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    x = torch.as_tensor(_as_numpy_2d(image))
    h, w = x.shape
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"))
    rows, cols = kspace_window(h, fraction), kspace_window(w, fraction)
    window = spectrum[rows, cols]
    # integer frequencies of the window (fftshift puts 0 at n // 2)
    fy = torch.arange(rows.start, rows.stop, dtype=torch.float64) - h // 2
    fx = torch.arange(cols.start, cols.stop, dtype=torch.float64) - w // 2
    ky, kx = window.shape
    shift_y, shift_x = (h / ky - 1) / 2, (w / kx - 1) / 2
    ramp = torch.exp(2j * math.pi * (fy[:, None] * shift_y / h + fx[None, :] * shift_x / w))
    low = torch.fft.ifft2(torch.fft.ifftshift(window * ramp), norm="forward").abs()
    up = F.interpolate(low[None, None].float(), size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    return _like(up.clamp_min(0).double().numpy(), image)


def gaussian_denoise(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter (``scipy.ndimage.gaussian_filter``, reflected borders).

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` slice.
        sigma: standard deviation in pixels.

    Returns:
        The filtered slice, float32, shape and device of ``image``.
    """
    return _like(gaussian_filter(_as_numpy_2d(image), sigma=float(sigma), mode="reflect"), image)


def tv_denoise(image: torch.Tensor, weight: float, task: str) -> torch.Tensor:
    """Total-variation denoising (``skimage.restoration.denoise_tv_chambolle``) at a task-independent weight scale.

    The image is divided by the width of the task's metric window (400 HU for CT, the modality window otherwise)
    before denoising and multiplied back after, so one weight grid suits every task.

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` slice in physical units.
        weight: TV weight for the scaled image.
        task: "mri", "ct" or "pet".

    Returns:
        The denoised slice, float32, shape and device of ``image``.
    """
    lo, hi = metric_window(task)
    scale = hi - lo
    array = _as_numpy_2d(image) / scale
    return _like(denoise_tv_chambolle(array, weight=float(weight)) * scale, image)


def tune_parameter(
    denoise: Callable[[torch.Tensor, float], torch.Tensor],
    candidates: Sequence[float],
    pairs: Sequence[Pair],
    task: str,
) -> tuple[float, float]:
    """The candidate parameter with the best mean PSNR (the report's) over the pairs.

    Args:
        denoise: ``denoise(lq, parameter) -> restored``.
        candidates: parameters to try; ties go to the first.
        pairs: ``(LQ, HQ)`` slices in physical units.
        task: task of the pairs (chooses the metric window).

    Returns:
        ``(best parameter, its mean PSNR)``.

    Raises:
        ValueError: no candidates or no pairs.
    """
    if not candidates or not pairs:
        raise ValueError("tune_parameter needs at least one candidate and one pair.")
    best, best_psnr = float(candidates[0]), -math.inf
    for parameter in candidates:
        psnr = float(np.mean([restoration_metrics(denoise(lq, parameter), hq, task)["psnr"] for lq, hq in pairs]))
        if psnr > best_psnr:
            best, best_psnr = float(parameter), psnr
    return best, best_psnr


def tuning_items(
    datalist: Sequence[Mapping[Hashable, Any]], max_per_task: int | None = None
) -> list[Mapping[Hashable, Any]]:
    """The items :class:`ClassicalBaseline` tunes on: the first ``max_per_task`` of CT and of PET (MRI has no
    parameter), so that a data check can read them before the evaluation starts."""
    found: list[Mapping[Hashable, Any]] = []
    for task in ("ct", "pet"):
        found += [item for item in datalist if item.get("task") == task][:max_per_task]
    return found


class ClassicalBaseline:
    """The classical baseline row of the report: ``baseline(image, task) -> restored``.

    MRI: :func:`kspace_bicubic`. CT and PET: the Gaussian filter or TV denoising, whichever has the better PSNR
    on the tuning pairs of the task after both are tuned (:data:`GAUSSIAN_SIGMAS`, :data:`TV_WEIGHTS`). Tuning
    runs on the first call for a task; the choice is logged and kept in :attr:`choices`.

    Args:
        datalist: items of the tuning split (usually the validation split), loaded with ``loader``; tasks without
            items cannot be denoised (an error on use).
        loader: transform turning an item into a dict with ``image`` (LQ) and ``label`` (HQ), ``(1, H, W)`` in
            physical units; default :class:`scripts.data.LoadSlicePaird`.
        kspace_fraction: kept k-space fraction per axis of the MRI task.
        sigmas: Gaussian standard deviations to try.
        weights: TV weights to try.
        max_per_task: tune on at most this many items per task (None: all).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[Hashable, Any]] = (),
        loader: Callable[[Mapping[Hashable, Any]], Mapping[Hashable, Any]] | None = None,
        kspace_fraction: float = 0.25,
        sigmas: Sequence[float] = GAUSSIAN_SIGMAS,
        weights: Sequence[float] = TV_WEIGHTS,
        max_per_task: int | None = None,
    ) -> None:
        self.datalist = list(datalist)
        if loader is None:
            from ..data import LoadSlicePaird

            loader = LoadSlicePaird(("image", "label"))
        self.loader = loader
        self.kspace_fraction = float(kspace_fraction)
        self.sigmas = tuple(sigmas)
        self.weights = tuple(weights)
        self.max_per_task = max_per_task
        #: per task: (name of the chosen method, parameter, tuning PSNR)
        self.choices: dict[str, tuple[str, float, float]] = {}

    def tuning_pairs(self, task: str) -> list[Pair]:
        """The ``(LQ, HQ)`` tuning slices of a task, in physical units."""
        items = [item for item in tuning_items(self.datalist, self.max_per_task) if item.get("task") == task]
        pairs = []
        for item in items:
            data = self.loader(item)
            pairs.append((torch.as_tensor(data["image"]).float(), torch.as_tensor(data["label"]).float()))
        return pairs

    def tune(self, task: str) -> tuple[str, float, float]:
        """Tune both denoisers on the task's pairs and keep the better one.

        Args:
            task: "ct" or "pet" (any task with tuning pairs).

        Returns:
            ``("gaussian" or "tv", parameter, tuning PSNR)``.

        Raises:
            ValueError: no tuning items of the task.
        """
        pairs = self.tuning_pairs(task)
        if not pairs:
            raise ValueError(f"ClassicalBaseline: no tuning items of task {task!r} to tune the denoisers on.")
        sigma, psnr_gauss = tune_parameter(gaussian_denoise, self.sigmas, pairs, task)
        weight, psnr_tv = tune_parameter(lambda x, w: tv_denoise(x, w, task), self.weights, pairs, task)
        choice = ("gaussian", sigma, psnr_gauss) if psnr_gauss >= psnr_tv else ("tv", weight, psnr_tv)
        logger.info(
            f"Classical baseline of {task}: Gaussian sigma {sigma:g} ({psnr_gauss:.2f} dB), TV weight {weight:.4g} "
            f"({psnr_tv:.2f} dB) on {len(pairs)} tuning slices: {choice[0]} chosen."
        )
        self.choices[task] = choice
        return choice

    def __call__(self, image: torch.Tensor, task: str) -> torch.Tensor:
        """The baseline restoration of a slice.

        Args:
            image: ``(1, H, W)`` LQ slice in physical units.
            task: "mri", "ct" or "pet".

        Returns:
            The restored slice, float32, shape and device of ``image``.
        """
        if task not in MODALITY_WINDOWS:
            raise ValueError(f"Unknown task {task!r}; valid tasks are {sorted(MODALITY_WINDOWS)}.")
        if task == "mri":
            return kspace_bicubic(image, self.kspace_fraction)
        name, parameter, _ = self.choices.get(task) or self.tune(task)
        if name == "gaussian":
            return gaussian_denoise(image, parameter)
        return tv_denoise(image, parameter, task)
