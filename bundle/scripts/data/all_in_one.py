"""All-in-one data list (the union of any subset of the three tasks) and :func:`build_datalist`, the entry point."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .folder import build_folder_datalist
from .ixi import build_ixi_datalist
from .mayo import build_mayo_datalist
from .pet import build_pet_datalist
from .slices import TASKS, DataError, normalize_split

__all__ = ["DATASETS", "TASK_FOLDERS", "find_task_roots", "build_all_in_one_datalist", "build_datalist"]

DATASETS: tuple[str, ...] = ("ixi", "mayo", "pet", "all-in-one", "demo", "folder")
# Sub-folders of an all-in-one dataset_dir recognised per task (case-insensitive).
TASK_FOLDERS: dict[str, tuple[str, ...]] = {
    "mri": ("ixi", "ixi-t2", "ixi_t2", "mri"),
    "ct": ("mayo", "aapm-mayo", "aapm_mayo", "ct"),
    "pet": ("pet",),
}
_BUILDERS: dict[str, Callable[..., list[dict]]] = {
    "mri": build_ixi_datalist,
    "ct": build_mayo_datalist,
    "pet": build_pet_datalist,
}
_TASK_OF = {"ixi": "mri", "mayo": "ct", "pet": "pet"}


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str):
        tasks = (tasks,)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}")
    return tuple(t for t in TASKS if t in tasks)


def find_task_roots(dataset_dir: str | os.PathLike | None, tasks: Sequence[str], **roots: Any) -> dict[str, Path]:
    """The root folder of each task: ``<task>_dir`` if given, else a recognised sub-folder of ``dataset_dir``.

    Args:
        dataset_dir: folder holding ``IXI/``, ``Mayo/`` and ``PET/`` (names in :data:`TASK_FOLDERS`), or None.
        tasks: tasks needed.
        roots: ``mri_dir``, ``ct_dir``, ``pet_dir``; an explicit one wins over ``dataset_dir``.

    Returns:
        ``{task: folder}``.

    Raises:
        DataError: a task whose folder is neither given nor found.
    """
    children: dict[str, Path] = {}
    if dataset_dir is not None:
        base = Path(dataset_dir)
        if not base.is_dir():
            raise DataError(f"{base}: all-in-one dataset folder not found")
        children = {p.name.lower(): p for p in sorted(base.iterdir()) if p.is_dir()}
    found = {}
    for task in tasks:
        explicit = roots.get(f"{task}_dir")
        if explicit is not None:
            found[task] = Path(explicit)
            continue
        match = next((children[n] for n in TASK_FOLDERS[task] if n in children), None)
        if match is None:
            names = "/".join(TASK_FOLDERS[task])
            raise DataError(f"{dataset_dir}: no {task} folder ({names}) and no {task}_dir given")
        found[task] = match
    return found


def build_all_in_one_datalist(
    dataset_dir: str | os.PathLike | None = None,
    tasks: Sequence[str] = TASKS,
    split: str = "train",
    mri_dir: str | os.PathLike | None = None,
    ct_dir: str | os.PathLike | None = None,
    pet_dir: str | os.PathLike | None = None,
    mri_options: Mapping[str, Any] | None = None,
    ct_options: Mapping[str, Any] | None = None,
    pet_options: Mapping[str, Any] | None = None,
) -> list[dict]:
    """The union of the IXI (MRI), AAPM-Mayo (CT) and PET data lists of the chosen tasks.

    Slices of all tasks are simply concatenated (MRI, CT, PET order); as in AMIR, the data loader shuffles them
    together, so the task with most slices dominates.

    Args:
        dataset_dir: folder holding one sub-folder per task (see :func:`find_task_roots`), or None.
        tasks: any non-empty subset of ``("mri", "ct", "pet")``.
        split: ``train``, ``val``, ``test`` or ``all``.
        mri_dir, ct_dir, pet_dir: explicit per-task roots.
        mri_options, ct_options, pet_options: keyword options of the per-task builders
            (:func:`build_ixi_datalist`, :func:`build_mayo_datalist`, :func:`build_pet_datalist`).

    Returns:
        The concatenated items.
    """
    tasks = _check_tasks(tasks)
    roots = find_task_roots(dataset_dir, tasks, mri_dir=mri_dir, ct_dir=ct_dir, pet_dir=pet_dir)
    options = {"mri": mri_options or {}, "ct": ct_options or {}, "pet": pet_options or {}}
    items: list[dict] = []
    for task in tasks:
        items += _BUILDERS[task](roots[task], split=split, **options[task])
    return items


def build_datalist(
    dataset: str,
    dataset_dir: str | os.PathLike | None = None,
    tasks: Sequence[str] = TASKS,
    split: str = "train",
    record_dir: str | os.PathLike | None = None,
    **options: Any,
) -> list[dict]:
    """Build the data list of one data set and split (the function the bundle configs call).

    Args:
        dataset: ``"ixi"``, ``"mayo"``, ``"pet"``, ``"all-in-one"``, ``"demo"`` or ``"folder"`` (a site's own
            images: :mod:`scripts.data.folder`).
        dataset_dir: the data set's folder. Required except for ``"all-in-one"`` given per-task folders, and
            ``"demo"`` (None: the default demo folder, built when missing).
        tasks: tasks to include; a single-task data set must be among them.
        split: ``train``, ``val``, ``test`` or ``all`` (``training`` / ``validation`` / ``testing`` too).
        record_dir: where the ``folder`` data set records its split by volume (the run folder); the other data sets
            ignore it.
        options: the chosen builder's keyword options (e.g. ``seed``, ``subjects``, ``drf``, ``kernel``,
            ``mri_dir``).

    Returns:
        Items in the schema of :mod:`scripts.data.slices`.

    Raises:
        ValueError: unknown data set, task or split.
        DataError: the data set cannot be used, or the split is empty.
    """
    name = dataset.lower().replace("_", "-")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    tasks = _check_tasks(tasks)
    split = normalize_split(split)
    if name == "all-in-one":
        items = build_all_in_one_datalist(dataset_dir, tasks, split, **options)
    elif name == "demo":
        from .demo import build_demo_datalist  # imported late: see scripts.data.__getattr__

        items = build_demo_datalist(dataset_dir, tasks, split, **options)
    elif name == "folder":
        items = build_folder_datalist(dataset_dir, tasks, split, record_dir=record_dir, **options)
    else:
        task = _TASK_OF[name]
        if task not in tasks:
            raise ValueError(f"dataset {dataset!r} holds task {task!r}, which is not among tasks {tasks}")
        if dataset_dir is None:
            raise ValueError(f"dataset {dataset!r} needs dataset_dir")
        items = _BUILDERS[task](dataset_dir, split=split, **options)
    if not items:
        raise DataError(f"{dataset_dir}: dataset {dataset!r} has no {split} items for tasks {tasks}")
    return items
