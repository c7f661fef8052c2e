"""The restorations a folder run writes: float32 NIfTI marked as the bundle's, written atomically, never over a file
the bundle did not write, and never NaN.

- :func:`write_restoration` writes through :func:`scripts.atomic.atomic_path` (a temporary file beside the output,
  renamed into place), so an output is never partial; :func:`scripts.atomic.remove_stale_temporaries` removes such
  files left by a killed run (their writer process is gone), and no other file.
- Each output carries :data:`OUTPUT_MARKER` in its NIfTI ``descrip`` field: :func:`output_status` tells the
  bundle's own complete outputs (kept on a second run), its broken ones (written again) and anything else (an
  error unless overwriting), and :func:`scripts.workflows.find_inputs` never takes the bundle's outputs as inputs.
- Each output also records what made it (:mod:`.provenance`, a header extension written with it): given the
  record this run would write, :func:`output_status` calls an output made from other inputs, weights or settings
  ``"stale"`` (written again).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd

from ..atomic import atomic_path
from .provenance import nifti_record, record_differences, record_extension

__all__ = [
    "OUTPUT_MARKER",
    "is_bundle_output",
    "output_status",
    "output_record",
    "check_finite_result",
    "write_restoration",
]

#: Written in the NIfTI header's ``descrip`` (80 bytes at most) of every restoration.
OUTPUT_MARKER = b"AMIR restoration (MONAI bundle)"


def is_bundle_output(path: str | os.PathLike) -> bool:
    """True if ``path`` is a NIfTI file whose header carries :data:`OUTPUT_MARKER` (only the header is read)."""
    try:
        header = nib.load(os.fspath(path)).header
        return bytes(np.asarray(header.get("descrip", b""))).startswith(OUTPUT_MARKER)
    except Exception:
        return False


def output_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record of what made the NIfTI output at ``path`` (see :mod:`.provenance`), or None."""
    try:
        return nifti_record(nib.load(os.fspath(path)).header)
    except Exception:
        return None


def output_status(path: str | os.PathLike, record: Mapping[str, Any] | None = None) -> str:
    """What is at an output path: ``"missing"``, ``"complete"`` (the bundle's, all data readable), ``"broken"``
    (the bundle's header, data unreadable), ``"foreign"`` (anything the bundle did not write), or, given the
    ``record`` this run would write, ``"stale"`` (the bundle's, made from other inputs, weights or settings, or
    without a record)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return "missing"
    if not path.is_file() or not is_bundle_output(path):
        return "foreign"
    if record is not None and record_differences(output_record(path), record):
        return "stale"
    try:
        data = np.asarray(nib.load(os.fspath(path)).dataobj)
    except Exception:
        return "broken"
    return "complete" if np.all(np.isfinite(data)) else "broken"


def check_finite_result(pred: torch.Tensor, name: str) -> None:
    """Refuse a restoration holding NaN or infinite values (finite inputs were checked: the network failed).

    Raises:
        RuntimeError: naming the input.
    """
    bad = int((~torch.isfinite(pred)).sum())
    if bad:
        raise RuntimeError(f"{name}: the restoration holds {bad} non-finite values (NaN or Inf); nothing was written")


def write_restoration(pred: MetaTensor, path: str | os.PathLike, record: Mapping[str, Any] | None = None) -> None:
    """Write ``pred`` (channel first) as float32 NIfTI with its affine, marked as the bundle's, atomically.

    The output keeps the input's shape (a ``(H, W, 1)`` image stays 3-D: trailing singleton axes are kept).

    Args:
        pred: ``(1, *spatial)`` MetaTensor on the input's grid.
        path: the ``.nii.gz`` output.
        record: what made it (:func:`~scripts.workflows.provenance.make_record`), stored in a header extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # nibabel directly, as MONAI's NibabelWriter does it (sform and qform from the affine, code 1), but keeping the
    # input's shape: the writer would squeeze a (H, W, 1) image's trailing axis
    affine = to_affine_nd(3, np.asarray(pred.affine, dtype=np.float64))
    image = nib.Nifti1Image(np.asarray(pred[0].detach().cpu(), dtype=np.float32), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header["descrip"] = OUTPUT_MARKER
    if record is not None:
        image.header.extensions.append(record_extension(record))
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
