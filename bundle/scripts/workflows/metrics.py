"""Restoration metrics in the units of the released AMIR code, per slice and averaged over tasks.

Images are compared in physical units, clipped to the modality's window (CT to the [-160, 240] HU soft-tissue
window); PSNR and SSIM use the data range of each high-quality slice; SSIM counts the border pixels (zero padding,
as the released code's convolution with ``padding=5``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.handlers import from_engine
from monai.metrics.regression import compute_ssim_and_cs
from monai.utils import evenly_divisible_all_gather

from ..transforms import CT_METRIC_WINDOW, MODALITY_WINDOWS

logger = logging.getLogger(__name__)

__all__ = ["METRIC_NAMES", "SSIM_WINDOW", "metric_window", "restoration_metrics", "RestorationMetrics"]

#: The metrics reported per slice, in this order.
METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "rmse")

#: Gaussian SSIM window (size, sigma) of the released code.
SSIM_WINDOW: tuple[int, float] = (11, 1.5)

_PRED_LABEL = from_engine(["pred", "label"])
_TASKS = from_engine(["task"])
_IDS = from_engine(["id"])


def metric_window(task: str) -> tuple[float, float]:
    """The physical window both images are clipped to before the metrics.

    Args:
        task: "mri", "ct" or "pet".

    Returns:
        ``CT_METRIC_WINDOW`` for CT, else the modality's normalisation window.

    Raises:
        ValueError: unknown task.
    """
    if task not in MODALITY_WINDOWS:
        raise ValueError(f"Unknown task {task!r}; valid tasks are {sorted(MODALITY_WINDOWS)}.")
    return CT_METRIC_WINDOW if task == "ct" else MODALITY_WINDOWS[task]


def restoration_metrics(pred: torch.Tensor, target: torch.Tensor, task: str) -> dict[str, float]:
    """PSNR, SSIM and RMSE of one slice, as the released code computes them.

    Args:
        pred: restored slice in physical units, any shape whose last two axes are (H, W) and others are 1.
        target: high-quality slice, same shape.
        task: "mri", "ct" or "pet": chooses the clipping window.

    Returns:
        ``{"psnr": dB, "ssim": [-1, 1], "rmse": physical units}``. The data range is that of the clipped target;
        a constant target (range 0) falls back to the window's width. A prediction holding NaN gives NaN
        values; an exact restoration (MSE 0, e.g. of a constant slice) an infinite PSNR.

    Raises:
        ValueError: shapes differ, or unknown task.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}.")
    low, high = metric_window(task)
    # float64: MRI squares reach 1.7e7, where float32 loses the variances' low digits
    p = torch.as_tensor(pred).detach().double().clamp(low, high).reshape(1, 1, *pred.shape[-2:])
    t = torch.as_tensor(target).detach().double().clamp(low, high).reshape(1, 1, *target.shape[-2:])
    data_range = float(t.max() - t.min()) or (high - low)
    mse = float(torch.mean((p - t) ** 2))
    # NaN stays NaN: "mse > 0 else inf" turned the MSE of a NaN prediction into an infinite PSNR
    psnr = math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
    # SSIM is scale-invariant given C1, C2 scale with the data range: scaling to range 1 keeps MONAI's float32
    # convolutions accurate; zero-padding by half the window keeps the border pixels, as the released code does.
    size, sigma = SSIM_WINDOW
    pad = [size // 2] * 4
    ssim_map, _ = compute_ssim_and_cs(
        F.pad(p / data_range, pad), F.pad(t / data_range, pad), 2, [size] * 2, [sigma] * 2, data_range=1.0
    )
    return {"psnr": psnr, "ssim": float(ssim_map.double().mean()), "rmse": math.sqrt(mse)}


class RestorationMetrics(Metric):
    """Ignite metric: per-slice PSNR, SSIM and RMSE, averaged per task, then over tasks.

    Attached to an engine, ``output_transform`` maps ``engine.state.output`` to ``(preds, targets)``: sequences
    of (1, H, W) physical-unit images (sizes may differ between slices), and ``batch_transform`` maps
    ``engine.state.batch`` to their task names (MONAI's evaluators keep the items' other keys, such as ``task``,
    in the batch, not in the output). ``update`` takes ``(preds, targets, tasks)`` directly. In a distributed run
    every rank's slices are gathered before averaging.

    When attached under ``name``, ``engine.state.metrics[name]`` holds ``{prefix}{key}`` (default: PSNR
    averaged over the tasks, the paper's model-selection metric) and every other value is added beside it:
    ``{prefix}psnr``, ``{prefix}ssim`` (averaged over tasks) and ``{prefix}{metric}_{task}`` for each task seen.
    A task that ``sources`` labels (validated on other data than the training's, e.g. the demo set's) is reported
    as ``{label}_{prefix}{metric}_{task}`` and left out of the averages, so the key metric is the trained tasks'.

    Args:
        tasks: task order, used to encode tasks for the gather; others raise.
        key: metric reported under the attached name ("psnr" or "ssim").
        prefix: prefix of the reported names.
        output_transform: maps the engine output to ``(preds, targets)``.
        batch_transform: maps the engine batch to the tasks.
        device: where the metric accumulates (the gather's device in a distributed run).
        sources: task -> label of the data its slices come from, None for the training's own data
            (:func:`scripts.data.other_tasks.task_sources`); None: every task is the training's.
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("mri", "ct", "pet"),
        key: str = "psnr",
        prefix: str = "val_",
        output_transform: Callable = _PRED_LABEL,
        batch_transform: Callable = _TASKS,
        device: str | torch.device = "cpu",
        sources: Mapping[str, str | None] | None = None,
    ) -> None:
        if key not in ("psnr", "ssim"):
            raise ValueError(f"key must be 'psnr' or 'ssim', got {key!r}.")
        self.labels = {task: label for task, label in (sources or {}).items() if label}
        self.tasks = tuple(dict.fromkeys([*tasks, *self.labels]))
        self.key = key
        self.prefix = prefix
        self.batch_transform = batch_transform
        self._rows: list[list[float]] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        """Forget the slices seen so far."""
        self._rows = []

    def update(self, output: Sequence[Any]) -> None:
        """Add a batch of slices.

        Args:
            output: ``(preds, targets, tasks)`` or ``(preds, targets, tasks, slice ids)``; a slice whose values
                are not finite is logged as an error naming its task and id.
        """
        preds, targets, tasks = output[:3]
        if isinstance(tasks, str):
            tasks = [tasks] * len(preds)
        ids = output[3] if len(output) > 3 and output[3] is not None else [None] * len(preds)
        for pred, target, task, slice_id in zip(preds, targets, tasks, ids, strict=True):
            if task not in self.tasks:
                raise ValueError(f"RestorationMetrics: task {task!r} is not among {self.tasks}.")
            values = restoration_metrics(pred, target, task)
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                logger.error(f"{task} slice {slice_id if slice_id is not None else '?'}: non-finite metrics {bad}")
            self._rows.append([float(self.tasks.index(task))] + [values[m] for m in METRIC_NAMES])

    def iteration_completed(self, engine: Engine) -> None:
        """Add the slices of the engine's current iteration (outputs and their batch's tasks)."""
        preds, targets = self._output_transform(engine.state.output)
        batch = engine.state.batch
        try:
            ids = _IDS(batch)
        except KeyError:  # items without slice ids
            ids = None
        if isinstance(ids, tuple):  # from_engine gives a 1-tuple for a collated batch
            ids = ids[0]
        self.update((preds, targets, self.batch_transform(batch), ids))

    def compute(self) -> dict[str, float]:
        """Average per task, then over the tasks present of the training's own data.

        Returns:
            The reported names and values (see the class docstring).
        """
        rows = torch.tensor(self._rows, dtype=torch.float64).reshape(-1, 1 + len(METRIC_NAMES))
        if dist.is_available() and dist.is_initialized():
            rows = evenly_divisible_all_gather(rows.to(self._device), concat=True).cpu()
        if rows.shape[0] == 0:
            raise RuntimeError("RestorationMetrics: no slices were evaluated.")
        result: dict[str, float] = {}
        per_task: dict[str, torch.Tensor] = {}
        for index, task in enumerate(self.tasks):
            selected = rows[rows[:, 0] == index, 1:]
            if selected.shape[0]:
                per_task[task] = selected.mean(dim=0)
        own = [means for task, means in per_task.items() if task not in self.labels]
        if not own:
            raise RuntimeError(f"RestorationMetrics: no slices of the training's own tasks (only of {self.labels}).")
        for name in ("psnr", "ssim"):
            column = METRIC_NAMES.index(name)
            result[f"{self.prefix}{name}"] = float(torch.stack([means[column] for means in own]).mean())
        for task, means in per_task.items():
            label = f"{self.labels[task]}_" if task in self.labels else ""
            for column, name in enumerate(METRIC_NAMES):
                result[f"{label}{self.prefix}{name}_{task}"] = float(means[column])
        return result

    def completed(self, engine: Engine, name: str) -> None:
        """Store every value in ``engine.state.metrics`` and the key metric under ``name`` (a scalar)."""
        result = self.compute()
        engine.state.metrics.update(result)
        engine.state.metrics[name] = result[f"{self.prefix}{self.key}"]
