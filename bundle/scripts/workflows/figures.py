"""Side-by-side figures of restorations (LQ | restored | HQ | error): PNG files and TensorBoard images.

Pillow only (matplotlib is not a dependency). Every panel of a figure shares one display window: CT in the
soft-tissue window, MRI and PET from the HQ slice's minimum to its maximum; the error panel shows
``|restored - HQ|`` magnified ``ERROR_GAIN`` times in the same window width.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import TensorBoardHandler
from PIL import Image, ImageDraw

from ..atomic import atomic_path
from ..transforms import CT_METRIC_WINDOW

__all__ = ["ERROR_GAIN", "as_item_list", "display_window", "restoration_panel", "save_png", "TaskTripletsHandler"]

#: Magnification of the error panel.
ERROR_GAIN = 4.0
_HEADER = 14  # px of the caption strip above each panel
_GAP = 2  # px between panels


def _as_2d(image: torch.Tensor | np.ndarray) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.asarray(array, dtype=np.float64).squeeze()
    if array.ndim != 2:
        raise ValueError(f"expected one 2-D slice, got shape {array.shape}.")
    return array


def display_window(hq: torch.Tensor | np.ndarray, task: str) -> tuple[float, float]:
    """The grey-level window of a figure: CT's soft-tissue window, else the HQ slice's range.

    Args:
        hq: the high-quality slice, physical units.
        task: "mri", "ct" or "pet".

    Returns:
        ``(low, high)`` with ``high > low``.
    """
    if task == "ct":
        return CT_METRIC_WINDOW
    array = _as_2d(hq)
    low, high = float(array.min()), float(array.max())
    return (low, high) if high > low else (low, low + 1.0)


def _grey(array: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((array - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def restoration_panel(
    lq: torch.Tensor | np.ndarray,
    restored: torch.Tensor | np.ndarray,
    hq: torch.Tensor | np.ndarray,
    task: str,
    with_error: bool = True,
) -> np.ndarray:
    """One captioned figure: LQ | restored | HQ (| error), all physical-unit slices of the same size.

    Args:
        lq: low-quality input slice.
        restored: restored slice.
        hq: high-quality slice.
        task: "mri", "ct" or "pet" (display window).
        with_error: add the ``|restored - HQ|`` panel.

    Returns:
        uint8 grey image (H + caption, width of all panels).
    """
    low, high = display_window(hq, task)
    slices = [_as_2d(lq), _as_2d(restored), _as_2d(hq)]
    if len({s.shape for s in slices}) != 1:
        raise ValueError(f"slices differ in shape: {[s.shape for s in slices]}.")
    panels = [_grey(s, low, high) for s in slices]
    captions = ["LQ", "restored", "HQ"]
    if with_error:
        panels.append(_grey(np.abs(slices[1] - slices[2]) * ERROR_GAIN, 0.0, high - low))
        captions.append(f"|error| x{ERROR_GAIN:g}")
    h, w = panels[0].shape
    canvas = Image.new("L", (len(panels) * (w + _GAP) - _GAP, h + _HEADER), color=0)
    draw = ImageDraw.Draw(canvas)
    for i, (panel, caption) in enumerate(zip(panels, captions, strict=True)):
        canvas.paste(Image.fromarray(panel), (i * (w + _GAP), _HEADER))
        draw.text((i * (w + _GAP) + 2, 1), caption, fill=255)
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 grey image as PNG atomically (temporary file, then rename).

    Args:
        image: (H, W) uint8.
        path: destination; its folder is created.
    """
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


class TaskTripletsHandler(TensorBoardHandler):
    """TensorBoard images LQ | restored | HQ of the first slice of each task, at the end of every evaluation.

    Attach to the evaluator whose postprocessing leaves ``image``, ``pred`` and ``label`` in physical units;
    the task of each slice comes from the batch (``task`` key).

    Args:
        summary_writer: an existing ``SummaryWriter``; None to create one in ``log_dir``.
        log_dir: TensorBoard folder.
        tag_prefix: image tags are ``{tag_prefix}_{task}``.
        global_step_transform: maps the evaluator's epoch (the trainer's, under ``ValidationHandler``) to the
            logged step, e.g. ``lambda epoch: epoch * val_interval`` for iterations.
        task_key: key of the task in the batch.
        sources: task -> label of the other data it is validated on (:mod:`scripts.data.other_tasks`), None for
            the training's own; a labelled task's tag is ``{label}_{tag_prefix}_{task}``.
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag_prefix: str = "val",
        global_step_transform: Callable[[int], int] = lambda epoch: epoch,
        task_key: str = "task",
        sources: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.tag_prefix = tag_prefix
        self.labels = {task: f"{label}_" for task, label in (sources or {}).items() if label}
        self.global_step_transform = global_step_transform
        self.task_key = task_key
        self._first: dict[str, np.ndarray] = {}

    def attach(self, engine: Engine) -> None:
        """Collect during the evaluation, write at its end.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._first.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        """Keep the panel of the first slice of each task seen."""
        for item, output in zip(as_item_list(engine.state.batch), as_item_list(engine.state.output), strict=True):
            task = item[self.task_key]
            if task not in self._first:
                self._first[task] = restoration_panel(
                    output["image"], output["pred"], output["label"], task, with_error=False
                )

    def write(self, engine: Engine) -> None:
        """Log the collected panels."""
        step = self.global_step_transform(engine.state.epoch)
        for task, panel in self._first.items():
            tag = f"{self.labels.get(task, '')}{self.tag_prefix}_{task}"
            self._writer.add_image(tag, panel[None], step, dataformats="CHW")
        self._writer.flush()


def as_item_list(data: Sequence | dict) -> Sequence:
    """Per-item dicts of an engine's decollated ``batch`` / ``output`` (a single dict is taken as one item)."""
    return [data] if isinstance(data, dict) else data
