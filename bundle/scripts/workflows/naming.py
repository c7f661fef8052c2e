"""Output names built only from the user's output folder and sanitised components (:func:`output_name`).

Parts of an output name come from the inputs: file and folder names of the input tree, names in a data list, and
DICOM tags (SeriesNumber, SeriesInstanceUID). Any of them may hold ``/``, ``..``, an absolute path, NUL or control
characters, or be very long. :func:`safe_component` keeps a value only if it is a plain, visible, short name and
otherwise falls back to a safe name (for a DICOM series its UID; else a hash of the value) with a warning naming
the file it came from. :func:`check_inside` is the last check before anything is written: the path must resolve
inside the output folder. :func:`check_writable` refuses an output folder that cannot be written before any work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..atomic import temporary_name
from ..errors import UserInputError

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_NAME_BYTES",
    "unsafe_reason",
    "safe_component",
    "short_hash",
    "check_inside",
    "check_writable",
    "output_name",
]

logger = logging.getLogger(__name__)

#: The longest file name most file systems take (NAME_MAX).
MAX_NAME_BYTES = 255
#: The longest component taken from a file (a tag or a name), so that a whole output name stays below NAME_MAX.
MAX_COMPONENT_BYTES = 160

_warned: set[tuple[str, str, str]] = set()  # (source, what, value): a name is computed more than once per input


def short_hash(value: str) -> str:
    """12 hex digits of the value's sha256: a stable, distinct, safe name part."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def unsafe_reason(value: str, limit: int = MAX_COMPONENT_BYTES) -> str | None:
    """Why ``value`` cannot be one component of an output path, or None if it can.

    Args:
        value: a folder or file name part.
        limit: the most bytes it may have.

    Returns:
        A short reason (empty, ``..``, a path separator, control characters, a leading dot, too long) or None.
    """
    if not value.strip():
        return "is empty"
    if ".." in value:
        return "contains '..'"
    if "/" in value or "\\" in value or os.path.isabs(value):
        return "contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains NUL or control characters"
    if value.startswith("."):
        return "starts with '.' (a hidden name)"
    size = len(os.fsencode(value))
    if size > limit:
        return f"is {size} bytes long (at most {limit})"
    return None


def _shown(value: str) -> str:
    text = repr(value)  # control characters escaped
    return text if len(text) <= 60 else text[:57] + "..."


def safe_component(
    value: str,
    source: str | os.PathLike,
    what: str,
    fallback: str | None = None,
    limit: int = MAX_COMPONENT_BYTES,
    pattern: str | None = None,
) -> str:
    """``value`` if it is a safe path component, else ``fallback`` (or ``<what>-<hash>``), with a warning.

    Args:
        value: the component read from a file (a name, a tag's value).
        source: the file it came from (named in the warning).
        what: what the value is (``"SeriesNumber"``, ``"file name"``); also the prefix of a hashed fallback.
        fallback: the safe name to use instead (checked too; a hash of ``value`` if it is not safe either).
        limit: the most bytes ``value`` may have.
        pattern: a regular expression ``value`` must match whole (e.g. the DICOM value representation).

    Returns:
        A name without separators, ``..``, control characters or a leading dot, of at most ``limit`` bytes.
    """
    reason = unsafe_reason(value, limit)
    if reason is None and pattern is not None and re.fullmatch(pattern, value) is None:
        reason = f"is not a valid {what}"
    if reason is None:
        return value
    name = fallback if fallback is not None and unsafe_reason(fallback, limit) is None else None
    name = name or f"{what.replace(' ', '-')}-{short_hash(value)}"
    source = os.fspath(source)
    if (source, what, value) not in _warned:
        _warned.add((source, what, value))
        shown = source if source.isprintable() else repr(source)  # a name with control characters, escaped
        logger.warning(f"{shown}: {what} {_shown(value)} {reason}, so it is not used in an output name; using {name!r}")
    return name


def check_inside(path: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """``path`` if it resolves (symbolic links followed) strictly inside ``output_dir``; the last check before writing.

    Raises:
        UserInputError: it would be written elsewhere, naming both.
    """
    path, root = Path(path), Path(output_dir).resolve()
    resolved = path.resolve()
    if root not in resolved.parents:
        raise UserInputError(
            f"{path}: resolves to {resolved}, outside the output folder {root}; nothing was written there "
            "(a symbolic link in the output folder?)"
        )
    return path


def check_writable(folder: str | os.PathLike) -> None:
    """Refuse an output folder that cannot be written, before any work: a file is created in it (or in its nearest
    existing parent, where it would be created) and removed at once.

    Raises:
        UserInputError: naming the folder and why.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = f"{folder}" if existing == folder else f"{folder} (to be created in {existing})"
    if not existing.is_dir():
        raise UserInputError(f"{where}: {existing} is not a folder; choose another output_dir")
    try:
        fd, name = tempfile.mkstemp(dir=existing, prefix=temporary_name("write-check"))
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UserInputError(
            f"{where}: the output folder cannot be written ({e.strerror or e}); make it writable or choose another "
            "output_dir"
        ) from e


def output_name(source: str | os.PathLike | Any, input_root: str | os.PathLike, postfix: str = "restored") -> Path:
    """Where the restoration of ``source`` goes, relative to the output folder: ``<rel>/<name>_<postfix>.nii.gz``.

    ``<name>`` is the NIfTI file's name without extension, or the DICOM series' folder name, followed by the
    series' label (``_series3``, or a short UID) when the folder holds several series. Every component that comes
    from a file (folder and file names, the label) is sanitised (:func:`safe_component`):
    one holding ``..``, a separator, control characters or too many bytes is replaced by a hashed name, with a
    warning, so that the result never leaves the output folder.

    Args:
        source: a NIfTI file, a DICOM series (:class:`~scripts.workflows.dicom.DicomSeries`) or its folder.
        input_root: the input folder (or the source itself).
        postfix: appended to the name (none if empty); the user's option.

    Returns:
        The relative output path, mirroring the input tree.

    Raises:
        UserInputError: ``postfix`` is not a plain name part.
    """
    if postfix and unsafe_reason(postfix):
        raise UserInputError(f"output_postfix {postfix!r} {unsafe_reason(postfix)}; give a plain name part")
    series = hasattr(source, "files")  # a DicomSeries (not imported here: the DICOM scan names series with this module)
    label = source.label if series else ""
    named = source.files[0] if series and source.files else source
    source = source.path if series else Path(source)
    root = Path(input_root)
    root = root if root.is_dir() else root.parent
    try:
        relative = source.relative_to(root) if source != root else Path(source.name)
    except ValueError:  # a data list's item outside the input folder: its name only
        relative = Path(source.name)
    *folders, name = relative.parts or ("",)
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    folders = [safe_component(f, named, "folder name") for f in folders]
    name = safe_component(name, named, "file name")
    label = safe_component(label, named, "series label") if label else ""
    name = f"{name}_{label}" if label else name
    name = f"{name}_{postfix}" if postfix else name
    if len(os.fsencode(name)) + len(".nii.gz") > MAX_NAME_BYTES:  # long parts that were each within the limit
        name = f"{name[:64]}-{short_hash(name)}"
    return Path(*folders, f"{name}.nii.gz")
