"""User errors: a wrong input is reported as one line that names the file, not as a traceback.

The bundle's configs run under ``python -m monai.bundle run``, where MONAI wraps an error raised while a component is
instantiated or a transform applied ("Failed to instantiate ...", "applying transform ..."). Each config's
``initialize`` therefore installs :func:`cli_excepthook`, which looks through the chain of causes for a
:class:`UserInputError` and prints only its message.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["UserInputError", "find_user_error", "cli_excepthook", "install_cli_excepthook"]


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


def install_cli_excepthook() -> None:
    """Make uncaught user errors one line (for the bundle's command line runs; a no-op for a second call)."""
    sys.excepthook = cli_excepthook
