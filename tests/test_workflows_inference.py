"""Folder inference: the slice-wise inferer and the runner's handling of inputs, outputs and failures."""

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _inference_cases import ct_values, nifti_with, stale_temp, write_series
from _workflow_data import BUNDLE, write_nifti
from monai.bundle import ConfigParser
from monai.data import Dataset, MetaTensor
from scripts.errors import UserInputError
from scripts.workflows import FolderInference, SliceWiseInferer, folder_datalist, output_name, write_restoration
from scripts.workflows.dicom import DicomSeries

AFFINE = np.array([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])  # axes A, L, S


def test_slice_wise_inferer_batches_whole_slices_and_tiles_large_ones():
    seen = []

    def network(x):
        seen.append(tuple(x.shape))
        return x * 2 + x.mean(dim=(1, 2, 3), keepdim=True)  # depends on the whole slice: tiles would change it

    vol = torch.rand(1, 1, 20, 18, 5)
    out = SliceWiseInferer(batch_size=2)(vol, network)
    assert seen == [(2, 1, 20, 18), (2, 1, 20, 18), (1, 1, 20, 18)]
    expected = torch.stack([network(vol[..., k]) for k in range(5)], dim=-1)
    assert torch.allclose(out, expected, atol=1e-6)
    image = torch.rand(1, 1, 40, 40)
    assert torch.allclose(SliceWiseInferer()(image, network), network(image))
    seen.clear()
    SliceWiseInferer(max_slice_pixels=999, tile_size=(24, 24), batch_size=8)(image, network)
    assert all(shape[2:] == (24, 24) for shape in seen)


def test_slice_wise_inferer_shows_progress_per_slice(capsys):
    def slow(x):
        time.sleep(0.15)  # longer than the bar's refresh interval, so that each batch is shown
        return x * 2

    vol = torch.rand(1, 1, 20, 18, 5)
    out = SliceWiseInferer(batch_size=2, progress=True)(vol, slow)
    assert torch.allclose(out, vol * 2)
    bar = capsys.readouterr().err
    assert "2/5 [" in bar and "4/5 [" in bar and "slice/s" in bar and "restoring" in bar  # counted in slices
    SliceWiseInferer(batch_size=2)(vol, lambda x: x * 2)
    assert capsys.readouterr().err == ""  # progress=False: nothing shown


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


class PlainIdentity(torch.nn.Module):
    """The identity, which records whether it was given plain tensors (the metadata stays with the item)."""

    def __init__(self, fill: float | None = None) -> None:
        super().__init__()
        self.fill, self.types = fill, set()

    def forward(self, x):
        self.types.add(type(x))
        return x if self.fill is None else torch.full_like(x, self.fill)


def runner(inputs, outputs, modality="ct", network=None, **kwargs):
    """FolderInference with the inference config's preprocessing and postprocessing."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"], parser["modality"] = str(BUNDLE), modality
    dataset = Dataset(folder_datalist(inputs, exclude=[outputs]), transform=parser.get_parsed_content("preprocessing"))
    post = parser.get_parsed_content("postprocessing")
    kwargs = {"output_format": "nifti", **kwargs}
    return FolderInference(dataset, inputs, outputs, network or PlainIdentity(), SliceWiseInferer(), post, **kwargs)


def test_runner_restores_reports_and_never_touches_inputs(tmp_path, caplog):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    write_nifti(inputs / "vol.nii.gz", rng.uniform(-1500, 3500, (20, 24, 5)), AFFINE)
    write_nifti(inputs / "flat.nii", rng.uniform(-1000, 1000, (20, 18)), AFFINE)
    write_nifti(inputs / "one.nii.gz", rng.uniform(-1000, 1000, (20, 18, 1)), AFFINE)
    nifti_with(inputs / "nan.nii.gz", nan=7)
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti")
    before = digest(inputs)
    network = PlainIdentity()
    with caplog.at_level(logging.INFO):
        state = runner(inputs, outputs, network=network).run()
    assert state.failed == [str(inputs / "broken.nii.gz"), str(inputs / "nan.nii.gz")]
    assert network.types == {torch.Tensor}  # plain tensors, not MetaTensors
    assert "broken.nii.gz: cannot be read as an image (ImageFileError" in caplog.text
    assert "nan.nii.gz: 7 of 1440 values are not finite" in caplog.text
    for name, shape in (("vol", (20, 24, 5)), ("flat", (20, 18)), ("one", (20, 18, 1))):
        source = nib.load(next(inputs.glob(f"{name}.nii*")))
        result = nib.load(outputs / f"{name}_restored.nii.gz")
        assert result.shape == shape and result.get_data_dtype() == np.float32  # (H, W, 1) stays (H, W, 1)
        assert np.allclose(result.affine, source.affine)
        assert np.allclose(result.get_fdata(), np.clip(source.get_fdata(), -1024, 3071), atol=1e-3)
        assert (outputs / f"{name}_restored.nii.gz").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in outputs.iterdir()) == [f"{n}_restored.nii.gz" for n in ("flat", "one", "vol")]
    assert digest(inputs) == before
    with pytest.raises(UserInputError, match=r"^2 of 5 inputs failed: .*broken.nii.gz: cannot be read.*; .*nan"):
        runner(inputs, outputs).run(raise_on_failure=True)


def test_existing_outputs_kept_written_again_or_left_alone(tmp_path, caplog):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c"):
        nifti_with(inputs / f"{name}.nii.gz")
    assert runner(inputs, outputs).run().failed == []
    kept = (outputs / "a_restored.nii.gz").read_bytes()
    broken = (outputs / "b_restored.nii.gz").read_bytes()
    (outputs / "b_restored.nii.gz").write_bytes(broken[: len(broken) // 2])  # the bundle's, cut short
    (outputs / "c_restored.nii.gz").write_bytes(b"the user's notes")  # not the bundle's
    stale = stale_temp(outputs, "a_restored")
    (outputs / ".a_restored.notes.nii.gz").write_bytes(b"hidden, the user's")
    with caplog.at_level(logging.INFO):
        state = runner(inputs, outputs).run()
    assert state.failed == [str(inputs / "c.nii.gz")]
    assert "c_restored.nii.gz: exists and was not written by this bundle, so it is left alone" in caplog.text
    assert (outputs / "c_restored.nii.gz").read_bytes() == b"the user's notes"
    assert (outputs / "a_restored.nii.gz").read_bytes() == kept
    assert nib.load(outputs / "b_restored.nii.gz").get_fdata().shape == (24, 20, 3)  # written again, whole
    assert not stale.exists() and (outputs / ".a_restored.notes.nii.gz").exists()
    assert runner(inputs, outputs, overwrite=True).run().failed == []
    assert nib.load(outputs / "c_restored.nii.gz").shape == (24, 20, 3)


def test_inputs_with_one_output_name_both_fail(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    nifti_with(inputs / "a.nii")
    nifti_with(inputs / "a.nii.gz")
    state = runner(inputs, outputs).run()
    assert state.failed == [str(inputs / "a.nii"), str(inputs / "a.nii.gz")]
    assert "a.nii: its output" in state.errors[str(inputs / "a.nii")] and not outputs.exists()


def test_a_nan_result_is_never_written(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    nifti_with(inputs / "a.nii.gz")
    state = runner(inputs, outputs, network=PlainIdentity(fill=float("nan"))).run()
    assert "a.nii.gz: the restoration holds 1440 non-finite values" in state.errors[str(inputs / "a.nii.gz")]
    assert not list(outputs.rglob("*.nii.gz"))


def test_each_series_of_a_folder_restored_with_its_own_modality(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    ct = ct_values()  # stored 0..2500: -1024..1476 HU; read as MRI, the negative values would be clipped to 0
    mr = np.random.default_rng(3).integers(3500, 4000, (20, 24, 3))  # as CT, clipped to 3071
    write_series(inputs / "study", ct, "CT", prefix="a", series_number=2)
    write_series(inputs / "study", mr, "MR", prefix="b", series_number=3, intercept=0)
    assert runner(inputs, outputs, modality=None).run().failed == []
    restored_ct = nib.load(outputs / "study_series2_restored.nii.gz").get_fdata()
    restored_mr = nib.load(outputs / "study_series3_restored.nii.gz").get_fdata()
    assert np.allclose(restored_ct[..., 0], ct[..., 0].T - 1024.0, atol=0.05)
    assert np.allclose(restored_mr[..., 0], mr[..., 0].T, atol=0.1)


def inside(path, folder) -> bool:
    return folder.resolve() in path.resolve().parents


@pytest.mark.parametrize(
    "hostile", ["../../x", "..", "/etc/evil", "a\\..\\b", "n\x00l", "\x1b[2J", "9" * 300, "", ".hidden"]
)
def test_output_names_never_leave_the_output_folder(tmp_path, caplog, hostile):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    series = DicomSeries(inputs / "study", (inputs / "study" / "a.dcm",), "1.2.3", "CT", hostile)
    with caplog.at_level(logging.WARNING):
        names = [
            output_name(series, inputs),
            output_name(inputs / "sub" / ".." / ".." / "x.nii.gz", inputs),  # a data list's item
            output_name(tmp_path / "elsewhere" / "y.nii.gz", inputs),  # outside the input folder
            output_name(inputs / ("x" * 250 + ".nii.gz"), inputs),  # a long name within NAME_MAX, too long with postfix
            output_name(inputs / f"v{hostile.replace('/', '')}.nii.gz", inputs),
        ]
    for name in names:
        assert not name.is_absolute() and ".." not in name.parts and inside(outputs / name, outputs), name
        assert all(len(os.fsencode(part)) <= 255 and part.isprintable() for part in name.parts), name
    if hostile:
        assert "a.dcm: series label" in caplog.text  # the file the label came from
    with pytest.raises(UserInputError, match="output_postfix"):
        output_name(inputs / "x.nii.gz", inputs, postfix="../../x")


def test_an_output_resolving_outside_the_output_folder_is_not_written(tmp_path):
    inputs, outputs, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    nifti_with(inputs / "sub" / "a.nii.gz")
    elsewhere.mkdir()
    outputs.mkdir()
    (outputs / "sub").symlink_to(elsewhere)  # a link out of the output folder
    state = runner(inputs, outputs).run()
    assert "outside the output folder" in state.errors[str(inputs / "sub" / "a.nii.gz")]
    assert list(elsewhere.iterdir()) == []


def test_an_unwritable_output_folder_is_refused_before_any_inference(tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b"):
        nifti_with(inputs / f"{name}.nii.gz")
    mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # as a read-only folder (chmod does not stop root) behaves
        if dir is not None and (Path(dir) == outputs or outputs in Path(dir).parents or Path(dir) == tmp_path):
            raise PermissionError(13, "Permission denied", str(dir))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    network = PlainIdentity()
    with pytest.raises(UserInputError, match=rf"^{outputs}.*cannot be written \(Permission denied\)"):
        runner(inputs, outputs, network=network).run(raise_on_failure=True)
    assert network.types == set()  # refused before the first inference
    assert not outputs.exists()


def test_a_rerun_keeps_a_current_output_and_redoes_a_stale_one(tmp_path, caplog):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    nifti_with(inputs / "a.nii.gz")
    write_series(inputs / "study", ct_values(), "CT", series_number=2)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights one")
    targets = {"a": outputs / "a_restored.nii.gz", "study": outputs / "study_restored"}

    def run(settings, fill=None):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            network = PlainIdentity(fill)
            runner(
                inputs, outputs, output_format="auto", weights_path=weights, settings=settings, network=network
            ).run()
        return {name: "exists, kept" in caplog.text.split(str(path))[-1][:40] for name, path in targets.items()}

    assert run({"modality": "ct"}) == {"a": False, "study": False}
    assert run({"modality": "CT"}) == {"a": True, "study": True}  # current (any spelling of the modality): kept
    identity = nib.load(targets["a"]).get_fdata()
    assert run({"modality": "mri"}) == {"a": False, "study": True}  # the series' header says CT: it stays CT
    assert 'a_restored.nii.gz: made from other inputs or settings (modality ("ct" -> "mri"))' in caplog.text
    weights.write_bytes(b"weights two")
    assert run({"modality": "mri"}, fill=0.25) == {"a": False, "study": False}
    assert caplog.text.count("made from other inputs or settings (the weights); writing it again") == 2
    assert not np.allclose(nib.load(targets["a"]).get_fdata(), identity)  # the new weights' output is on disk
    nifti_with(inputs / "a.nii.gz", seed=5)  # the input's content changes
    assert run({"modality": "mri"}, fill=0.25) == {"a": False, "study": True}
    assert "the input's content" in caplog.text and caplog.text.count("writing it again") == 1
    write_restoration(MetaTensor(torch.zeros(1, 24, 20, 3)), targets["a"])  # the bundle's, without a record
    assert run({"modality": "mri"}, fill=0.25) == {"a": False, "study": True}
    assert "it has no record of what made it" in caplog.text
