"""Inputs a user may give the inference config, good and bad, built in a folder: shared by the CLI tests and the
table of cases in the notes (each case: the input folder, the extra command line options, the output folder)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from _workflow_data import (
    BUNDLE,
    ONE_THREAD_ENV,
    bundle_command,
    dead_pid,
    identity_weights,
    tiny_network_config,
    write_nifti,
)
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RTPlanStorage,
    generate_uid,
)

AFFINE = np.array([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
_SOP = {"CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage, "MR": MRImageStorage}


def _file_meta(sop_class: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def write_series(
    folder: Path,
    stored: np.ndarray,
    modality: str = "CT",
    prefix: str = "im",
    series_number: int | None = None,
    intercept: float | None = -1024.0,
    drop: Sequence[str] = (),
    order: Sequence[int] | None = None,
    tags: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write ``stored`` (rows, columns, slices) int16 as one axial DICOM series, files ``<prefix><k>.dcm``.

    ``intercept`` None writes no rescale tags; ``drop`` removes other tags; ``order`` numbers the files in another
    order than the slices (to check that slice order comes from the positions); ``tags`` sets attributes to raw
    values, valid or not (``{"SeriesNumber": "1/../../x"}``), as a hostile file could hold them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    rows, cols, n = stored.shape
    paths = []
    for k in range(n):
        meta = _file_meta(_SOP.get(modality, MRImageStorage))
        ds = Dataset()
        ds.file_meta, ds.preamble = meta, b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.InstanceNumber = modality, "P0", k + 1
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        if series_number is not None:
            ds.SeriesNumber = series_number
        ds.ImagePositionPatient = [-10.0, -20.0, 5.0 + 2.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.6], 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if intercept is not None:
            ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].astype(np.int16)).tobytes()
        for tag in drop:
            delattr(ds, tag)
        for keyword, value in (tags or {}).items():  # raw bytes: pydicom's checks of the value do not apply
            tag = tag_for_keyword(keyword)
            ds[tag] = RawDataElement(Tag(tag), dictionary_VR(tag), len(value.encode()), value.encode(), 0, False, True)
        path = folder / f"{prefix}{(order[k] if order else k):03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_non_image(path: Path, kind: str = "RTPLAN") -> Path:
    """A DICOM object without pixel data: an RT Plan (``"RTPLAN"``) or a basic text SR (``"SR"``)."""
    sop_class = RTPlanStorage if kind == "RTPLAN" else BasicTextSRStorage
    meta = _file_meta(sop_class)
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = kind, "P0"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_values(shape=(20, 24, 3), seed: int = 0) -> np.ndarray:
    """Stored CT values (HU + 1024) spanning air to bone."""
    return np.random.default_rng(seed).integers(0, 2500, shape)


def nifti_with(path: Path, shape=(24, 20, 3), nan: int = 0, inf: int = 0, seed: int = 0) -> Path:
    """A CT NIfTI (HU) with ``nan`` NaN and ``inf`` infinite voxels (``nan=-1``: all NaN)."""
    volume = np.random.default_rng(seed).uniform(-1000, 1500, shape).astype(np.float32)
    flat = volume.reshape(-1)
    if nan < 0:
        flat[:] = np.nan
    else:
        flat[:nan] = np.nan
        flat[nan : nan + inf] = np.inf
    write_nifti(path, volume, AFFINE)
    return path


def stale_temp(folder: Path, name: str) -> Path:
    """A partial output as a killed run of the bundle leaves it (its writer process no longer exists)."""
    from scripts.atomic import temporary_name  # the name says the writer's host and PID namespace: this one

    path = folder / f"{temporary_name(name, dead_pid())}abc123xy.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x1f\x8b partial")
    return path


#: case name -> builder(root) returning (input folder, extra options, output folder, what to check by eye)
CASES: dict[str, Callable[[Path], tuple[Path, list[str], Path]]] = {}


def case(name: str):
    def register(builder):
        CASES[name] = builder
        return builder

    return register


@case("NIfTI with 100 NaN voxels")
def _nan100(root):
    nifti_with(root / "in" / "nan100.nii.gz", nan=100)
    return root / "in", ["--modality", "ct"], root / "out"


@case("NIfTI all NaN")
def _nan_all(root):
    nifti_with(root / "in" / "allnan.nii.gz", nan=-1)
    return root / "in", ["--modality", "ct"], root / "out"


@case("NIfTI with Inf voxels")
def _inf(root):
    nifti_with(root / "in" / "inf.nii.gz", inf=5)
    return root / "in", ["--modality", "ct"], root / "out"


@case("DICOM folder with two CT series")
def _two_ct(root):
    write_series(root / "in" / "study", ct_values(), "CT", prefix="a", series_number=2)
    write_series(root / "in" / "study", ct_values(seed=1), "CT", prefix="b", series_number=5)
    return root / "in", [], root / "out"


@case("DICOM folder with a CT and an MR series")
def _ct_mr(root):
    write_series(root / "in" / "study", ct_values(), "CT", prefix="a")
    write_series(root / "in" / "study", ct_values(seed=1) // 3, "MR", prefix="b", intercept=0)
    return root / "in", [], root / "out"


@case("CT DICOM without RescaleSlope/RescaleIntercept")
def _no_rescale(root):
    write_series(root / "in" / "ct", ct_values(), "CT", intercept=None)
    return root / "in", [], root / "out"


@case("CT DICOM series with --modality pet")
def _contradiction(root):
    write_series(root / "in" / "ct", ct_values(), "CT")
    return root / "in", ["--modality", "pet"], root / "out"


@case("(H, W, 1) NIfTI")
def _hw1(root):
    write_nifti(root / "in" / "flat.nii.gz", np.random.default_rng(0).uniform(-900, 900, (24, 20, 1)), AFFINE)
    return root / "in", ["--modality", "ct"], root / "out"


@case("existing output that is not an image")
def _foreign(root):
    nifti_with(root / "in" / "scan.nii.gz")
    (root / "out").mkdir(parents=True)
    (root / "out" / "scan_restored.nii.gz").write_bytes(b"my notes, not an image")
    return root / "in", ["--modality", "ct"], root / "out"


@case("output folder inside the input folder, run twice")
def _nested(root):
    nifti_with(root / "in" / "scan.nii.gz")
    return root / "in", ["--modality", "ct"], root / "in" / "restored"


@case("outputs beside the inputs (output_dir = dataset_dir), run twice")
def _beside(root):
    nifti_with(root / "in" / "scan.nii.gz")
    return root / "in", ["--modality", "ct"], root / "in"


@case("stale temp file of a killed run")
def _stale(root):
    nifti_with(root / "in" / "scan.nii.gz")
    stale_temp(root / "out", "scan_restored")
    (root / "out" / ".scan_restored.mine.nii.gz").write_bytes(b"not the bundle's")
    return root / "in", ["--modality", "ct"], root / "out"


@case("4-D NIfTI")
def _four_d(root):
    write_nifti(root / "in" / "fmri.nii.gz", np.zeros((16, 16, 4, 3)), AFFINE)
    return root / "in", ["--modality", "mri"], root / "out"


@case("folder holding an RT Plan only")
def _rtplan(root):
    write_non_image(root / "in" / "plan" / "rtplan.dcm", "RTPLAN")
    return root / "in", [], root / "out"


@case("folder holding an SR only")
def _sr(root):
    write_non_image(root / "in" / "report" / "sr.dcm", "SR")
    return root / "in", [], root / "out"


@case("CT series beside an SR")
def _ct_and_sr(root):
    write_series(root / "in" / "study", ct_values(), "CT")
    write_non_image(root / "in" / "study" / "zz_report.dcm", "SR")
    return root / "in", [], root / "out"


@case("truncated DICOM slice in a series")
def _truncated(root):
    files = write_series(root / "in" / "ct", ct_values(), "CT")
    files[1].write_bytes(files[1].read_bytes()[:-300])
    return root / "in", [], root / "out"


@case("unknown --modality")
def _unknown(root):
    nifti_with(root / "in" / "scan.nii.gz")
    return root / "in", ["--modality", "xray"], root / "out"


@case("empty folder")
def _empty(root):
    (root / "in").mkdir(parents=True)
    return root / "in", ["--modality", "ct"], root / "out"


@case("missing folder")
def _missing(root):
    return root / "nowhere", ["--modality", "ct"], root / "out"


@case("weights that make NaN")
def _nan_weights(root):
    nifti_with(root / "in" / "scan.nii.gz")
    return root / "in", ["--modality", "ct", "--ckpt_path", "nan.pt"], root / "out"


def run_inference(
    root: Path, dataset_dir: Path, options: Sequence[str], output_dir: Path
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/inference.json`` from the bundle folder, with a tiny
    network whose weights make it the identity (or NaN weights, when ``--ckpt_path`` names ``nan.pt``)."""
    import torch

    weights = root / "identity.pt"
    if not weights.exists():
        identity_weights(weights)
        state = torch.load(weights, weights_only=True)
        torch.save(
            {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
            root / "nan.pt",
        )
    options = [os.fspath(root / o) if o == "nan.pt" else o for o in options]
    args = ["--dataset_dir", os.fspath(dataset_dir), "--output_dir", os.fspath(output_dir)]
    args += [] if "--ckpt_path" in options else ["--ckpt_path", os.fspath(weights)]
    args += ["--network_def", tiny_network_config(root / "tiny.json"), *options]
    return subprocess.run(
        bundle_command("--config_file", "configs/inference.json", *args),
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD_ENV,
    )


def written(output_dir: Path) -> list[str]:
    """The NIfTI files (hidden ones included) and DICOM output folders under ``output_dir``, relative to it."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.rglob("*.nii*")]
    found += [p for p in output_dir.rglob("*") if p.is_dir() and any(p.glob("*.dcm"))]
    return sorted(p.relative_to(output_dir).as_posix() for p in found)


def shapes(output_dir: Path) -> dict[str, tuple[int, ...] | str]:
    """Shape of each NIfTI file :func:`written` lists (hidden ones left out), "(not an image)", or for a DICOM
    output folder its number of files."""

    def shape(path: Path) -> tuple[int, ...] | str:
        if path.is_dir():
            return f"({len(list(path.glob('*.dcm')))} DICOM files)"
        try:
            return nib.load(path).shape
        except Exception:
            return "(not an image)"

    return {name: shape(output_dir / name) for name in written(output_dir) if not Path(name).name.startswith(".")}
