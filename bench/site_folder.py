"""Build a small "site" folder of real MR images for the fine-tuning recipe (model card, "Fine-tuning").

The volumes are real MR images that installed packages ship and that the shipped weights were not trained on:
the demo corpus's validation and test sources (nibabel's T1 and EPI volumes, pydicom's head MR, pydicom-data's
abdominal MR) and pydicom-data's enhanced multi-frame head MR (``emri_small.dcm``, not in the corpus). NIfTI
volumes are written as NIfTI, single DICOM images are copied as DICOM series, so the folder exercises both
readers. Values are the files' own scanner units; one that goes past the MRI window (0..4095) is scaled to a peak
of 3000 as the corpus does. pydicom-data's ``explicit_VR-UN.dcm`` and dipy's files stay reserved for outside
checks and are not used.

Usage (repository root)::

    .venv/bin/python bench/site_folder.py --out /tmp/site   # then D=/tmp/site with --tasks "['mri']"
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data


def _installed(package: str, relative: str) -> Path:
    """A data file of an installed package (never downloaded)."""
    module = __import__(package)
    return Path(module.__file__).parent / relative


def _mr_units(volume: np.ndarray) -> np.ndarray:
    peak = float(np.percentile(volume, 99.9))
    return volume * (3000.0 / peak) if peak > 4095.0 else volume


def _save_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(_mr_units(volume.astype(np.float32)), affine), str(path))


def _enhanced_spacing(ds: pydicom.Dataset) -> tuple[float, float, float]:
    """Pixel spacing and slice thickness of an enhanced (multi-frame) MR, from its functional groups."""
    for element in ds.iterall():
        if element.keyword == "PixelMeasuresSequence":
            measures = element.value[0]
            row, col = (float(v) for v in measures.PixelSpacing)
            return row, col, float(measures.get("SliceThickness", 1.0) or 1.0)
    return 1.0, 1.0, 1.0


def build(out: Path) -> list[Path]:
    """Write the site folder ``out/mri`` and return its volumes.

    Raises:
        FileExistsError: ``out`` exists (nothing is overwritten).
    """
    out.mkdir(parents=True, exist_ok=False)
    mri = out / "mri"
    mri.mkdir()

    t1 = nib.load(_installed("nibabel", "tests/data/anatomical.nii"))
    _save_nifti(np.asanyarray(t1.dataobj), t1.affine, mri / "brain_t1.nii.gz")
    epi = nib.load(_installed("nibabel", "tests/data/example4d.nii.gz"))
    _save_nifti(np.asanyarray(epi.dataobj)[..., 0], epi.affine, mri / "brain_epi.nii.gz")

    data_store = _installed("data_store", "data")  # pydicom-data's files
    enhanced = pydicom.dcmread(data_store / "emri_small.dcm")
    row, col, thick = _enhanced_spacing(enhanced)
    frames = enhanced.pixel_array.astype(np.float32)  # (frames, rows, cols)
    volume = np.transpose(frames, (2, 1, 0))  # x = column, y = row, z = frame
    _save_nifti(volume, np.diag([col, row, thick, 1.0]), mri / "head_enhanced.nii.gz")

    for name, source in (
        ("head_mr", Path(pydicom.data.get_testdata_file("MR_small.dcm"))),
        ("abdomen_mr", data_store / "MR-SIEMENS-DICOM-WithOverlays.dcm"),
    ):
        (mri / name).mkdir()
        shutil.copyfile(source, mri / name / "im0001.dcm")
    return sorted(mri.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder (must not exist)")
    args = parser.parse_args()
    for path in build(args.out):
        print(path)


if __name__ == "__main__":
    main()
