"""What made an output: a record stored with it, so that a rerun keeps a current output and redoes a stale one.

A record holds the sha256 of the input file(s) and of the weights, and the settings that change the pixels (the
config's ``modality``, ``mri_upsample``, ``slice_axis``, ``amp``, ``amp_dtype``, ``network_def``, tiling, the
pre- and postprocessing). It travels with the output, written in the same atomic step: in a NIfTI output as a
header extension (code 6, a JSON comment), in a DICOM output series as :data:`SERIES_RECORD` beside the bundle's
marker. :func:`record_differences` says why an output is stale; files are hashed in 1 MiB chunks, each once per
run (:class:`FileDigests`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
from monai.bundle import ConfigParser

from ..weights import file_sha256
from .runs import EQUIVALENT_NETWORK_ARGS

__all__ = [
    "PIXEL_SETTINGS",
    "NOT_PIXEL_SETTINGS",
    "SERIES_RECORD",
    "FileDigests",
    "config_settings",
    "make_record",
    "record_differences",
    "record_extension",
    "nifti_record",
    "read_series_record",
]

logger = logging.getLogger(__name__)

#: Ids of ``inference.json`` whose values change the restored pixels.
PIXEL_SETTINGS = (
    "modality",
    "mri_upsample",
    "slice_axis",
    "amp",
    "amp_dtype",
    "network_def",
    "max_slice_pixels",
    "tile_size",
    "preprocessing",
    "inferer",
    "postprocessing",
)
#: Ids that never change the pixels: not recorded even when a recorded setting refers to them.
NOT_PIXEL_SETTINGS = (
    "bundle_root",
    "dataset_dir",
    "output_dir",
    "runs_dir",
    "ckpt_path",  # the weights are recorded by their sha256
    "device",
    "num_threads",
    "keep_freed_memory",
    "slice_batch_size",
    "progress",
    "compile",
    "overwrite",
    "max_input_voxels",  # refuses an input or not; never changes the pixels of one it accepts
)
_REFERENCE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
#: The record's file in a DICOM output series folder (hidden: DICOM readers and the bundle's input search skip it).
SERIES_RECORD = ".amir-record.json"
_KEY = "amir_output_record"  # the JSON key that tells the bundle's NIfTI extension from any other comment
_ECODE = 6  # NIFTI_ECODE_COMMENT
_COMPARED = {"input_sha256": "the input's content", "weights_sha256": "the weights"}


class FileDigests:
    """sha256 of files, read in chunks, each file once per run (keyed by path, size, modification time, inode)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        """The hex sha256 of the file at ``path``."""
        path = Path(path).resolve()
        stat = path.stat()
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key not in self._cache:
            self._cache[key] = file_sha256(path)
        return self._cache[key]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _running_parser() -> ConfigParser | None:
    """The MONAI ``ConfigParser`` instantiating the caller, found up the stack (see :func:`.runs.executed_config`)."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigParser):
            return owner
        frame = frame.f_back
    return None


def _value(parser: ConfigParser, key: str, raw: Any) -> tuple[Any, list[str]]:
    """A setting as recorded, and the ids to record with it: a scalar's value (``@`` and ``$`` evaluated, so that
    ``"@x"`` and the value of ``x`` record alike); a component's config as given, with the ids it refers to."""
    if isinstance(raw, str) and raw.startswith(("@", "$")):
        try:
            value = parser.get_parsed_content(key)
        except Exception:  # the run itself reports it
            return raw, _REFERENCE.findall(raw)
        if value is None or isinstance(value, (bool, int, float, str, list, tuple, dict)):
            return _json(value), []
        return raw, _REFERENCE.findall(raw)  # an object (a network, a transform): its config
    return raw, _REFERENCE.findall(json.dumps(raw))


def config_settings(keys: Sequence[str] = PIXEL_SETTINGS, parser: ConfigParser | None = None) -> dict[str, Any]:
    """The ``keys`` of the config now being run (overrides applied): the settings an output records.

    Scalars are recorded by value; components (``network_def``, the pre- and postprocessing) by their config, and
    the ids they refer to (``@id``) are recorded too, unless they are in :data:`NOT_PIXEL_SETTINGS`.
    ``network_def`` arguments that change how the network computes but not what (gradient checkpointing, dense
    dispatch) are left out. Outside a MONAI ``ConfigParser`` (a component built in Python) the result is empty.

    Args:
        keys: ids of the config.
        parser: the config's parser, for a caller outside MONAI's instantiation (the Deploy app); default: the
            parser instantiating the caller.

    Returns:
        A JSON-compatible ``{id: value}``.
    """
    parser = parser or _running_parser()
    if parser is None:
        return {}
    config = _json(parser.get())
    settings, todo = {}, list(keys)
    while todo:  # the ids a recorded setting refers to (a new option of the preprocessing) are recorded too
        key = todo.pop()
        if key in settings or key not in config or key in NOT_PIXEL_SETTINGS:
            continue
        settings[key], referred = _value(parser, key, config[key])
        todo += referred
    if isinstance(settings.get("network_def"), dict):
        network = settings["network_def"]
        settings["network_def"] = {k: v for k, v in network.items() if k not in EQUIVALENT_NETWORK_ARGS}
    return _json(settings)


def make_record(
    inputs: Sequence[str | os.PathLike],
    weights: str | os.PathLike | None,
    settings: Mapping[str, Any],
    digests: FileDigests | None = None,
) -> dict[str, Any]:
    """What makes an output: its input files' and weights' sha256 and the settings.

    Args:
        inputs: the input's files (a NIfTI file, the files of a DICOM series in slice order).
        weights: the weights file (None: unknown, e.g. weights given as a loaded network).
        settings: the settings that change the pixels (:func:`config_settings`).
        digests: the run's cache of file digests.

    Returns:
        A JSON-compatible record.
    """
    digests = digests or FileDigests()
    return {
        "input_sha256": [digests(f) for f in inputs],
        "weights_sha256": digests(weights) if weights is not None and Path(weights).is_file() else None,
        "settings": _json(dict(settings)),
    }


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def record_differences(recorded: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> list[str]:
    """Why an output recorded as ``recorded`` is not what ``expected`` would make; empty if it is current.

    Args:
        recorded: the output's record (None: it has none, e.g. written by an earlier version of the bundle).
        expected: the record of the input, weights and settings of this run.

    Returns:
        Short reasons, e.g. ``["the weights", "modality ('ct' -> 'mri')"]``.
    """
    if not isinstance(recorded, Mapping):
        return ["it has no record of what made it"]
    reasons = [what for key, what in _COMPARED.items() if recorded.get(key) != expected.get(key)]
    old, new = recorded.get("settings") or {}, expected.get("settings") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            reasons.append(f"{key} ({_shown(old.get(key))} -> {_shown(new.get(key))})")
    return reasons


def record_extension(record: Mapping[str, Any]) -> nib.nifti1.Nifti1Extension:
    """The NIfTI header extension holding ``record`` (a JSON comment)."""
    return nib.nifti1.Nifti1Extension(_ECODE, json.dumps({_KEY: record}, sort_keys=True).encode())


def nifti_record(header: nib.Nifti1Header) -> dict[str, Any] | None:
    """The record in a NIfTI header's extensions (only the header is read), or None."""
    for extension in getattr(header, "extensions", ()):
        if extension.get_code() != _ECODE:
            continue
        try:
            content = json.loads(extension.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(content, dict) and isinstance(content.get(_KEY), dict):
            return content[_KEY]
    return None


def read_series_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a DICOM output series folder, or None (none, or unreadable)."""
    try:
        record = json.loads((Path(folder) / SERIES_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
