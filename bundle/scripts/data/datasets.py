"""From a data list to a MONAI dataset: one item per slice, cached loading of the LQ / HQ pairs."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD, pickle_hashing
from monai.transforms import Compose
from monai.utils import convert_to_tensor, look_up_option

from ..atomic import atomic_path, remove_stale_temporaries
from .loading import is_nifti
from .slices import TASK_PLANES, TASKS, DataError, limit_per_task, nifti_info, volume_slices

__all__ = ["slice_items", "make_dataset", "CheckedPersistentDataset", "cache_entry_damage"]

logger = logging.getLogger(__name__)


def cache_entry_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with a cache entry (a ``torch.save`` zip archive), or None if it is whole.

    Args:
        path: the entry.

    Returns:
        ``"empty (0 bytes)"``, ``"truncated or not a torch archive"``, the member failing its CRC-32 check, or the
        reason it cannot be read; None for an archive whose members all match their checksums.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return "truncated or not a torch archive"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if bad is None else f"{bad} fails its CRC check"


class CheckedPersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` whose cache entries are written whole and checked when read.

    MONAI writes an entry in the system's temporary folder and moves it into the cache, with a plain copy when that
    is another file system: a disk that fills leaves a 0-byte or partial entry, and every later run stops on it
    (``EOFError``, no file named). Here an entry is written to a temporary name in the cache folder and renamed
    (:func:`scripts.atomic.atomic_path`): it is whole or absent, and a write that fails for want of space is a
    :class:`~scripts.atomic.DiskFullError` naming the folder. An entry that is empty, truncated, fails its CRC check
    (:func:`cache_entry_damage`) or cannot be loaded is named in a warning, deleted and built again. Entries are not
    fsynced: after a power loss one may be empty, and it is then found and rebuilt. The checksums of an entry are
    checked once per process (and again when the file changes): checking costs about as much as loading.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked: set[tuple[str, int, int]] = set()  # (path, size, mtime) of entries whose checksums matched

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        entry = self.cache_dir / f"{name}.pt"
        if entry.is_file():
            stat = entry.stat()
            version = (os.fspath(entry), stat.st_size, stat.st_mtime_ns)
            problem = None if version in self._checked else cache_entry_damage(entry)
            if problem is None:
                self._checked.add(version)
                try:
                    return torch.load(entry, weights_only=self.weights_only)
                except Exception as e:  # noqa: BLE001 (whatever the reason, the entry is built again)
                    problem = f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            logger.warning(f"{entry}: damaged cache entry, {problem}; it is built again.")
            entry.unlink(missing_ok=True)
        item = self._pre_transform(deepcopy(item_transformed))  # keep the original hashed
        try:
            with atomic_path(entry) as tmp, open(tmp, "wb") as f:
                torch.save(
                    convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta),
                    f,
                    pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
                    pickle_protocol=self.pickle_protocol,
                )
        except PermissionError:  # a read-only cache is used as it is (as MONAI does, project-monai/monai#3613)
            pass
        return item


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
        cache_dir: folder of a :class:`CheckedPersistentDataset` (one ``.pt`` file per item, written atomically in
            this folder, checked when read, kept across runs; keyed by the item and, through ``hash_transform``, the
            deterministic transforms' settings); temporary files a killed run left there are removed.
        cache_rate: without ``cache_dir``, the fraction of items a ``CacheDataset`` keeps in memory (0: none, a
            plain ``Dataset``).
        num_workers: ``CacheDataset`` workers.
        default_task: task of the items without one (the config's ``modality``); None: every item must have one.
        max_per_task: keep the first slices of each task only (None: all).

    Returns:
        ``CheckedPersistentDataset``, ``CacheDataset`` or ``Dataset``.

    Raises:
        DataError: an item without a task and no ``default_task``, or a volume that cannot be cut.
    """
    items = limit_per_task(slice_items(data, default_task), max_per_task)
    transform = transform if isinstance(transform, Compose) else Compose(transform)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(cache_dir)
        return CheckedPersistentDataset(items, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
    if cache_rate > 0:
        return CacheDataset(items, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    return Dataset(items, transform)
