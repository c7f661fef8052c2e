"""MRI folder of the demo weights' second stage: noisy and noise-free template slices side by side.

The corpus gives the MNI152 T1 template's slices Rician noise (std 60, :data:`~scripts.data.corpus.MNI_NOISE_STD`),
whose background floor (about 75 scanner units) the weights of 0.3.0 and 0.4.0 learned to restore on every MRI,
a clean one too (``bench/mri_background.py``). This folder holds the demo set's MRI training slices (HQ only) and
the template at the same positions without the noise, so that a fine-tuning on it (``--dataset folder``, the other
tasks from the demo set with ``--mix_demo``) sees both and keeps the input's own background. Each slice is one
NIfTI volume of one axial slice. Nothing but the folder given is written.

Usage (from ``bundle/``)::

    python -m scripts.data.template_mri --out DIR      # then --dataset folder --dataset_dir DIR --tasks "['mri']"
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import UserInputError
from . import corpus
from .demo import build_demo_set

__all__ = ["build_template_mri_folder", "main"]


def _write_slice(image: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    """One 2-D slice as an axial NIfTI volume of one slice (the folder data set cuts axial slices)."""
    affine = np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image, dtype=np.float32)[:, :, None], affine), os.fspath(path))


def build_template_mri_folder(out_dir: str | os.PathLike, demo_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``out_dir/mri/``: the demo set's MRI training HQ slices and the clean template at the same positions.

    Args:
        out_dir: a new or empty folder.
        demo_dir: the demo set (built on first use); None: its default place.

    Returns:
        The slices written, sorted.

    Raises:
        UserInputError: ``out_dir`` exists and is not empty (nothing is overwritten).
    """
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out}: the folder is not empty; give a new or empty folder")
    demo = build_demo_set(demo_dir)
    mri = out / "mri"
    mri.mkdir(parents=True)
    datalist = json.loads((demo / "datalist.json").read_text())
    for item in datalist["training"]:
        if item["task"] == "mri":
            image = nib.load(os.fspath(demo / item["label"]))
            _write_slice(
                np.asarray(image.dataobj)[..., 0], image.header.get_zooms()[:2], mri / Path(item["label"]).name
            )

    from nilearn.datasets import load_mni152_template

    t1 = load_mni152_template(resolution=1)
    volume = np.asarray(t1.dataobj, dtype=np.float32) * corpus.MRI_PEAK
    mask = volume > 0.1 * corpus.MRI_PEAK
    for plane, fractions in corpus.MNI_POSITIONS.items():
        for fraction in fractions:
            image, spacing, _ = corpus._volume_slice(volume, t1.affine, plane, fraction, mask)
            _write_slice(image, spacing, mri / f"mni_clean_{plane}_{fraction}.nii.gz")
    return sorted(mri.iterdir())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="a new or empty folder")
    parser.add_argument("--demo_dir", default=None, help="the demo set (default: its usual place)")
    args = parser.parse_args(argv)
    written = build_template_mri_folder(args.out, args.demo_dir)
    print(f"{len(written)} slices in {Path(args.out) / 'mri'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
