"""The offline demo sets of the three tasks, built deterministically from images shipped inside packages.

The demo set (version 3, :data:`DEMO_VERSION`, :mod:`scripts.data.corpus`) is the real-image corpus: whole real CT
and MR slices from pydicom, pydicom-data and nibabel, the MNI152 template in three planes, PET phantoms on their
anatomy, split by source image (version 2: the template's MRI slices all at one noise std, the corpus of
the 0.3.0 and 0.4.0 weights); its items also carry ``spacing`` (mm) and ``body_diameter_cm``, the geometry the
on-the-fly dose transforms need. The shipped weights are trained on it.

Version 1 (``--version 1``) is the small set of the first release, quick to build, kept for quick checks:

- MRI: 20 axial slices (every 5 mm) of nilearn's MNI152 2009 T1 template (1 mm, skull-stripped; a T1, not IXI's T2),
  scaled to 0..3000 within the MRI window 0..4095, cropped to 208x176; LQ by :class:`scripts.transforms.KSpaceCrop`
  (4x).
- CT: the real CT slices pydicom ships, only those present in the installed package (never downloaded):
  ``J2K_pixelrep_mismatch.dcm`` (512x512 head) -> train, ``CT_small.dcm`` (128x128) -> validation, ``693_J2KI.dcm``
  (512x512 head, lossy JPEG 2000) -> test. Each whole slice gets quarter-dose noise
  (:class:`scripts.transforms.SimulateLowDoseCT` with the slice's pixel size), then 128x128 crops on a 64 px grid
  that are mostly body are cut from HQ and LQ alike (at most 16 / 1 / 4 per split). Crops of one source slice stay
  in one split; if a file is missing, the crops of those present are spread over the splits instead.
- PET: an FDG-like brain phantom, SUV 8 in grey and 2 in white matter (about 4:1; nilearn's MNI152 grey / white
  matter maps at 2 mm), 16 axial slices cropped to 112x96; HQ and LQ are the matched full-dose and DRF-12
  reconstructions of :meth:`scripts.transforms.SimulateLowDosePET.simulate_pair`.

MRI and PET slices go to the splits by position (every 5th from the 3rd to test, every 10th from the 5th to
validation, the rest to training): 14 / 2 / 4 MRI and 11 / 2 / 3 PET slices. So the whole set is about 50 slice
pairs: enough to run every workflow end to end, far too small to train a useful model.

Files: ``<dir>/slices/<task>_<nnn>_{lq,hq}.nii.gz`` (float32, physical units, (H, W, 1) with an affine stating the
house orientation) and ``<dir>/datalist.json`` (``training`` / ``validation`` / ``test`` lists, readable by
``monai.data.load_decathlon_datalist``), ``<dir>/.amir-bundle.json`` (the bundle's marker: only a folder holding it
is ever replaced). The folder is built in a temporary sibling and renamed into place
(:func:`scripts.atomic.atomic_folder`), so an interrupted build leaves no partial set; a sibling left by a killed
build is removed by a later build.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from monai.data import load_decathlon_datalist

from ..atomic import atomic_folder, remove_stale_temporaries
from ..ownership import MARKER, check_replaceable, folder_kind, mark_folder
from ..transforms import KSpaceCrop, SimulateLowDoseCT, SimulateLowDosePET
from .loading import read_dicom_slice
from .pairs import SlicePair
from .slices import TASKS, DataError, affine_from_axcodes, normalize_split, orient_slice

__all__ = [
    "DEMO_VERSION",
    "CORPUS_VERSION",
    "DEMO_ENV",
    "DEFAULT_DEMO_DIR",
    "CT_SOURCES",
    "default_demo_dir",
    "build_demo_set",
    "build_demo_datalist",
    "main",
]

DEMO_VERSION = 3  # the version built by default; a cached set of another version is rebuilt
CORPUS_VERSION = 3  # the real-image corpus (scripts.data.corpus); 2: its template slices at one noise std
_DESCRIPTIONS = {
    1: "Tiny offline demo set (MNI152 MRI, pydicom CT, MNI152 PET phantom); see scripts/data/demo.py",
    2: "Real-image demo corpus (packaged CT / MR slices, MNI152, PET phantoms); see scripts/data/corpus.py",
    3: "Real-image demo corpus (packaged CT / MR slices, MNI152 at drawn noise, PET phantoms); see "
    "scripts/data/corpus.py",
}
DEMO_ENV = "AMIR_DEMO_DIR"
DEFAULT_DEMO_DIR = Path("~/.cache/amir_bundle/demo")
DATALIST = "datalist.json"
DEMO_KIND = "demo-set"  # the kind in the bundle's folder marker (scripts.ownership)
_KEYS = {"train": "training", "val": "validation", "test": "test"}
# pydicom's CT test files and the split each one's crops go to
CT_SOURCES: dict[str, str] = {"J2K_pixelrep_mismatch.dcm": "train", "CT_small.dcm": "val", "693_J2KI.dcm": "test"}
_CT_CAPS = {"train": 16, "val": 1, "test": 4}
CT_CROP, CT_STRIDE, CT_BODY_FRACTION = 128, 64, 0.6
MRI_SLICES, MRI_STEP, MRI_FIRST, MRI_PEAK, MRI_SIZE = 20, 5, 30, 3000.0, (208, 176)
PET_SLICES, PET_STEP, PET_FIRST, PET_SIZE = 16, 3, 20, (112, 96)
PET_GREY_SUV, PET_WHITE_SUV, PET_DRF = 8.0, 2.0, 12.0


def default_demo_dir() -> Path:
    """``$AMIR_DEMO_DIR`` if set, else ``~/.cache/amir_bundle/demo``."""
    return Path(os.environ.get(DEMO_ENV) or DEFAULT_DEMO_DIR).expanduser()


def _split_by_position(i: int) -> str:
    if i % 5 == 2:
        return "test"
    if i % 10 == 4:
        return "val"
    return "train"


def _center_crop(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    top, left = (array.shape[0] - size[0]) // 2, (array.shape[1] - size[1]) // 2
    return array[top : top + size[0], left : left + size[1]]


def _within_limit(assignments: list[tuple], limit: int | None, counts: dict[str, int] | None = None) -> list[tuple]:
    """At most ``limit`` ``(what, split)`` assignments per split, the first ones in order; ``counts`` carries over."""
    if limit is None:
        return assignments
    counts = {} if counts is None else counts
    kept = []
    for index, split in assignments:
        if counts.get(split, 0) < limit:
            counts[split] = counts.get(split, 0) + 1
            kept.append((index, split))
    return kept


def _mri_pairs(limit: int | None) -> Iterator[SlicePair]:
    from nilearn.datasets import load_mni152_template  # slow import, only needed here

    template = load_mni152_template(resolution=1)
    codes = nib.aff2axcodes(template.affine)
    volume = np.asarray(template.dataobj, dtype=np.float32)
    crop = KSpaceCrop(0.25)
    chosen = [(i, _split_by_position(i)) for i in range(MRI_SLICES)]
    for i, split in _within_limit(chosen, limit):
        z = MRI_FIRST + MRI_STEP * i
        hq = _center_crop(orient_slice(volume[:, :, z], codes[:2], codes[2]), MRI_SIZE) * MRI_PEAK
        hq = np.ascontiguousarray(hq, dtype=np.float32)
        lq = np.asarray(crop(hq[None]))[0]
        yield SlicePair("mri", split, "mni152", lq, hq, (1.0, 1.0))


def _ct_crops(hu: np.ndarray) -> list[tuple[int, int]]:
    """Origins of the 128x128 crops that are mostly body (HU above -500), on a 64 px grid."""
    if hu.shape[0] <= CT_CROP or hu.shape[1] <= CT_CROP:
        return [(0, 0)]
    origins = []
    for top in range(0, hu.shape[0] - CT_CROP + 1, CT_STRIDE):
        for left in range(0, hu.shape[1] - CT_CROP + 1, CT_STRIDE):
            if np.mean(hu[top : top + CT_CROP, left : left + CT_CROP] > -500) >= CT_BODY_FRACTION:
                origins.append((top, left))
    return origins


def _evenly(items: list, cap: int) -> list:
    if len(items) <= cap:
        return items
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, cap).round().astype(int)]


def _ct_sources() -> list[tuple[str, Path]]:
    from pydicom.data import get_testdata_file

    found = []
    for name in CT_SOURCES:
        path = get_testdata_file(name, download=False)  # only what the installed package ships
        if path is not None and Path(path).is_file():
            found.append((name, Path(path)))
    return found


def _ct_pairs(limit: int | None) -> Iterator[SlicePair]:
    sources = _ct_sources()
    if not sources:
        raise DataError(f"pydicom ships none of the demo CT files {list(CT_SOURCES)}")
    spread = {CT_SOURCES[name] for name, _ in sources} != set(_KEYS)
    if spread:
        warnings.warn(
            f"demo CT: only {[n for n, _ in sources]} present; crops are spread over the splits", stacklevel=2
        )
    counts: dict[str, int] = {}
    for index, (name, path) in enumerate(sources):
        hq = read_dicom_slice(path, "ct")
        spacing = [float(s) for s in pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing]
        origins = _ct_crops(hq)
        if not spread:
            origins = [(o, CT_SOURCES[name]) for o in _evenly(origins, _CT_CAPS[CT_SOURCES[name]])]
        else:
            origins = [(o, _split_by_position(k)) for k, o in enumerate(_evenly(origins, 16))]
        origins = _within_limit(origins, limit, counts)
        if not origins:
            continue
        # noise on the whole slice (the photon paths cross all of it), then the same crops of HQ and LQ
        simulate = SimulateLowDoseCT(0.25, pixel_size_cm=spacing[0] / 10.0, circle=hq.shape[0] == hq.shape[1])
        simulate.set_random_state(seed=1000 + index)
        lq = np.asarray(simulate(hq[None]))[0]
        for (top, left), split in origins:
            window = np.s_[top : top + CT_CROP, left : left + CT_CROP]
            crop_lq, crop_hq = lq[window].copy(), hq[window].copy()
            yield SlicePair("ct", split, Path(name).stem, crop_lq, crop_hq, (spacing[0], spacing[1]))


def _pet_pairs(limit: int | None) -> Iterator[SlicePair]:
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    grey = load_mni152_gm_template(resolution=2)
    white = load_mni152_wm_template(resolution=2)
    codes = nib.aff2axcodes(grey.affine)
    activity = PET_GREY_SUV * np.asarray(grey.dataobj, dtype=np.float32)
    activity += PET_WHITE_SUV * np.asarray(white.dataobj, dtype=np.float32)
    chosen = [(i, _split_by_position(i)) for i in range(PET_SLICES)]
    for i, split in _within_limit(chosen, limit):
        z = PET_FIRST + PET_STEP * i
        phantom = _center_crop(orient_slice(activity[:, :, z], codes[:2], codes[2]), PET_SIZE)
        simulate = SimulateLowDosePET(PET_DRF, seed=2000 + i)
        lq, hq = simulate.simulate_pair(np.ascontiguousarray(phantom, dtype=np.float32)[None])
        yield SlicePair("pet", split, "mni152-phantom", np.asarray(lq)[0], np.asarray(hq)[0], (2.0, 2.0))


def _write_nifti(array: np.ndarray, spacing: Sequence[float], axcodes: Sequence[str], path: Path) -> None:
    affine = affine_from_axcodes(axcodes, (*spacing, 1.0))
    image = nib.Nifti1Image(np.ascontiguousarray(array, dtype=np.float32)[:, :, None], affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, os.fspath(path))


def _pairs(limit: int | None, version: int) -> Iterator:
    if version >= 2:
        from .corpus import corpus_pairs  # slow imports (nilearn, itk), only for the corpus

        return corpus_pairs(limit, drawn_noise=version >= 3)
    return itertools.chain(_mri_pairs(limit), _ct_pairs(limit), _pet_pairs(limit))


def _build_into(folder: Path, limit: int | None, version: int = DEMO_VERSION) -> dict:
    (folder / "slices").mkdir()
    lists: dict[str, list[dict]] = {key: [] for key in _KEYS.values()}
    counters: dict[str, int] = {}
    for pair in _pairs(limit, version):
        for name, array in (("lq", pair.lq), ("hq", pair.hq)):
            if not np.all(np.isfinite(array)):
                raise DataError(f"demo {pair.task} slice from {pair.subject}: non-finite values in the {name}")
        n = counters.get(pair.task, 0)
        counters[pair.task] = n + 1
        image, label = f"slices/{pair.task}_{n:03d}_lq.nii.gz", f"slices/{pair.task}_{n:03d}_hq.nii.gz"
        _write_nifti(pair.lq, pair.spacing, pair.axcodes, folder / image)
        _write_nifti(pair.hq, pair.spacing, pair.axcodes, folder / label)
        item = {"image": image, "label": label, "task": pair.task, "subject": pair.subject, **pair.extra}
        lists[_KEYS[pair.split]].append(item)
    datalist = {
        "name": "AMIR demo",
        "description": _DESCRIPTIONS[version],
        "build": {"version": version, "limit": limit},
        **lists,
    }
    # written last: its presence marks a complete set
    (folder / DATALIST).write_text(json.dumps(datalist, indent=1, sort_keys=True) + "\n")
    return datalist


def _adopt_legacy(folder: Path) -> None:
    """Mark a demo set of version 1, built before the marker existed (``datalist.json`` and ``slices/`` only)."""
    if not folder.is_dir() or (folder / MARKER).exists():
        return
    if {p.name for p in folder.iterdir()} != {DATALIST, "slices"}:
        return
    try:
        datalist = json.loads((folder / DATALIST).read_text())
    except (OSError, ValueError):
        return
    if isinstance(datalist, dict) and datalist.get("name") == "AMIR demo" and "build" in datalist:
        mark_folder(folder, DEMO_KIND)


def _build_of(folder: Path) -> dict | None:
    """The ``build`` record (version, limit) of the demo set in ``folder``; None if it has no readable one."""
    try:
        return json.loads((folder / DATALIST).read_text()).get("build")
    except (OSError, ValueError, AttributeError):
        return None


def _is_complete(folder: Path, limit: int | None, version: int = DEMO_VERSION) -> bool:
    try:
        datalist = json.loads((folder / DATALIST).read_text())
    except (OSError, ValueError):
        return False
    if datalist.get("build") != {"version": version, "limit": limit}:
        return False
    items = [item for key in _KEYS.values() for item in datalist.get(key, [])]
    return bool(items) and all((folder / item[k]).is_file() for item in items for k in ("image", "label"))


def build_demo_set(
    out_dir: str | os.PathLike | None = None, force: bool = False, limit: int | None = None, version: int | None = None
) -> Path:
    """Build the demo set (or reuse a complete one of the same version and ``limit``).

    Args:
        out_dir: target folder; None: :func:`default_demo_dir`.
        force: rebuild even if a complete set is there.
        limit: at most this many slices per task and split (a quick partial set, e.g. for tests); None: all.
        version: 1 (the small demo set), 3 (the real-image corpus) or 2 (its earlier build); None:
            :data:`DEMO_VERSION`.

    Returns:
        The folder, holding ``datalist.json`` and ``slices/``.

    Only a folder the bundle built as a demo set (it holds the bundle's marker) is ever replaced; a missing or empty
    folder is built; anything else is left untouched and is an error.

    Raises:
        DataError: none of the source images is available.
        UserInputError: ``out_dir`` holds something that is not a demo set built by the bundle.
    """
    out = Path(out_dir).expanduser() if out_dir is not None else default_demo_dir()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    version = DEMO_VERSION if version is None else int(version)
    if version not in _DESCRIPTIONS:
        raise ValueError(f"version must be one of {sorted(_DESCRIPTIONS)}, got {version}")
    _adopt_legacy(out)
    check_replaceable(
        out,
        DEMO_KIND,
        "The demo dataset builds only into a new or empty folder: for your own data give its builder "
        "(--dataset ixi, mayo, pet or all-in-one), or leave dataset_dir unset for the default demo folder.",
    )
    if not force and folder_kind(out) == DEMO_KIND and _is_complete(out, limit, version):
        return out
    built = _build_of(out) if folder_kind(out) == DEMO_KIND else None
    if built is not None and built != {"version": version, "limit": limit}:
        warnings.warn(
            f"{out}: rebuilding the demo set (it holds version {built.get('version')}, limit {built.get('limit')}; "
            f"this needs version {version}, limit {limit}).",
            stacklevel=2,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent)  # what a killed build left beside the set
    with atomic_folder(out, DEMO_KIND) as tmp:
        _build_into(tmp, limit, version)
    return out


def build_demo_datalist(
    dataset_dir: str | os.PathLike | None = None,
    tasks: Sequence[str] = TASKS,
    split: str = "train",
    limit: int | None = None,
    force: bool = False,
    version: int | None = None,
) -> list[dict]:
    """The demo set's items of one split and some tasks, building the set first when it is missing.

    Args:
        dataset_dir: the demo folder; None: :func:`default_demo_dir`.
        tasks: tasks to keep.
        split: ``train``, ``val``, ``test`` or ``all``.
        limit: see :func:`build_demo_set`.
        force: rebuild.
        version: see :func:`build_demo_set`.

    Returns:
        Items ``{"image": lq.nii.gz, "label": hq.nii.gz, "task": t, "subject": s}`` with absolute paths
        (versions 2 and 3: also ``spacing`` and ``body_diameter_cm``).
    """
    folder = build_demo_set(dataset_dir, force=force, limit=limit, version=version)
    name = normalize_split(split)
    keys = list(_KEYS.values()) if name == "all" else [_KEYS[name]]
    items = []
    for key in keys:
        items += load_decathlon_datalist(folder / DATALIST, is_segmentation=True, data_list_key=key, base_dir=folder)
    return [item for item in items if item["task"] in tasks]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m scripts.data.demo [--out DIR] [--force] [--limit N] [--version V]``.

    Prints the folder.
    """
    parser = argparse.ArgumentParser(prog="python -m scripts.data.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"target folder (default: ${DEMO_ENV} or {DEFAULT_DEMO_DIR})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete set exists")
    parser.add_argument("--limit", type=int, default=None, help="at most N slices per task and split")
    parser.add_argument("--version", type=int, default=None, help=f"1: small demo set, 3: real-image corpus, 2: its "
                        f"earlier build (default {DEMO_VERSION})")  # fmt: skip
    args = parser.parse_args(argv)
    print(build_demo_set(args.out, force=args.force, limit=args.limit, version=args.version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
