"""Small inputs shared by the workflow and config tests: DICOM series, NIfTI files, tiny networks."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

#: Keyword arguments of a tiny AMIR, fast on a CPU.
TINY_NETWORK = {"_target_": "scripts.networks.AMIR", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}

#: A tiny AMIR with a small instruction dictionary, for the export and deployment tests.
TINY_ROUTED = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "num_atoms": 4, "atom_dim": 16}


def tiny_routed_amir(seed: int = 0) -> torch.nn.Module:
    """The ``TINY_ROUTED`` AMIR with random channel-routing scales: fresh ones make channel routing the identity."""
    from scripts.networks import AMIR

    torch.manual_seed(seed)
    net = AMIR(**TINY_ROUTED)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("gamma", "beta")):
                p.normal_(0.0, 0.2)
    return net


def write_dicom_series(
    folder: Path,
    stored: np.ndarray,
    modality: str = "CT",
    intercept: float = -1024.0,
    spacing=(0.8, 0.6, 2.5),
    extra: dict | None = None,
) -> None:
    """Write ``stored`` (rows, columns, slices) int16 as a DICOM series, one file per slice, axial, LPS origin.

    ``extra`` holds more attributes (DICOM keywords) set on every file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    sop_class = {"CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage}.get(modality, MRImageStorage)
    rows, cols, n = stored.shape
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.preamble = meta, b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.InstanceNumber = modality, "P0", k + 1
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.ImagePositionPatient = [-10.0, -20.0, 5.0 + spacing[2] * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].astype(np.int16)).tobytes()
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.save_as(folder / f"im{k:03d}.dcm", enforce_file_format=True)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Save ``array`` as float32 NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), path)


def identity_weights(path: Path) -> None:
    """Weights of the tiny AMIR with its output convolution zeroed: the global residual makes it the identity."""
    from scripts.networks import AMIR

    kwargs = {k: v for k, v in TINY_NETWORK.items() if k != "_target_"}
    net = AMIR(**kwargs)
    with torch.no_grad():
        net.output.weight.zero_()
    torch.save(net.state_dict(), path)


def tiny_network_config(path: Path) -> str:
    """Write a config holding the tiny ``network_def``; returns the CLI override value that pulls it in."""
    path.write_text(json.dumps({"network_def": TINY_NETWORK}))
    return f"%{path}#network_def"


BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def demo_dir() -> Path:
    """The demo data set (built once into its default cache folder, then reused).

    Tests on several pytest-xdist workers call this at once: a lock on this file lets one build a missing set
    while the others wait and then reuse it (two builds would replace the folder under the first one's readers).
    """
    from scripts.data import build_demo_set

    with open(__file__) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return build_demo_set()


def bundle_command(*args: str) -> list[str]:
    """``python -m monai.bundle run ...`` with this interpreter (run it with ``cwd=BUNDLE``)."""
    return [sys.executable, "-m", "monai.bundle", "run", *args]


#: The environment of a CLI subprocess of a tiny network: one thread (OpenMP threads spinning on two shared cores
#: cost more CPU time than they save).
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_side_by_side(commands: list[list[str]], workers: int = 2, **kwargs) -> list[subprocess.CompletedProcess]:
    """Run independent commands ``workers`` at a time (a CLI process spends most of its time starting, on one
    core); ``kwargs`` go to :func:`subprocess.run` (default: ``cwd=BUNDLE``, output captured as text, one thread,
    300 s each). Returns their results in the order of ``commands``."""
    from concurrent.futures import ThreadPoolExecutor

    options = {"cwd": BUNDLE, "capture_output": True, "text": True, "timeout": 300, "env": ONE_THREAD_ENV, **kwargs}
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda command: subprocess.run(command, **options), commands))


def dead_pid() -> int:
    """The id of a process that has exited (as the writer of a temporary file a killed run left)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def hold_run_lock(folder: Path, seconds: float = 60.0) -> int:
    """Fork a process that holds the run lock of ``folder`` for ``seconds`` (taken on return); returns its id."""
    from scripts.workflows.run_lock import RunLock

    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, wait, end normally (without the parent's clean-up)
        try:
            lock = RunLock(folder).acquire()
            os.write(done, b"1")
            time.sleep(seconds)
            lock.release()
        finally:
            os._exit(0)
    os.close(done)
    assert os.read(ready, 1) == b"1", "the lock holder failed"
    os.close(ready)
    return pid


def end_process(pid: int, sig: int | None = signal.SIGKILL) -> int:
    """Send ``sig`` (None: none) to a forked child and reap it; returns its wait status."""
    if sig is not None:
        os.kill(pid, sig)
    return os.waitpid(pid, 0)[1]


def pet_attributes(units: str = "BQML", injection_time: str = "100000") -> dict:
    """DICOM attributes of a PET series acquired at 10:00, decay-corrected to the start, of a 70 kg patient."""
    isotope = Dataset()
    isotope.RadionuclideTotalDose, isotope.RadionuclideHalfLife = 3.5e8, 6586.2
    isotope.RadiopharmaceuticalStartTime = injection_time
    return {
        "Units": units, "DecayCorrection": "START", "PatientWeight": 70, "SeriesTime": "100000",
        "AcquisitionTime": "100000", "RadiopharmaceuticalInformationSequence": [isotope],
    }  # fmt: skip
