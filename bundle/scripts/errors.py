"""User errors: a wrong input is reported as one line that names the file, not as a traceback.

The bundle's configs run under ``python -m monai.bundle run``, where MONAI wraps an error raised while a component is
instantiated or a transform applied ("Failed to instantiate ...", "applying transform ..."). Each config's
``initialize`` therefore installs :func:`cli_excepthook`, which looks through the chain of causes for a
:class:`UserInputError` and prints only its message.
"""

from __future__ import annotations

import errno
import sys
import threading
from types import TracebackType

__all__ = [
    "DISK_FULL_ERRNOS",
    "UserInputError",
    "find_user_error",
    "cli_excepthook",
    "thread_excepthook",
    "install_cli_excepthook",
]

#: errno values of a write that failed for want of space (a full disk, a quota, a file size limit)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UserInputError(ValueError):
    """An input, folder or option given by the user cannot be used; the message names it and says what to do."""


def find_user_error(error: BaseException | None) -> UserInputError | None:
    """The first :class:`UserInputError` in ``error``'s chain of causes and contexts, or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserInputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def cli_excepthook(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None, default=sys.__excepthook__
) -> None:
    """``sys.excepthook``: a user error as ``error: <message>`` on stderr, exit status 1; anything else as usual."""
    user_error = find_user_error(error)
    if user_error is None:
        default(kind, error, traceback)
        return
    # the interpreter exits with status 1 after an uncaught exception, whatever the hook prints
    sys.stderr.write(f"error: {user_error}\n")


def thread_excepthook(args: threading.ExceptHookArgs, default=threading.__excepthook__) -> None:
    """``threading.excepthook``: a background writer (TensorBoard's) that meets a full disk is one warning line.

    The main thread meets the same disk at its next write and reports it as one ``error:`` line with what to do;
    a traceback from the writer thread would only bury that line. Anything else as usual.
    """
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL_ERRNOS:
        name = args.thread.name if args.thread is not None else "a background thread"
        sys.stderr.write(f"warning: {name}: {args.exc_value.strerror} ({args.exc_value.filename})\n")
        return
    default(args)


def install_cli_excepthook() -> None:
    """Make uncaught user errors one line (for the bundle's command line runs; a no-op for a second call)."""
    sys.excepthook = cli_excepthook
    threading.excepthook = thread_excepthook
