"""The MONAI Deploy application (deploy/app): NIfTI and DICOM in, float32 NIfTI or DICOM out, same result as the
bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from _data_factories import write_series
from _workflow_data import ONE_THREAD_ENV, TINY_ROUTED, bundle_command, tiny_routed_amir
from monai.bundle import ConfigParser
from scripts.export import load_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
APP = REPO / "deploy" / "app"
#: The environment with the Deploy SDK (run.sh sets it up beside .venv); another one can be named by AMIR_DEPLOY_PYTHON.
DEPLOY_PYTHON = Path(os.environ.get("AMIR_DEPLOY_PYTHON", REPO / ".venv-deploy" / "bin" / "python"))


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """The bundle's configs and scripts with a small network and its weights in models/model.pt."""
    root = tmp_path_factory.mktemp("bundle") / "amir"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    shutil.copytree(BUNDLE / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((root / "configs" / "inference.json").read_text())
    config["network_def"].update(TINY_ROUTED)
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    net = tiny_routed_amir()
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def run_app(bundle: Path, source: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    if not DEPLOY_PYTHON.is_file():
        pytest.fail(f"{DEPLOY_PYTHON} is missing: `bash run.sh test` sets up the Deploy SDK's environment there.")
    cmd = [str(DEPLOY_PYTHON), str(APP), "-i", str(source), "-o", str(output), "-m", str(bundle), *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOSCAN_", "AMIR_MODALITY"))}
    env["OMP_NUM_THREADS"] = "1"  # a tiny network: threads spinning on two shared cores cost more than they save
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=output.parent)


def bundle_restore(bundle: Path, source: Path, modality: str | None) -> np.ndarray:
    """The bundle's own inference path (preprocessing -> inferer -> postprocessing), in this process."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["modality"] = modality
    network = load_network(bundle / "models" / "model.pt", bundle / "configs" / "inference.json")
    data = parser.get_parsed_content("preprocessing")({"image": str(source)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    return np.asarray(parser.get_parsed_content("postprocessing")(data)["pred"][0])


def assert_the_bundle_keeps(bundle: Path, inputs: Path, output: Path, target: Path, *options: str) -> None:
    """``monai.bundle run`` over the application's output folder finds its outputs current, by their records."""
    written = target.stat().st_mtime_ns if target.is_file() else sorted(p.stat().st_mtime_ns for p in target.iterdir())
    result = subprocess.run(
        bundle_command("--config_file", "configs/inference.json", "--dataset_dir", str(inputs), "--output_dir",
                       str(output), "--backend", "torch", *options),
        cwd=bundle, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{target} exists, kept" in result.stdout + result.stderr
    now = target.stat().st_mtime_ns if target.is_file() else sorted(p.stat().st_mtime_ns for p in target.iterdir())
    assert now == written


def test_nifti_with_modality_option(tiny_bundle, tmp_path):
    rng = np.random.default_rng(0)
    volume = (rng.normal(40.0, 120.0, (40, 36, 3)) + np.linspace(-300, 300, 36)[None, :, None]).astype(np.float32)
    affine = np.array([[0.8, 0, 0, -10], [0, 0.8, 0, 5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    source = tmp_path / "in" / "scan.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, affine), str(source))
    output = tmp_path / "out"
    # torch, as bundle_restore: "auto" may choose ONNX Runtime (equal within 1e-4 of the window, its own test)
    result = run_app(tiny_bundle, source, output, "--modality", "ct", "--backend", "torch")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    written = nib.load(str(output / "scan_restored.nii.gz"))
    restored = np.asarray(written.dataobj)
    assert written.get_data_dtype() == np.float32  # not cast to uint8 as the SDK does for segmentations
    assert restored.shape == volume.shape
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert restored.min() >= -1024 - 1e-3 and restored.max() <= 3071 + 1e-3  # HU, clipped to the CT window
    assert np.abs(restored - np.round(restored)).max() > 1e-2  # fractional HU survive
    assert np.abs(restored - volume).max() > 1.0  # the network changed the image
    np.testing.assert_allclose(restored, bundle_restore(tiny_bundle, source, "ct"), rtol=0, atol=1e-3)
    assert_the_bundle_keeps(tiny_bundle, source.parent, output, output / "scan_restored.nii.gz", "--modality", "ct")


def test_dicom_series_modality_from_header(tiny_bundle, tmp_path):
    series = tmp_path / "study" / "ct_series"
    series.mkdir(parents=True)
    write_series(series, values=[900, 1000, 1100, 1200], offset=0, series_number=3, prefix="CT", size=24)
    output = tmp_path / "out"
    result = run_app(
        tiny_bundle, series.parent, output, "--output-format", "nifti", "--backend", "torch"
    )  # the series is found inside
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    written = nib.load(str(output / "ct_series_restored.nii.gz"))
    restored = np.asarray(written.dataobj)
    assert written.get_data_dtype() == np.float32
    expected = bundle_restore(tiny_bundle, series, None)  # Modality CT from the DICOM header
    assert restored.shape == expected.shape and sorted(restored.shape) == [4, 24, 24]
    np.testing.assert_allclose(restored, expected, rtol=0, atol=1e-3)


def test_dicom_series_to_dicom(tiny_bundle, tmp_path):
    series = tmp_path / "study" / "ct_series"
    write_series(series, values=[900, 1000, 1100], offset=0, series_number=3, prefix="CT", size=24)
    output = tmp_path / "out"
    result = run_app(tiny_bundle, series.parent, output)  # output format auto: DICOM in, DICOM out
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    folder = output / "ct_series_restored"
    written = sorted(
        (pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    sources = sorted((pydicom.dcmread(p) for p in series.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert len(written) == 3 and len({ds.SeriesInstanceUID for ds in written}) == 1
    assert written[0].SeriesInstanceUID != sources[0].get("SeriesInstanceUID") and written[0].PatientID == "TEST"
    assert list(written[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    expected = bundle_restore(tiny_bundle, series, None)  # (columns, rows, slices), HU
    for k, ds in enumerate(written):
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(hu, expected[:, :, k].T, atol=0.51)  # stored in 1 HU steps
        assert ds.ImagePositionPatient == sources[k].ImagePositionPatient
    restored, source = itk.imread(str(folder)), itk.imread(str(series))
    assert np.allclose(restored.GetOrigin(), source.GetOrigin())
    assert np.allclose(restored.GetSpacing(), source.GetSpacing())
    assert_the_bundle_keeps(tiny_bundle, series.parent, output, folder)


def test_nifti_without_modality_fails_clearly(tiny_bundle, tmp_path):
    source = tmp_path / "in" / "mystery.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 2), np.float32), np.eye(4)), str(source))
    output = tmp_path / "out"
    result = run_app(tiny_bundle, source, output)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "mystery.nii.gz" in log and "--modality" in log
    assert not list(output.rglob("*.nii.gz"))
