"""The tasks a training's data lacks: validated on (and optionally mixed in from) other data, to measure forgetting.

A fine-tuning on one task (e.g. ``--dataset folder --tasks "['mri']"``) changes a network that routes all three.
So each validation also measures the tasks the training data lacks, on the validation split of other data: the
demo set (``val_other_tasks: "demo"``, the default), a folder data set (``val_other_tasks: "/path"``, its
sub-folders of those tasks, :mod:`scripts.data.folder`) or nothing (``val_other_tasks: null``). ``mix_demo: F``
draws a share ``F`` of the training items from the demo set's training split of those tasks, to hold them.

Such items carry :data:`SOURCE_KEY` (``"demo"`` or ``"other"``): the training's own items carry none. The metrics of
a task of other data are reported under that label (``demo_val_psnr_ct``) and left out of the key metric.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .slices import TASKS, DataError

__all__ = ["SOURCE_KEY", "other_source", "mix_share", "missing_tasks", "other_tasks_datalist", "task_sources"]

logger = logging.getLogger(__name__)

#: The item key naming the data an item of another task comes from.
SOURCE_KEY = "source"
_OFF = ("", "none", "null", "false", "off")


def other_source(value: str | os.PathLike | None) -> str | None:
    """The data the other tasks come from (the config's ``val_other_tasks``), checked.

    Args:
        value: ``"demo"``; a folder data set's path; None (or ``"off"``, ``"false"``, ``"none"``: MONAI's command
            line drops a ``None`` override): no other tasks.

    Returns:
        ``"demo"``, the folder's absolute path, or None.

    Raises:
        UserInputError: a path that is not a folder, or a folder without a task sub-folder (``mri/``, ``ct/``,
            ``pet/``): refused before the run's folder is made.
    """
    if value is None or value is False or str(value).strip().lower() in _OFF:
        return None
    if str(value).strip().lower() == "demo":
        return "demo"
    folder = Path(os.path.expanduser(os.fspath(value)))
    if not folder.is_dir() or not _task_folders(folder):
        raise UserInputError(
            f"{value}: --val_other_tasks is neither 'demo' nor a folder data set (a folder of mri/, ct/, pet/ "
            "sub-folders); give one, or off to validate the trained tasks only"
        )
    return os.path.abspath(folder)


def _task_folders(folder: Path) -> set[str]:
    """The tasks ``folder`` has a sub-folder of (names compared case-insensitively, as the folder data set does)."""
    return {p.name.lower() for p in folder.iterdir() if p.is_dir()} & set(TASKS)


def mix_share(share: float | str | None) -> float:
    """The share of training draws from the demo set's other tasks (the config's ``mix_demo``), checked.

    Args:
        share: a number in [0, 1); None: 0.

    Returns:
        The share as a float.

    Raises:
        UserInputError: not a number, or outside [0, 1) (1 would leave no draw of the training data).
    """
    try:
        value = 0.0 if share is None else float(share)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise UserInputError(
            f"--mix_demo {share!r}: the share of each batch drawn from the demo set's other tasks must be a number "
            "in [0, 1), e.g. 0.25; 0 turns the mix off"
        )
    return value


def missing_tasks(items: Sequence[Mapping[Hashable, Any]], default_task: str | None = None) -> list[str]:
    """The tasks of :data:`TASKS` that no item has (an item without a task has ``default_task``)."""
    present = {item.get("task") or default_task for item in items}
    return [task for task in TASKS if task not in present]


def other_tasks_datalist(
    items: Sequence[Mapping[Hashable, Any]],
    source: str | os.PathLike | None = "demo",
    split: str = "validation",
    default_task: str | None = None,
) -> list[dict]:
    """The items of the tasks ``items`` lack, from ``source``, each labelled with :data:`SOURCE_KEY`.

    Args:
        items: the training data's own items (of this split or another).
        source: ``"demo"`` (built when missing), a folder data set's path (the missing tasks it has a sub-folder
            of), or None (no items).
        split: the split of ``source`` to take.
        default_task: the task of own items without one (the config's ``modality``).

    Returns:
        New items, labelled ``"demo"`` or ``"other"``; empty when ``source`` is None or no task is missing.

    Raises:
        UserInputError: ``source`` is not a folder, that folder has no sub-folder of a missing task, or one that
            cannot be used (:func:`scripts.data.folder.build_folder_datalist`).
    """
    source = other_source(source)
    tasks = missing_tasks(items, default_task)
    if source is None or not tasks:
        return []
    from .all_in_one import build_datalist  # late: all_in_one imports the builders of every data set

    if source == "demo":
        found, label = build_datalist("demo", None, tasks, split), "demo"
    else:
        present = _task_folders(Path(source))
        tasks = [task for task in tasks if task in present]
        if not tasks:
            raise DataError(
                f"{source}: --val_other_tasks holds no sub-folder of the tasks the training data lacks "
                f"({', '.join(missing_tasks(items, default_task))}); add one, or give demo or off"
            )
        try:
            found, label = build_datalist("folder", source, tasks, split), "other"
        except DataError as e:
            raise DataError(f"--val_other_tasks: {e}") from None
    where = "the demo set" if label == "demo" else source
    logger.info(f"Tasks the training data lacks, {', '.join(tasks)}: {len(found)} {split} items of {where} ({label}).")
    return [{**item, SOURCE_KEY: label} for item in found]


def task_sources(items: Sequence[Mapping[Hashable, Any]]) -> dict[str, str | None]:
    """Which data each task's items come from: :data:`SOURCE_KEY`'s label, None for the training's own data.

    Args:
        items: items with a task (the validation dataset's ``data``).

    Returns:
        Task -> label or None, in the order of :data:`TASKS`.

    Raises:
        ValueError: a task whose items come from several sources (its metrics would mix them).
    """
    found: dict[str, set] = {}
    for item in items:
        found.setdefault(item.get("task"), set()).add(item.get(SOURCE_KEY))
    mixed = {task: sorted(map(str, labels)) for task, labels in found.items() if len(labels) > 1}
    if mixed:
        raise ValueError(f"tasks whose items come from several data sets: {mixed}")
    return {task: next(iter(found[task])) for task in TASKS if task in found}
