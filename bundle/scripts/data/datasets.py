"""From a data list to a MONAI dataset: one item per slice, cached loading of the LQ / HQ pairs."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose

from .loading import is_nifti
from .slices import TASK_PLANES, TASKS, DataError, limit_per_task, nifti_info, volume_slices

__all__ = ["slice_items", "make_dataset"]


def slice_items(
    data: Sequence[Mapping[Hashable, Any]],
    default_task: str | None = None,
    task_key: str = "task",
    label_key: str = "label",
) -> list[dict[Hashable, Any]]:
    """Items of one slice each: give items without a task ``default_task`` and cut whole NIfTI volumes into slices.

    Builders' items (which carry a task and, for volumes, a ``"slice"``) come back unchanged and no file is read.
    An item whose HQ is a 3-D NIfTI volume and which names no ``"slice"`` (e.g. MONAI Label's
    ``{"image": LQ, "label": HQ}``) becomes one item per slice, cut along the plane the data builders use for its
    task (:data:`~scripts.data.slices.TASK_PLANES`, slice axis from the header: see
    :func:`~scripts.data.slices.volume_slices`); only the header is read.

    Args:
        data: data-list items (schema in :mod:`scripts.data.slices`, ``"task"`` optional here).
        default_task: task of the items without one (``"mri"``, ``"ct"``, ``"pet"``), or None.
        task_key: key of the task.
        label_key: key of the HQ path.

    Returns:
        New items (copies), each with a task, in order; a volume's slices in slice order.

    Raises:
        ValueError: ``default_task`` is not a task.
        DataError: an item without a task and no ``default_task`` (the message names the file), or a volume that
            cannot be cut.
    """
    if default_task is not None and default_task not in TASKS:
        raise ValueError(f"modality (default task) must be one of {TASKS} or None, got {default_task!r}")
    items: list[dict[Hashable, Any]] = []
    for item in data:
        task = item.get(task_key) or default_task
        if task is None:
            raise DataError(
                f"{item.get(label_key)}: the item has no {task_key!r} and no modality is set; set --modality "
                'mri|ct|pet (MONAI Label: the training request\'s "modality" option)'
            )
        out = {**item, task_key: task}
        label = item.get(label_key)
        if out.get("slice") is None and label is not None and is_nifti(label) and 1 not in nifti_info(label).shape:
            plane = TASK_PLANES.get(task, "axial")
            items += [{**out, **where} for where in volume_slices(label, plane)]
        else:
            items.append(out)
    return items


def make_dataset(
    data: Sequence[Mapping[Hashable, Any]],
    transform: Sequence[Any] | Any,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 0.0,
    num_workers: int | None = 1,
    default_task: str | None = None,
    max_per_task: int | None = None,
) -> Dataset:
    """Wrap a data list in the MONAI dataset that caches the loaded slice pairs.

    It caches :class:`~scripts.data.loading.LoadSlicePaird` and any deterministic step after it.

    The items first go through :func:`slice_items` (task default, whole volumes cut into slices), then
    :func:`~scripts.data.slices.limit_per_task`; the dataset's ``data`` holds the resulting slice items.

    Args:
        data: items of :func:`scripts.data.build_datalist`, or whole-volume ``{"image", "label"}`` items.
        transform: a transform or a sequence of them, starting with :class:`~scripts.data.loading.LoadSlicePaird`.
        cache_dir: folder of a ``PersistentDataset`` (one ``.pt`` file per item, written atomically by MONAI, kept
            across runs; keyed by the item and, through ``hash_transform``, the deterministic transforms' settings).
        cache_rate: without ``cache_dir``, the fraction of items a ``CacheDataset`` keeps in memory (0: none, a
            plain ``Dataset``).
        num_workers: ``CacheDataset`` workers.
        default_task: task of the items without one (the config's ``modality``); None: every item must have one.
        max_per_task: keep the first slices of each task only (None: all).

    Returns:
        ``PersistentDataset``, ``CacheDataset`` or ``Dataset``.

    Raises:
        DataError: an item without a task and no ``default_task``, or a volume that cannot be cut.
    """
    items = limit_per_task(slice_items(data, default_task), max_per_task)
    transform = transform if isinstance(transform, Compose) else Compose(transform)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
    if cache_rate > 0:
        return CacheDataset(items, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    return Dataset(items, transform)
