"""Atomic file writing: every file the bundle writes appears complete or not at all, and never half-written.

:func:`atomic_path` gives a unique temporary name beside the destination (so two processes writing into one folder
never share one), makes the result an ordinary 0644 file and renames it into place; on an error it removes the
temporary file. A process killed mid-write cannot clean up, so the temporary names carry :data:`TEMP_TAG`, and
:func:`remove_stale_temporaries` removes such leftovers (only the bundle's own, and only old ones) on a later run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TEMP_TAG", "atomic_path", "write_text_atomic", "remove_stale_temporaries"]

#: Part of every temporary name the bundle writes: ``.<name>.amir-tmp-<random><suffix>``.
TEMP_TAG = ".amir-tmp-"


def _suffix(name: str) -> str:
    """The extension writers dispatch on (``.nii.gz`` counts as one)."""
    for double in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[-len(double) :]
    return Path(name).suffix


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
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_TAG}", suffix=_suffix(path.name))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(
    folder: str | os.PathLike, min_age_s: float = 3600.0, recursive: bool = False
) -> list[Path]:
    """Remove the temporary files the bundle left in ``folder`` when it was killed mid-write.

    Only names carrying :data:`TEMP_TAG` are touched, and only those older than ``min_age_s`` (a younger one may be
    another process's write in progress).

    Args:
        folder: where to look; a missing folder holds nothing.
        min_age_s: minimum age of a leftover, in seconds.
        recursive: look in subfolders too.

    Returns:
        The paths removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    pattern = f"**/.*{TEMP_TAG}*" if recursive else f".*{TEMP_TAG}*"
    now, removed = time.time(), []
    for path in root.glob(pattern):
        try:
            if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime > min_age_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return removed
