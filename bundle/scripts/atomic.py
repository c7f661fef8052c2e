"""Atomic file writing: every file the bundle writes appears complete or not at all, and never half-written.

:func:`atomic_path` gives a unique temporary name beside the destination (so two processes writing into one folder
never share one), makes the result an ordinary 0644 file and renames it into place; on an error it removes the
temporary file. A process killed mid-write cannot clean up, so a temporary name says whose it is,
``.<name>.amir-tmp-<pid>-<origin>-<random><suffix>``: the writer's process id and :func:`writer_origin`, a digest
of its host and PID namespace (a PID means one process only there: two containers sharing a volume may both have
a process 7). :func:`remove_stale_temporaries` removes on a later run the bundle's own temporaries whose writer is
known to be gone (same origin, no such process), and those of another origin or of no stated origin only once
unchanged for :data:`STALE_AGE_S` (24 hours): never a write still in progress.

A write that fails for want of space (no space left, quota exceeded, file size limit) is one
:class:`DiskFullError` naming the folder, with the temporary file removed and the earlier file, if any, intact.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DISK_FULL_ERRNOS, UserInputError
from .ownership import check_replaceable, folder_kind, mark_folder

__all__ = [
    "TEMP_TAG",
    "STALE_AGE_S",
    "DISK_FULL_ERRNOS",
    "DiskFullError",
    "disk_full_cause",
    "writer_origin",
    "atomic_path",
    "atomic_folder",
    "write_text_atomic",
    "remove_stale_temporaries",
    "temporary_name",
]

#: Part of every temporary name the bundle writes, before the writer's process id.
TEMP_TAG = ".amir-tmp-"
#: Age (seconds unchanged) after which a temporary whose writer cannot be checked from here counts as abandoned.
STALE_AGE_S = 24 * 3600
_TEMPORARY = re.compile(
    r"^\..+" + re.escape(TEMP_TAG) + r"(?P<pid>\d+)-(?:(?P<origin>[0-9a-f]{12})-)?[A-Za-z0-9_]+(\.[A-Za-z0-9.]+)?$"
)


class DiskFullError(UserInputError):
    """A write failed for want of space; the message names the folder and says to free space.

    Args:
        message: the one-line message.
        folder: the folder whose disk is full, where known.
    """

    def __init__(self, message: str, folder: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.folder = None if folder is None else Path(folder)


def disk_full_cause(error: BaseException | None) -> OSError | None:
    """The ``OSError`` of :data:`DISK_FULL_ERRNOS` in ``error``'s chain of causes and contexts, or None.

    ``torch.save`` reports a failed write of its file object as a ``RuntimeError`` whose context is the ``OSError``.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def _disk_full_as_error(folder: Path, name: str) -> Iterator[None]:
    """Turn a write failing for want of space into one :class:`DiskFullError` naming ``folder``."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as e:
        cause = disk_full_cause(e)
        if cause is None:
            raise
        raise DiskFullError(
            f"{folder}: cannot write {name}: {cause.strerror or cause} (the disk or a quota is full); free space "
            "there, then run the command again.",
            folder,
        ) from e


def _first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


@functools.cache
def writer_origin() -> str:
    """12 hex digits naming this host and PID namespace: where a process id in a temporary name can be checked.

    A digest of the host name, the kernel's boot id (one per running kernel, shared by its containers) and the PID
    namespace (``/proc/self/ns/pid``); where ``/proc`` has neither, the host name alone.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    parts = (socket.gethostname(), _first_line("/proc/sys/kernel/random/boot_id"), namespace)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _suffix(name: str) -> str:
    """The extension writers dispatch on (``.nii.gz`` counts as one)."""
    for double in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[-len(double) :]
    return Path(name).suffix


def temporary_name(name: str, pid: int | None = None, origin: str | None = None) -> str:
    """The prefix of the temporary files of ``name`` written by process ``pid`` (this one by default) of ``origin``
    (this host and PID namespace by default, :func:`writer_origin`)."""
    return f".{name}{TEMP_TAG}{os.getpid() if pid is None else pid}-{origin or writer_origin()}-"


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
    with _disk_full_as_error(path.parent, path.name):
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
    with _disk_full_as_error(target.parent, target.name):
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


def _writer_gone(path: Path, pid: int, origin: str | None) -> bool:
    """Whether the writer of the temporary ``path`` is known to be gone, or it has been left unchanged too long.

    A process id is checked only where it means something: on this host, in this PID namespace. A temporary of
    another origin (another container, another machine on a shared volume) or of none (an older bundle's name)
    may belong to a live writer the bundle cannot see, so it goes only once unchanged for :data:`STALE_AGE_S`.
    """
    if origin == writer_origin():
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - path.lstat().st_mtime > STALE_AGE_S
    except OSError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporary files and folders the bundle left in ``folder`` when it was killed mid-write.

    Only names the bundle gives its temporary files are touched (folders only if they also carry the bundle's
    marker), and only those whose writer is known to be gone (:func:`_writer_gone`): a write in progress, in this
    process or another, here or in another PID namespace or host, is left alone.

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
        if not match or path.is_symlink() or not _writer_gone(path, int(match["pid"]), match["origin"]):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
        elif path.is_dir() and folder_kind(path) is not None:  # a folder only if it carries the bundle's marker
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
