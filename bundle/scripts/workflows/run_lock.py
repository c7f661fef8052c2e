"""One writer per run folder: the training process holds a lock on ``run.lock`` in its run folder while it runs.

The lock is the kernel's ``flock`` on that file, not the file's existence: the kernel releases it when the holder
ends, however it ends (``kill -9`` included), so a lock file a killed run left is recognised as stale with certainty
and taken over; no process id or time stamp is guessed at. The file holds who has the lock (host, process id, PID
namespace, start time) so that a refused run can name the holder. A clean exit removes the file. Under DDP only
rank 0 locks (:class:`~scripts.workflows.runs.TrainingRun`).

The lock is advisory and local to the machines that share the file system's locks (``flock`` on NFS is carried by
its byte-range locks).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import UserInputError

__all__ = ["LOCK_NAME", "RunLockedError", "RunLock"]

logger = logging.getLogger(__name__)

#: The lock file's name in a run folder.
LOCK_NAME = "run.lock"
#: Locks this process holds, by folder: taking one again (the config resolved twice) is a no-op.
_HELD: dict[str, RunLock] = {}


class RunLockedError(UserInputError):
    """Another process is training in the run folder."""


def _holder_record() -> dict[str, Any]:
    """Who takes the lock: host, process id, PID namespace and start time."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "unknown"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_namespace": namespace,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "a process that has not written its name yet"
    return (
        f"process {record.get('pid')} on host {record.get('host')} (PID namespace {record.get('pid_namespace')}), "
        f"since {record.get('started')}"
    )


class RunLock:
    """The lock of one run folder, held by this process from :meth:`acquire` until :meth:`release` or its end.

    Args:
        folder: the run folder (it must exist).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def read(self) -> dict[str, Any] | None:
        """The holder's record in the lock file (the last holder's when none holds it), or None."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _holder(self, wait_s: float = 1.0) -> dict[str, Any] | None:
        """The record of the lock's holder, waiting briefly for one that has just taken it to write it."""
        deadline = time.monotonic() + wait_s
        while (record := self.read()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return record

    def acquire(self) -> RunLock:
        """Take the lock, or refuse.

        Returns:
            The lock held (this process's own lock of the folder if it holds one already).

        Raises:
            RunLockedError: another process holds it; the message names that process.
        """
        key = os.fspath(self.folder.resolve())
        if key in _HELD and _HELD[key].held:
            return _HELD[key]
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"{self.folder}: a training is running in this run folder ({_describe(self._holder())}); wait "
                    "for it to end or stop it (then resume with --resume true), or give another --run_name."
                ) from None
            try:  # the previous holder may have removed the file between our open and our lock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        earlier = self.read()
        if earlier:  # the kernel released its lock, so that process has ended
            logger.info(f"{self.path}: taken over from {_describe(earlier)}, which has ended.")
        data = (json.dumps(_holder_record()) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        _HELD[key] = self
        atexit.register(self.release)
        return self

    def release(self) -> None:
        """Remove the lock file and give up the lock (a no-op when not held)."""
        if self._fd is None:
            return
        # removed while still locked: a process that opened it meanwhile sees it gone once it locks, and retries
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        _HELD.pop(os.fspath(self.folder.resolve()), None)
