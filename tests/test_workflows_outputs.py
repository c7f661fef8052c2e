"""The restorations a run writes: marked as the bundle's, atomic, shape kept, never NaN, temp files cleaned."""

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from _inference_cases import stale_temp
from monai.data import MetaTensor
from scripts.atomic import remove_stale_temporaries
from scripts.workflows import OUTPUT_MARKER, is_bundle_output, output_status, write_restoration
from scripts.workflows.outputs import check_finite_result, output_record

AFFINE = torch.tensor([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]], dtype=torch.float64)


@pytest.mark.parametrize("shape", [(24, 20), (24, 20, 1), (24, 20, 3)])
def test_write_keeps_shape_affine_and_marks_the_file(tmp_path, shape):
    pred = MetaTensor(torch.rand(1, *shape), affine=AFFINE)
    path = tmp_path / "sub" / "x_restored.nii.gz"
    write_restoration(pred, path)
    image = nib.load(path)
    assert image.shape == shape and image.get_data_dtype() == np.float32
    assert np.allclose(np.asarray(image.dataobj), pred[0].numpy())
    assert np.allclose(image.affine, AFFINE.numpy())
    assert image.header["descrip"].item() == OUTPUT_MARKER and is_bundle_output(path)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert os.listdir(path.parent) == ["x_restored.nii.gz"]  # no temporary file left


def test_output_status(tmp_path):
    path = tmp_path / "x_restored.nii.gz"
    assert output_status(path) == "missing"
    write_restoration(MetaTensor(torch.rand(1, 30, 30, 4)), path)
    assert output_status(path) == "complete"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the bundle's header, half its data
    assert output_status(path) == "broken"
    path.write_bytes(b"my notes")
    assert output_status(path) == "foreign" and not is_bundle_output(path)
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), path)  # a valid image, not the bundle's
    assert output_status(path) == "foreign"
    path.unlink()
    path.mkdir()
    assert output_status(path) == "foreign"


def test_a_nan_result_is_refused():
    check_finite_result(torch.zeros(1, 4, 4), "x.nii.gz")
    with pytest.raises(RuntimeError, match=r"x.nii.gz: the restoration holds 2 non-finite values"):
        check_finite_result(torch.tensor([[0.0, float("nan"), float("inf")]]), "x.nii.gz")


def test_only_the_bundles_stale_temp_files_are_removed(tmp_path):
    stale = stale_temp(tmp_path, "a_restored")  # its writer process has exited
    writing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".b_restored.amir-tmp-{writing.pid}-xyz.nii.gz"  # a write in progress
        live.write_bytes(b"partial")
        own = tmp_path / f".c_restored.amir-tmp-{os.getpid()}-xyz.nii.gz"  # this process's
        own.write_bytes(b"partial")
        others = [tmp_path / ".a_restored.nii.gz", tmp_path / ".a_restored.amir-tmp-123.nii.gz", tmp_path / "x.nii.gz"]
        for path in others:
            path.write_bytes(b"not the bundle's temp file")
        assert remove_stale_temporaries(tmp_path) == [stale]
        assert not stale.exists() and live.exists() and own.exists() and all(p.exists() for p in others)
    finally:
        writing.kill()
        writing.wait()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_an_output_records_what_made_it_and_is_stale_when_that_changed(tmp_path):
    path = tmp_path / "x_restored.nii.gz"
    record = {"input_sha256": ["ab"], "weights_sha256": "cd", "settings": {"modality": "ct", "mri_upsample": 1}}
    write_restoration(MetaTensor(torch.rand(1, 30, 30, 4)), path, record)
    assert output_record(path) == record
    assert output_status(path, record) == "complete" and output_status(path) == "complete"
    assert output_status(path, {**record, "input_sha256": ["ff"]}) == "stale"
    assert output_status(path, {**record, "settings": {"modality": "mri", "mri_upsample": 1}}) == "stale"
    write_restoration(MetaTensor(torch.rand(1, 30, 30, 4)), path)  # as an earlier version wrote it: no record
    assert output_status(path, record) == "stale"
