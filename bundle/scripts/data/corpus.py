"""The real-image demo corpus (demo set version 3): whole slices of real medical images that ship in PyPI packages.

Every slice is a whole slice at its native size (no crop), from a file read losslessly (uncompressed or lossless
JPEG / JPEG 2000); each source file goes to one split only, for every task made from it (:data:`SOURCES`).
LQ images follow the paper's fixed recipes; training can draw other levels on the fly
(:class:`scripts.transforms.RandLowDoseCTd`, :class:`scripts.transforms.RandLowDosePETd`):

- CT: real CT slices in HU; LQ = quarter dose (:class:`scripts.transforms.SimulateLowDoseCT` with the slice's
  pixel size, the noise of a B30-like kernel for pixels finer than 0.7 mm, automatic exposure control, and a
  targeted reconstruction, whose view is smaller than the body, inside a water body of :data:`BODY_DIAMETER_CM`:
  :func:`scripts.transforms.ct_simulation_args`).
- MRI: real MR slices in scanner units (scaled to a peak of 3000 where they go past the MRI window), and the
  MNI152 2009 T1 template (nilearn) in three planes at several positions (scaled to a peak of 3000, with the Rician
  noise of an acquisition, its std drawn per slice up to :data:`MNI_NOISE_STD`; version 2: that std on every
  slice); LQ = 4x k-space crop (:class:`scripts.transforms.KSpaceCrop`).
- PET: phantoms from real anatomy (no real PET image ships in these packages): FDG-like SUV 8 / 2 on the MNI152
  grey / white matter maps, and, for the other sources, activity proportional to the image intensity (peak SUV
  10) on a ~2 mm grid; HQ and LQ are the matched full-dose and DRF-12 reconstructions of
  :meth:`scripts.transforms.SimulateLowDosePET.simulate_pair`.

Kept out on purpose, never read: pydicom-data's ``explicit_VR-UN.dcm`` and every data file of dipy (reserved for
checks outside the project). Not used: lossy copies (``*_J2KI``, ``*_UNCI``: decoded lossy JPEG 2000), derived maps
(``eCT_Supplemental.dcm``, a perfusion map), test patterns, radiographs, ultrasound and files without geometry.

:func:`corpus_pairs` yields the slice pairs; :mod:`scripts.data.demo` writes them (``--version 3``;
``--version 2`` the earlier build).
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from monai.transforms import RandRicianNoise
from skimage.transform import downscale_local_mean

from ..transforms import KSpaceCrop, SimulateLowDoseCT, SimulateLowDosePET, ct_simulation_args
from .loading import read_dicom_slice
from .pairs import SlicePair
from .slices import DataError, axis_family, inplane_target, orient_slice

__all__ = [
    "CorpusSource",
    "SOURCES",
    "BODY_DIAMETER_CM",
    "SlicePair",
    "corpus_pairs",
    "source_path",
    "template_noise_std",
]

#: Water-equivalent diameter of the body around a targeted CT reconstruction (an adult trunk), cm.
BODY_DIAMETER_CM = 32.0
MRI_PEAK = 3000.0  # MNI152 template (0..1) -> scanner-like units inside the MRI window 0..4095
#: Largest Rician noise std given to the MNI152 template's slices (2 % of its peak: white matter, ~0.8 of the peak,
#: at an SNR of about 40, a clinical T1's order). The template averages 152 brains and has no noise; real
#: acquisitions do, and a network trained on noise-free slices learns to wipe the noise of real ones away (measured:
#: SSIM lost on real EPI slices). Each slice draws its std from 0 to this (corpus version 3): at a fixed std the
#: weights learned to restore its background floor (~75 units) on every MRI, a clean one too (model card).
MNI_NOISE_STD = 0.02 * MRI_PEAK
PET_GREY_SUV, PET_WHITE_SUV, PET_PEAK_SUV, PET_DRF, PET_PIXEL_MM = 8.0, 2.0, 10.0, 12.0, 2.0
# fractions of the brain's extent along each plane's axis; the template is left-right symmetric, so sagittal
# slices come from one hemisphere and the midline only
MNI_POSITIONS = {
    "axial": (0.2, 0.32, 0.44, 0.56, 0.68, 0.8),
    "coronal": (0.2, 0.32, 0.44, 0.56, 0.68, 0.8),
    "sagittal": (0.1, 0.18, 0.26, 0.34, 0.42, 0.5),
}
NIFTI_POSITIONS = (0.25, 0.45, 0.65, 0.85)  # axial slices of the other volumes (PET phantoms: every other one)
_PLANE_FAMILY = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


@dataclass(frozen=True)
class CorpusSource:
    """One source image of the corpus and what is made of it.

    Attributes:
        subject: its id in the data list.
        package: the PyPI package that ships it.
        file: the file name in that package.
        licence: the licence it comes under.
        split: ``train``, ``val`` or ``test`` (all its slices, of every task).
        tasks: what is made of it: ``ct`` (the CT slice), ``mri`` (MR slices), ``pet`` (a phantom on its anatomy).
        description: what it is.
    """

    subject: str
    package: str
    file: str
    licence: str
    split: str
    tasks: tuple[str, ...]
    description: str


_PYDICOM = "MIT (pydicom); the file's origin is in pydicom/data/test_files/README.txt"
_PYDICOM_DATA = "MIT (pydicom-data); the file's origin is in pydicom/data/test_files/README.txt"
_NIBABEL = "MIT (nibabel, its COPYING covers the package's files)"
_MNI = "MNI ICBM 2009 templates' permissive notice (c) McConnell Brain Imaging Centre; nilearn BSD-3-Clause"

#: The corpus, in build order. Splits are by source: no file gives slices to two splits.
SOURCES: tuple[CorpusSource, ...] = (
    CorpusSource("ct-head", "pydicom-data", "693_UNCR.dcm", _PYDICOM_DATA, "test", ("ct",),
                 "head CT, 512x512, 0.48 mm, 140 kV; uncompressed copy of the lossless JPEG 2000 693_J2KR"),
    CorpusSource("ct-skull-base", "pydicom", "J2K_pixelrep_mismatch.dcm", _PYDICOM, "train", ("ct",),
                 "head CT at the skull base, 512x512, 0.43 mm, 120 kV, lossless JPEG 2000"),
    CorpusSource("ct-spine", "pydicom-data", "bad_sequence.dcm", _PYDICOM_DATA, "train", ("ct",),
                 "lumbar spine CT, 512x512, 0.29 mm (14.7 cm targeted view), Siemens B30s, lossless JPEG"),
    CorpusSource("ct-chest", "pydicom", "CT_small.dcm", _PYDICOM, "val", ("ct",),
                 "chest CT (spine, aorta), 128x128, 0.66 mm: NEMA WG04 CT1_UNC reduced by pydicom"),
    CorpusSource("mni152", "nilearn", "mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz", _MNI, "train",
                 ("mri", "pet"), "MNI152 2009 T1 template (1 mm) and grey / white matter maps (2 mm), 3 planes"),
    CorpusSource("mr-shoulder", "pydicom-data", "MR2_UNCR.dcm", _PYDICOM_DATA, "train", ("mri", "pet"),
                 "shoulder MR (spin echo), 1024x1024, 0.20 mm, NEMA WG04 MR2; uncompressed copy of MR2_J2KR"),
    CorpusSource("mr-head", "pydicom", "MR_small.dcm", _PYDICOM, "val", ("mri",),
                 "head MR, 64x64, 0.31 mm: NEMA WG04 MR1_UNC reduced by pydicom"),
    CorpusSource("mr-brain-t1", "nibabel", "tests/data/anatomical.nii", _NIBABEL, "val", ("mri", "pet"),
                 "T1 brain (SPM-normalised), 33x41x25 at 2 mm"),
    CorpusSource("mr-abdomen", "pydicom-data", "MR-SIEMENS-DICOM-WithOverlays.dcm", _PYDICOM_DATA, "test",
                 ("mri", "pet"), "abdominal MR (contrast T1 MPR), 484x484, 0.72 mm, Siemens (from GDCM)"),
    CorpusSource("mr-brain-epi", "nibabel", "tests/data/example4d.nii.gz", _NIBABEL, "test", ("mri", "pet"),
                 "brain EPI (first volume), 128x96x24 at 2 mm"),
)  # fmt: skip


def source_path(source: CorpusSource) -> Path:
    """The installed file of a DICOM or nibabel source (never downloaded).

    Raises:
        DataError: the package or the file is not installed.
    """
    if source.package == "nibabel":
        path = Path(nib.__file__).parent / source.file
    else:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(source.file, download=False)  # only what the installed packages ship
        # never a file of that name elsewhere (the working directory): the corpus is the packages' files only
        path = Path(found) if found else None
    if path is None or not path.is_file():
        raise DataError(
            f"{source.file}: not installed; the corpus needs {source.package} (pip install -r requirements.txt)"
        )
    return path


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def template_noise_std(plane: str, fraction: float, drawn: bool = True) -> float:
    """The Rician noise std of the template's MRI slice at ``plane`` / ``fraction``.

    Args:
        plane: ``axial``, ``coronal`` or ``sagittal``.
        fraction: its position (one of :data:`MNI_POSITIONS`).
        drawn: draw it uniformly from 0 to :data:`MNI_NOISE_STD`, seeded by the position (corpus version 3);
            False: :data:`MNI_NOISE_STD` (version 2, the corpus of the 0.3.0 and 0.4.0 weights).
    """
    if not drawn:
        return MNI_NOISE_STD
    return float(MNI_NOISE_STD * np.random.default_rng(_seed("mni152 noise std", plane, fraction)).uniform())


def _pair(source: CorpusSource, task: str, hq: np.ndarray, spacing: Sequence[float], **kwargs) -> SlicePair:
    """The pair of one HQ slice (CT: HU, MRI: scanner units, PET: activity of the phantom) by the task's recipe."""
    hq = np.ascontiguousarray(hq, dtype=np.float32)
    spacing = (float(spacing[0]), float(spacing[1]))
    body = kwargs.pop("body_diameter_cm", None)
    if task == "mri":
        lq = np.asarray(KSpaceCrop(0.25)(hq[None]))[0]
    elif task == "ct":
        geometry = ct_simulation_args(hq.shape, spacing[0], body)
        simulate = SimulateLowDoseCT(0.25, seed=_seed(source.subject, hq.shape), **geometry)
        lq = np.asarray(simulate(hq[None]))[0]
    else:
        simulate = SimulateLowDosePET(PET_DRF, seed=_seed(source.subject, kwargs.get("index", 0)))
        low, high = simulate.simulate_pair(hq[None])
        lq, hq = np.asarray(low)[0], np.asarray(high)[0]
    extra = {"spacing": list(spacing), "body_diameter_cm": float(body or 0.0)}
    return SlicePair(task, source.split, source.subject, lq, hq, spacing, kwargs.get("axcodes", ("P", "L", "S")), extra)


def _volume_slice(volume: np.ndarray, affine: np.ndarray, plane: str, fraction: float, mask: np.ndarray) -> tuple:
    """The slice of ``plane`` at ``fraction`` of the extent of ``mask`` along that plane's axis, oriented.

    Returns:
        ``(slice, (row, column) spacing, axcodes)``.
    """
    codes = nib.aff2axcodes(affine)
    axis = next(a for a, c in enumerate(codes) if c in _PLANE_FAMILY[plane])
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    index = int(round(present[0] + fraction * (present[-1] - present[0])))
    zooms = [round(float(z), 6) for z in nib.affines.voxel_sizes(affine)]
    inplane = [a for a in range(3) if a != axis]
    array = orient_slice(np.take(volume, index, axis=axis), [codes[a] for a in inplane], codes[axis])
    target = inplane_target(codes[axis])
    spacing = [zooms[a] for a in inplane]
    if axis_family(codes[inplane[0]]) != axis_family(target[0]):
        spacing = spacing[::-1]
    return array, tuple(spacing), (target[0], target[1], codes[axis])


def _mr_units(image: np.ndarray) -> np.ndarray:
    """MR in scanner units; one whose values go past the MRI window (0..4095) is scaled to a peak of 3000."""
    peak = float(np.percentile(image, 99.9))
    return image * (MRI_PEAK / peak) if peak > 4095.0 else image


def _activity_from_intensity(image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, float]]:
    """A PET phantom on an anatomical slice: activity proportional to intensity (peak SUV 10) on a ~2 mm grid."""
    factor = max(1, int(round(PET_PIXEL_MM / float(spacing[0]))))
    coarse = (
        downscale_local_mean(np.clip(image, 0.0, None), (factor, factor)) if factor > 1 else np.clip(image, 0, None)
    )
    peak = float(np.percentile(coarse[coarse > 0], 99.5)) if np.any(coarse > 0) else 1.0
    return PET_PEAK_SUV * np.clip(coarse / peak, 0.0, 1.0), (spacing[0] * factor, spacing[1] * factor)


Room = Callable[[str, str], bool]  # room(task, split): may one more slice of the task go to the split?


def _ct(source: CorpusSource, room: Room) -> Iterator[SlicePair]:
    if not room("ct", source.split):
        return
    path = source_path(source)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    spacing = [float(s) for s in header.PixelSpacing]
    if source.file == "bad_sequence.dcm":  # lossless JPEG that pydicom cannot decode without extra plugins: ITK
        iop = [round(float(v)) for v in header.ImageOrientationPatient]
        if iop != [1, 0, 0, 0, 1, 0]:
            raise DataError(f"{path}: expected an axial slice stored in the house orientation, got {iop}")
        with warnings.catch_warnings():  # ITK's SWIG modules warn about themselves on import (Python 3.11+)
            warnings.simplefilter("ignore", DeprecationWarning)
            import itk

            hu = np.maximum(itk.array_from_image(itk.imread(str(path)))[0].astype(np.float32), -1024.0)
    else:
        hu = read_dicom_slice(path, "ct")
    field_of_view_cm = min(hu.shape) * spacing[0] / 10.0
    body = BODY_DIAMETER_CM if field_of_view_cm < 20.0 else None  # a targeted view of a trunk
    yield _pair(source, "ct", hu, spacing, body_diameter_cm=body)


def _dicom_mr(source: CorpusSource, room: Room) -> Iterator[SlicePair]:
    needed = [t for t in source.tasks if room(t, source.split)]
    if not needed:
        return
    path = source_path(source)
    image = _mr_units(read_dicom_slice(path, "mri"))
    spacing = [float(s) for s in pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing]
    if "mri" in needed:
        yield _pair(source, "mri", image, spacing)
    if "pet" in needed:
        yield _pair(source, "pet", *_activity_from_intensity(image, spacing))


def _nifti_mr(source: CorpusSource, room: Room) -> Iterator[SlicePair]:
    path = source_path(source)
    img = nib.load(path)
    volume = np.asarray(img.dataobj, dtype=np.float32)
    volume = _mr_units(volume[..., 0] if volume.ndim == 4 else volume)  # the first frame of a time series
    mask = volume > np.percentile(volume, 60)
    for i, fraction in enumerate(NIFTI_POSITIONS):
        image, spacing, codes = _volume_slice(volume, img.affine, "axial", fraction, mask)
        if room("mri", source.split):
            yield _pair(source, "mri", image, spacing, axcodes=codes)
        if "pet" in source.tasks and i % 2 == 0 and room("pet", source.split):
            yield _pair(source, "pet", *_activity_from_intensity(image, spacing), axcodes=codes, index=i)


def _mni152(source: CorpusSource, room: Room, drawn_noise: bool = True) -> Iterator[SlicePair]:
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    positions = [(plane, fraction) for plane, fractions in MNI_POSITIONS.items() for fraction in fractions]
    if room("mri", source.split):
        t1 = load_mni152_template(resolution=1)
        volume = np.asarray(t1.dataobj, dtype=np.float32) * MRI_PEAK
        for plane, fraction in positions:
            if not room("mri", source.split):
                break
            image, spacing, codes = _volume_slice(volume, t1.affine, plane, fraction, volume > 0.1 * MRI_PEAK)
            std = template_noise_std(plane, fraction, drawn_noise)
            noise = RandRicianNoise(prob=1.0, std=std, sample_std=False, relative=False, dtype=np.float32)
            noise.set_random_state(_seed(source.subject, plane, fraction))
            yield _pair(source, "mri", np.asarray(noise(image[None]))[0], spacing, axcodes=codes)
    if room("pet", source.split):
        grey, white = load_mni152_gm_template(resolution=2), load_mni152_wm_template(resolution=2)
        grey_p, white_p = (np.asarray(m.dataobj, dtype=np.float32) for m in (grey, white))
        activity = PET_GREY_SUV * grey_p + PET_WHITE_SUV * white_p
        for i, (plane, fraction) in enumerate(positions):
            if not room("pet", source.split):
                break
            image, spacing, codes = _volume_slice(activity, grey.affine, plane, fraction, grey_p + white_p > 0.5)
            yield _pair(source, "pet", image, spacing, axcodes=codes, index=i)


def _maker(source: CorpusSource, drawn_noise: bool) -> Callable[[CorpusSource, Room], Iterator[SlicePair]]:
    if source.subject == "mni152":
        return functools.partial(_mni152, drawn_noise=drawn_noise)
    if source.tasks == ("ct",):
        return _ct
    return _nifti_mr if source.package == "nibabel" else _dicom_mr


def corpus_pairs(limit: int | None = None, drawn_noise: bool = True) -> Iterator[SlicePair]:
    """The corpus's slice pairs, in :data:`SOURCES` order (deterministic: seeds come from the sources).

    Args:
        limit: at most this many slices per task and split (a quick partial corpus); None: all.
        drawn_noise: the template's MRI slices draw their noise std (:func:`template_noise_std`); False: the fixed
            std of corpus version 2.

    Raises:
        DataError: a source file is not installed.
    """
    counts: dict[tuple[str, str], int] = {}

    def room(task: str, split: str) -> bool:
        return limit is None or counts.get((task, split), 0) < limit

    for source in SOURCES:
        # the makers ask room() before computing a slice; a slice is counted when it comes out
        for pair in _maker(source, drawn_noise)(source, room):
            counts[pair.task, pair.split] = counts.get((pair.task, pair.split), 0) + 1
            yield pair
