"""The MONAI Deploy application's outputs: names read from files stay inside the output folder, and an output that
exists is refused before any inference, in one line (no traceback, no GXF errors)."""

import hashlib

import numpy as np
from _inference_cases import ct_values, write_series
from test_deploy_app import run_app, tiny_bundle  # noqa: F401 - tiny_bundle is a fixture


def test_hostile_series_number_and_an_existing_output(tiny_bundle, tmp_path):  # noqa: F811
    inputs, output = tmp_path / "in", tmp_path / "a" / "b" / "out"
    write_series(inputs / "study", ct_values(), "CT", prefix="a", tags={"SeriesNumber": "1/../../x"})
    write_series(inputs / "study", ct_values(seed=1), "CT", prefix="b", series_number=5)
    output.mkdir(parents=True)
    result = run_app(tiny_bundle, inputs, output, "--output-format", "nifti")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SeriesNumber '1/../../x' contains '..', so it is not used in an output name" in result.stderr
    assert sorted(p.parent for p in tmp_path.rglob("*.nii.gz")) == [output, output]  # nothing above it
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in output.iterdir()}

    again = run_app(tiny_bundle, inputs, output, "--output-format", "nifti")
    assert again.returncode == 1
    log = again.stdout + again.stderr
    assert "Traceback" not in log and "GXF_FAILURE" not in log and "[error]" not in log
    (line,) = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert "_restored.nii.gz: exists (and 1 more); remove it" in line and "--overwrite" in line
    assert "restoring" not in log  # refused before the first inference
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in output.iterdir()} == before
    assert np.all([p.name.isprintable() for p in output.iterdir()])
