"""The analysis folder: only a folder the bundle made for an analysis is written into, every file atomically.

Files are written through :func:`scripts.atomic.atomic_path` (a uniquely named temporary file beside the target,
made 0644 and renamed over it), so a reader never sees half a file and two runs never share a temporary file;
temporary files a killed run left in the folder are removed by a later run (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, remove_stale_temporaries, write_text_atomic
from ..ownership import check_replaceable, mark_folder
from ..workflows.figures import save_png

__all__ = [
    "ANALYSIS_KIND",
    "check_output_dir",
    "prepare_output_dir",
    "write_text",
    "write_csv",
    "write_png",
    "write_npz",
]

#: The kind in the marker of an analysis folder (:mod:`scripts.ownership`).
ANALYSIS_KIND = "analysis"


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Raise unless ``folder`` is missing, empty or an earlier analysis folder; nothing is created.

    Raises:
        UserInputError: ``folder`` is a file or a folder of something else.
    """
    check_replaceable(folder, ANALYSIS_KIND, "Give another --output_dir (a new or empty folder).")
    return Path(folder)


def prepare_output_dir(folder: str | os.PathLike) -> Path:
    """Create (or reuse) the analysis folder, mark it as the bundle's and remove stale temporary files in it."""
    path = check_output_dir(folder)
    path.mkdir(parents=True, exist_ok=True)
    mark_folder(path, ANALYSIS_KIND)
    remove_stale_temporaries(path)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    write_text_atomic(text, path)
    return Path(path)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically; ``fields`` default to the first row's keys."""
    fields = list(fields or (rows[0].keys() if rows else ()))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 grey or RGB image as PNG atomically."""
    save_png(image, path)
    return Path(path)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays as an uncompressed NPZ atomically (string arrays as unicode, loadable without pickle)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # through a file object: given a name, numpy would append ".npz" to it
    return Path(path)
