"""Atomic file writing: every file the bundle writes appears complete or not at all, and never half-written.

:func:`atomic_path` gives a unique temporary name beside the destination (so two processes writing into one folder
never share one), makes the result an ordinary 0644 file and renames it into place; on an error it removes the
temporary file. A process killed mid-write cannot clean up, so a temporary name says whose it is,
``.<name>.amir-<pid>-<random><suffix>``, and :func:`remove_stale_temporaries` removes on a later run those whose
writer process is gone: only the bundle's own, and never a write still in progress.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ownership import check_replaceable, folder_kind, mark_folder

__all__ = [
    "TEMP_TAG",
    "atomic_path",
    "atomic_folder",
    "write_text_atomic",
    "remove_stale_temporaries",
    "temporary_name",
]

#: Part of every temporary name the bundle writes, before the writer's process id.
TEMP_TAG = ".amir-tmp-"
_TEMPORARY = re.compile(r"^\..+" + re.escape(TEMP_TAG) + r"(?P<pid>\d+)-[A-Za-z0-9_]+(\.[A-Za-z0-9.]+)?$")


def _suffix(name: str) -> str:
    """The extension writers dispatch on (``.nii.gz`` counts as one)."""
    for double in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[-len(double) :]
    return Path(name).suffix


def temporary_name(name: str, pid: int | None = None) -> str:
    """The prefix of the temporary files of ``name`` written by process ``pid`` (this one by default)."""
    return f".{name}{TEMP_TAG}{os.getpid() if pid is None else pid}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; when the block ends without error it becomes ``path``.

    Args:
        path: destination; its folder is created.
        mode: permissions of the result (``mkstemp`` would leave it 0600).

    Yields:
        The temporary path to write to (same folder and extension as ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temporary_name(path.name), suffix=_suffix(path.name))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(target: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield a new folder beside ``target``, marked as the bundle's ``kind``; when the block ends without error, it
    replaces ``target`` (missing, empty, or the bundle's own ``kind``: anything else is left untouched, an error).

    Args:
        target: the folder to create or replace.
        kind: what the bundle builds there (see :mod:`scripts.ownership`).

    Yields:
        The temporary folder to fill (0755, the marker already in it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=temporary_name(target.name)))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the result private
        mark_folder(tmp, kind)
        yield tmp
        if target.exists():
            check_replaceable(target, kind, "It appeared while the bundle was writing its replacement.")
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=temporary_name(target.name)))
            mark_folder(old, kind)  # so that a kill before the removal leaves something the next run removes
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporary files and folders the bundle left in ``folder`` when it was killed mid-write.

    Only names the bundle gives its temporary files are touched (folders only if they also carry the bundle's
    marker), and only those whose writer process is no longer running (a write in progress, in this process or
    another, is left alone).

    Args:
        folder: where to look; a missing folder holds nothing.
        recursive: look in subfolders too.

    Returns:
        The paths removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in root.glob(f"**/.*{TEMP_TAG}*" if recursive else f".*{TEMP_TAG}*"):
        match = _TEMPORARY.match(path.name)
        if not match or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
            continue
        if path.is_symlink():
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
        elif path.is_dir() and folder_kind(path) is not None:  # a folder only if it carries the bundle's marker
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
