"""Which folders belong to the bundle: the bundle deletes or replaces a folder only if it carries the bundle's marker.

A folder the bundle creates (the demo set, a run folder) gets a small JSON marker file, :data:`MARKER`, naming what
it is. Anything without that marker is the user's: it is never deleted, emptied or overwritten, and a request that
would do so is a :class:`~scripts.errors.UserInputError` saying what to do instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserInputError

__all__ = ["MARKER", "mark_folder", "folder_kind", "is_empty_folder", "check_replaceable"]

#: Name of the marker file in every folder the bundle created.
MARKER = ".amir-bundle.json"


def mark_folder(folder: str | os.PathLike, kind: str) -> Path:
    """Write the marker saying that the bundle created ``folder`` as a ``kind`` (e.g. ``"demo-set"``, ``"run"``).

    Returns:
        The marker's path.
    """
    path = Path(folder) / MARKER
    path.write_text(json.dumps({"created_by": "amir_bundle", "kind": kind}) + "\n")
    return path


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The ``kind`` of a folder the bundle created, or None for any other folder (or an unreadable marker)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("created_by") != "amir_bundle":
        return None
    return str(marker.get("kind"))


def is_empty_folder(folder: str | os.PathLike) -> bool:
    """True for an existing folder with nothing in it."""
    path = Path(folder)
    return path.is_dir() and not any(path.iterdir())


def check_replaceable(folder: str | os.PathLike, kind: str, hint: str) -> None:
    """Raise unless ``folder`` may be (re)built as a ``kind``: missing, empty, or marked as that kind by the bundle.

    Args:
        folder: the folder about to be built or replaced.
        kind: what the bundle would build there.
        hint: what the user should do instead (appended to the message).

    Raises:
        UserInputError: ``folder`` is a file, or a non-empty folder the bundle did not create as a ``kind``.
    """
    path = Path(folder)
    if not path.exists() or is_empty_folder(path) or (path.is_dir() and folder_kind(path) == kind):
        return
    what = (
        "a file"
        if not path.is_dir()
        else f"a folder the bundle did not create as a {kind.replace('-', ' ')} (no {MARKER})"
    )
    raise UserInputError(f"{path} is {what}; it was left untouched. {hint}")
