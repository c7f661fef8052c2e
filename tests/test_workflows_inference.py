"""Folder inference pieces: inputs, modality, slice orientation, slice-wise inferer, the runner's file handling."""

import hashlib
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from _workflow_data import write_dicom_series, write_nifti
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, EnsureTyped, Invertd, LoadImaged
from pydicom.dataset import Dataset as DicomDataset
from scripts.transforms import IntensityWindowd
from scripts.workflows import (
    FolderInference,
    ResolveModalityd,
    SliceOrientationd,
    SliceWiseInferer,
    canonical_modality,
    find_inputs,
    folder_datalist,
    through_plane_axis,
)

AFFINE = np.array([[0.0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])  # axes A, L, S


def volume(shape, affine=AFFINE, **meta):
    return MetaTensor(torch.rand(1, *shape), affine=torch.as_tensor(affine), meta=meta)


def test_through_plane_axis():
    assert through_plane_axis(volume((20, 24, 5))) == 2  # thickest
    assert through_plane_axis(volume((20, 1, 5))) == 1  # singleton
    assert through_plane_axis(volume((20, 24, 5), dim_info=np.uint8(1 << 4))) == 0  # NIfTI slice_dim
    assert through_plane_axis(volume((20, 24, 5), affine=np.diag([1.0, 1.0, 1.0, 1.0]))) == 2  # isotropic: S-I
    sagittal = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    assert through_plane_axis(volume((8, 8, 8), affine=sagittal)) == 0


def test_slice_orientation_and_its_inverse():
    orient = SliceOrientationd("image")
    image = volume((20, 24, 5))
    out = orient({"image": image})["image"]
    assert orient.target_axcodes(image) == "PLS"  # axial slices as the training data: rows P, columns L
    assert torch.equal(out.as_tensor(), image.as_tensor().flip(1))  # rows A -> P; columns already L
    assert torch.equal(orient.inverse({"image": out})["image"].as_tensor(), image.as_tensor())
    assert SliceOrientationd("image", slice_axis=0).target_axcodes(image) == "ILA"  # coronal-like (A-P normal)
    flat = MetaTensor(torch.rand(1, 20, 24), affine=torch.eye(3))
    assert orient({"image": flat})["image"] is flat  # 2-D images pass through
    with pytest.raises(ValueError, match="slice_axis"):
        SliceOrientationd("image", slice_axis=3)


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


def test_modality_from_option_or_dicom_tag(tmp_path):
    write_dicom_series(tmp_path / "mr", np.zeros((16, 16, 2)), modality="MR", intercept=0)
    write_dicom_series(tmp_path / "us", np.zeros((16, 16, 2)), modality="US", intercept=0)
    write_nifti(tmp_path / "x.nii.gz", np.zeros((16, 16)), np.eye(4))
    load = LoadImaged("image", image_only=True, ensure_channel_first=True)
    assert ResolveModalityd("image")(load({"image": str(tmp_path / "mr")}))["task"] == "mri"
    assert ResolveModalityd("image", modality="PT")(load({"image": str(tmp_path / "mr")}))["task"] == "pet"
    with pytest.raises(ValueError, match="x.nii.gz: a NIfTI image does not say its modality; give it with --modality"):
        ResolveModalityd("image")(load({"image": str(tmp_path / "x.nii.gz")}))
    with pytest.raises(ValueError, match="'US' is not MR, CT or PT"):
        ResolveModalityd("image")(load({"image": str(tmp_path / "us")}))
    assert canonical_modality(" CT ") == "ct"
    with pytest.raises(ValueError, match="use one of mri, ct, pet"):
        ResolveModalityd("image", modality="xray")


def test_pet_dicom_in_bq_per_ml_becomes_suv(tmp_path):
    isotope = DicomDataset()
    isotope.RadionuclideTotalDose, isotope.RadionuclideHalfLife = 3.5e8, 6586.2
    isotope.RadiopharmaceuticalStartTime = "100000"
    pet = {
        "Units": "BQML", "DecayCorrection": "START", "PatientWeight": 70, "SeriesTime": "100000",
        "AcquisitionTime": "100000", "RadiopharmaceuticalInformationSequence": [isotope],
    }  # fmt: skip
    write_dicom_series(tmp_path / "pet", np.full((16, 16, 2), 10000), modality="PT", intercept=0, extra=pet)
    data = LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": str(tmp_path / "pet")})
    out = ResolveModalityd("image")(data)
    assert out["task"] == "pet"
    assert torch.allclose(out["image"], torch.full_like(out["image"], 2.0))  # 1e4 Bq/ml * 70 kg / 350 MBq


def test_find_inputs(tmp_path):
    write_nifti(tmp_path / "b.nii", np.zeros((16, 16)), np.eye(4))
    write_nifti(tmp_path / "sub" / "a.nii.gz", np.zeros((16, 16)), np.eye(4))
    write_dicom_series(tmp_path / "sub" / "series", np.zeros((16, 16, 2)))
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_inputs(tmp_path)]
    assert found == ["b.nii", "sub/a.nii.gz", "sub/series"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no NIfTI file"):
        find_inputs(tmp_path / "empty")


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_runner_restores_keeps_and_reports(tmp_path, caplog):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    write_nifti(inputs / "vol.nii.gz", rng.uniform(-1500, 3500, (20, 24, 5)), AFFINE)
    write_nifti(inputs / "flat.nii", rng.uniform(-1000, 1000, (20, 18)), AFFINE)
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti")
    before = digest(inputs)
    pre = Compose(
        [
            LoadImaged("image", image_only=True, ensure_channel_first=True),
            ResolveModalityd("image", modality="ct"),
            SliceOrientationd("image"),
            IntensityWindowd("image"),
            EnsureTyped("image", dtype=torch.float32),
        ]
    )
    post = Compose([IntensityWindowd("pred", inverse=True), Invertd("pred", transform=pre, orig_keys="image")])

    def runner(overwrite=False):
        dataset = Dataset(folder_datalist(inputs), transform=pre)
        return FolderInference(
            dataset, inputs, outputs, torch.nn.Identity(), SliceWiseInferer(), post, overwrite=overwrite
        )

    with caplog.at_level(logging.INFO):
        assert runner().run().failed == [str(inputs / "broken.nii.gz")]
    assert "broken.nii.gz: failed: ImageFileError" in caplog.text
    for name, shape in (("vol", (20, 24, 5)), ("flat", (20, 18))):
        source = nib.load(next(inputs.glob(f"{name}.nii*")))
        result = nib.load(outputs / f"{name}_restored.nii.gz")
        assert result.shape == shape and result.get_data_dtype() == np.float32
        assert np.allclose(result.affine, source.affine)
        assert np.allclose(result.get_fdata(), np.clip(source.get_fdata(), -1024, 3071), atol=1e-3)
        assert (outputs / f"{name}_restored.nii.gz").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert not (outputs / "broken_restored.nii.gz").exists()
    assert sorted(p.name for p in outputs.iterdir()) == ["flat_restored.nii.gz", "vol_restored.nii.gz"]  # no temp
    assert digest(inputs) == before

    # existing outputs are kept unless overwrite
    (outputs / "vol_restored.nii.gz").write_bytes(b"kept")
    (inputs / "broken.nii.gz").unlink()
    assert runner().run().failed == []
    assert (outputs / "vol_restored.nii.gz").read_bytes() == b"kept"
    assert runner(overwrite=True).run().failed == []
    assert nib.load(outputs / "vol_restored.nii.gz").shape == (20, 24, 5)
