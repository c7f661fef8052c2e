"""configs/inference.json through the CLI on what a hostile file or a changed setting could do to the outputs:
names read from files never leave the output folder, and a rerun redoes an output whose input, weights or
settings changed instead of keeping it."""

import hashlib
import os

import torch
from _inference_cases import ct_values, nifti_with, run_inference, write_series

#: Values a DICOM tag or a file name could hold to steer an output path.
HOSTILE = {
    "SeriesNumber": ["1/../../x", "/tmp/absolute", "7\x00x", "\x1b[2J", "9" * 300],
    "SeriesInstanceUID": ["1.2/../../y"],
}


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def everything(root):
    return {p for p in root.rglob("*")}


def test_names_from_files_never_leave_the_output_folder(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "a" / "b" / "out"
    values = [(k, v) for k, vs in HOSTILE.items() for v in vs]
    for n, (keyword, value) in enumerate(values):
        tags = {keyword: value} if keyword == "SeriesNumber" else {keyword: value, "SeriesNumber": "1/../../z"}
        write_series(inputs / "study", ct_values(seed=n), "CT", prefix=f"s{n}", tags=tags)
    nifti_with(inputs / ("long" * 60 + ".nii.gz"))  # 244 bytes: within NAME_MAX, not with "_restored"
    nifti_with(inputs / "new\nline.nii.gz")
    before, inputs_before = everything(tmp_path), digest(inputs)
    for output_format in ("nifti", "auto"):  # NIfTI files, and DICOM series folders
        result = run_inference(tmp_path, inputs, ["--modality", "ct", "--output_format", output_format], outputs)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "study/s0000.dcm: SeriesNumber '1/../../x' contains '..', so it is not used" in result.stdout
        assert "study/s5000.dcm: SeriesInstanceUID '1.2/../../y' contains '..'" in result.stdout
        assert "new\\nline' contains NUL or control characters" in result.stdout
    new = everything(tmp_path) - before - {tmp_path / "identity.pt", tmp_path / "nan.pt", tmp_path / "tiny.json"}
    assert {p for p in new if outputs not in p.parents} == {outputs, outputs.parent, outputs.parent.parent}
    assert all(len(os.fsencode(p.name)) <= 255 and p.name.isprintable() for p in new), sorted(new)
    assert len(list(outputs.glob("*.nii.gz"))) == 8 and len([p for p in outputs.iterdir() if p.is_dir()]) == 6
    assert digest(inputs) == inputs_before


def test_a_rerun_redoes_what_changed_and_keeps_what_did_not(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_series(inputs / "series", ct_values(), "CT", series_number=2)
    nifti_with(inputs / "scan.nii.gz")
    targets = [outputs / "scan_restored.nii.gz", outputs / "series_restored" / "0001.dcm"]

    def run(*options):
        result = run_inference(tmp_path, inputs, ["--modality", "ct", *options], outputs)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout, [t.read_bytes() for t in targets]

    log, first = run()
    log, again = run()
    assert log.count("exists, kept") == 2 and again == first  # nothing changed: both kept
    log, other = run("--modality", "mri")  # the NIfTI is redone; the DICOM series stays CT (its header's Modality)
    assert 'scan_restored.nii.gz: made from other inputs or settings (modality ("ct" -> "mri"))' in log
    assert log.count("exists, kept") == 1 and other[0] != first[0] and other[1] == first[1]
    weights = torch.load(tmp_path / "identity.pt", weights_only=True)
    weights["output.weight"] = weights["output.weight"] + 1e-3  # zero in the identity's weights
    torch.save(weights, tmp_path / "other.pt")
    log, other = run("--modality", "mri", "--ckpt_path", os.fspath(tmp_path / "other.pt"))
    assert log.count("(the weights); writing it again") == 2 and "exists, kept" not in log
    nifti_with(inputs / "scan.nii.gz", seed=7)  # the input's content changes, its name does not
    log, changed = run("--modality", "mri", "--ckpt_path", os.fspath(tmp_path / "other.pt"))
    assert "scan_restored.nii.gz: made from other inputs or settings (the input's content)" in log
    assert log.count("exists, kept") == 1 and changed[0] != other[0] and changed[1] == other[1]
