"""Noise of the quarter-dose CT simulation: a water disk in the Mayo geometry and the real CT slices of the corpus.

Prints, per image, the noise standard deviation (HU) in a uniform region of the full-dose image and of its
simulated quarter-dose version (``SimulateLowDoseCT(0.25)``, the corpus recipe), the inserted noise alone and the
quarter / full ratio (2 for a true quarter of the image's own dose, as in the AAPM-Mayo quarter-dose images), and
the dose fraction of the simulation that would give the image a true quarter of its own dose: the inserted
variance scales with ``1/d - 1``, so inserting ``3 full^2`` needs ``1/d - 1 = 9 full^2 / inserted(0.25)^2``. The
simulation sets the full-dose noise by automatic exposure control to a reference (a 30 cm water disk's), not to
the image's own noise, so a slice quieter than that reference gets far more than a quarter dose's noise, and a
noisier one less. The uniform region of a real slice is the square window of soft tissue (0..100 HU) whose
full-dose standard deviation is the smallest (the usual way to find "a uniform region" automatically). The real
slices get the corpus's geometry (``scripts.transforms.ct_simulation_args``); ``--ramp`` drops its kernel
resolution (ramp-filter noise at the native pixel size).

    .venv/bin/python bench/ct_noise.py [--roi 21] [--seeds 3] [--ramp]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.data.corpus import BODY_DIAMETER_CM, SOURCES, source_path  # noqa: E402
from scripts.data.loading import read_dicom_slice  # noqa: E402
from scripts.transforms import SimulateLowDoseCT, ct_simulation_args  # noqa: E402


def uniform_window(hu: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window of soft tissue (every pixel in 0..100 HU) with the smallest std."""
    mean = uniform_filter(hu.astype(np.float64), size)
    var = uniform_filter(hu.astype(np.float64) ** 2, size) - mean**2
    soft = uniform_filter(((hu > 0) & (hu < 100)).astype(np.float64), size) > 0.999
    half = size // 2
    soft[:half], soft[-half:], soft[:, :half], soft[:, -half:] = False, False, False, False
    if not soft.any():
        raise ValueError(f"no {size} x {size} soft-tissue window")
    r, c = np.unravel_index(np.argmin(np.where(soft, var, np.inf)), hu.shape)
    return np.s_[r - half : r + half + 1, c - half : c + half + 1]


def measure(name: str, hu: np.ndarray, window, seeds: int, **kwargs) -> None:
    full = float(hu[window].std())
    quarter, inserted = [], []
    for seed in range(seeds):
        lq = np.asarray(SimulateLowDoseCT(0.25, seed=seed, **kwargs)(hu[None]))[0]
        quarter.append(float(lq[window].std()))
        inserted.append(float((lq - hu)[window].std()))
    q, i = np.mean(quarter), np.mean(inserted)
    own_quarter = 1.0 / (1.0 + 9.0 * full**2 / i**2)
    print(f"| {name} | {full:.1f} | {q:.1f} | {i:.1f} | {q / full:.2f} | {own_quarter:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roi", type=int, default=21, help="side of the uniform window, px")
    parser.add_argument("--seeds", type=int, default=3, help="noise realisations averaged")
    parser.add_argument("--ramp", action="store_true", help="ramp-filter noise at the native pixel size instead")
    args = parser.parse_args()
    print(
        "| image | full-dose std (HU) | quarter-dose std (HU) | inserted std (HU) | quarter / full "
        "| dose of a true quarter of its own |"
    )
    print("|---|---|---|---|---|---|")
    # the calibration phantom: a 30 cm water disk, 512 x 512 of 0.7 mm (Mayo geometry), with full-dose noise
    off = np.arange(512) - 256
    r2 = off[:, None] ** 2 + off[None, :] ** 2
    disk = np.where(r2 <= (150 / 0.7) ** 2, 0.0, -1000.0).astype(np.float32)
    full = np.asarray(SimulateLowDoseCT(1.0, input_dose_fraction=None, seed=99)(disk[None]))[0]
    centre = np.s_[256 - args.roi // 2 : 256 + args.roi // 2 + 1, 256 - args.roi // 2 : 256 + args.roi // 2 + 1]
    measure("30 cm water disk, 0.7 mm pixels (Mayo geometry), centre", full, centre, args.seeds)
    import pydicom

    for source in SOURCES:
        if source.tasks != ("ct",) or source.file == "bad_sequence.dcm":  # (ITK-read slice: see below)
            continue
        path = source_path(source)
        hu = read_dicom_slice(path, "ct")
        spacing = float(pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing[0])
        kwargs = ct_simulation_args(hu.shape, spacing, BODY_DIAMETER_CM if min(hu.shape) * spacing < 200 else None)
        if args.ramp:
            kwargs["kernel_resolution_cm"] = None
        try:
            window = uniform_window(hu, args.roi)
        except ValueError as e:
            print(f"| {source.file} | {e} | | | | |")
            continue
        measure(f"{source.file} ({spacing:.2f} mm)", hu, window, args.seeds, **kwargs)
    from scripts.data.corpus import _ct  # the ITK-read slice, as the corpus reads it

    spine = next(s for s in SOURCES if s.file == "bad_sequence.dcm")
    pair = next(_ct(spine, lambda task, split: True))
    hu = pair.hq
    kwargs = ct_simulation_args(hu.shape, pair.spacing[0], BODY_DIAMETER_CM)
    if args.ramp:
        kwargs["kernel_resolution_cm"] = None
    measure(f"{spine.file} ({pair.spacing[0]:.2f} mm)", hu, uniform_window(hu, args.roi), args.seeds, **kwargs)


if __name__ == "__main__":
    main()
