"""The inputs of a folder run: finding them, refusing what cannot be restored faithfully, and their modality."""

import logging

import numpy as np
import pytest
import torch
from _inference_cases import AFFINE, ct_values, nifti_with, write_series
from _workflow_data import pet_attributes, write_dicom_series, write_nifti
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from scripts.data import DataError
from scripts.data.loading import read_dicom_slice
from scripts.errors import UserInputError
from scripts.ownership import mark_folder
from scripts.workflows import (
    CheckInputd,
    DicomSeries,
    LoadImageInputd,
    ResolveModalityd,
    canonical_modality,
    find_inputs,
    folder_datalist,
    write_restoration,
)

load = LoadImageInputd("image", image_only=True, ensure_channel_first=True)


def names(inputs, root):
    return [(i.path if isinstance(i, DicomSeries) else i).relative_to(root).as_posix() for i in inputs]


def test_find_inputs(tmp_path):
    write_nifti(tmp_path / "b.nii", np.zeros((16, 16)), np.eye(4))
    write_nifti(tmp_path / "sub" / "a.nii.gz", np.zeros((16, 16)), np.eye(4))
    write_dicom_series(tmp_path / "sub" / "series", np.zeros((16, 16, 2)))
    (tmp_path / "notes.txt").write_text("not an image")
    found = find_inputs(tmp_path)
    assert names(found, tmp_path) == ["b.nii", "sub/a.nii.gz", "sub/series"]
    assert folder_datalist(tmp_path)[2]["image"] == [str(f) for f in found[2].files]  # a series: its files
    assert find_inputs(tmp_path / "b.nii") == [tmp_path / "b.nii"]
    (single,) = find_inputs(found[2].files[0])  # one DICOM file
    assert single.path == found[2].files[0] and single.files == found[2].files[:1]
    with pytest.raises(UserInputError, match="missing: the input folder .* does not exist"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="empty: holds no NIfTI file"):
        find_inputs(tmp_path / "empty")
    with pytest.raises(UserInputError, match="notes.txt: neither a NIfTI file"):
        find_inputs(tmp_path / "notes.txt")


def test_find_inputs_leaves_out_the_output_folder_and_the_bundles_outputs(tmp_path):
    nifti_with(tmp_path / "scan.nii.gz")
    nifti_with(tmp_path / "restored" / "other.nii.gz")  # inside the output folder: not an input
    pred = MetaTensor(torch.zeros(1, 4, 4, 2), affine=torch.eye(4))
    write_restoration(pred, tmp_path / "scan_restored.nii.gz")  # an output written beside its input
    write_nifti(tmp_path / "mine_restored.nii.gz", np.zeros((4, 4)), np.eye(4))  # the user's own: an input
    assert names(find_inputs(tmp_path, exclude=[tmp_path / "restored"]), tmp_path) == [
        "mine_restored.nii.gz",
        "scan.nii.gz",
    ]
    assert "restored/other.nii.gz" in names(find_inputs(tmp_path), tmp_path)
    assert len(find_inputs(tmp_path, exclude=[tmp_path])) == 3  # the output folder is the input folder
    write_series(tmp_path / "ct_restored", ct_values(), "CT")  # a DICOM output series, marked as the bundle's
    mark_folder(tmp_path / "ct_restored", "dicom-output")
    assert "ct_restored" not in names(find_inputs(tmp_path), tmp_path)
    assert len(find_inputs(tmp_path / "ct_restored")) == 1  # given as the input folder itself, it is an input


def test_find_inputs_splits_a_folder_of_two_series(tmp_path):
    write_series(tmp_path / "study", ct_values(), "CT", prefix="a", series_number=4)
    write_series(tmp_path / "study", ct_values(), "MR", prefix="b", series_number=9, intercept=0)
    found = find_inputs(tmp_path)
    assert [(s.path.name, s.label, s.modality) for s in found] == [
        ("study", "series4", "CT"),
        ("study", "series9", "MR"),
    ]


def test_check_input_refuses_several_channels_and_non_finite_values(tmp_path):
    for name, kwargs, message in (
        ("nan.nii.gz", {"nan": 100}, "nan.nii.gz: 100 of 1440 values are not finite"),
        ("allnan.nii.gz", {"nan": -1}, "allnan.nii.gz: 1440 of 1440 values are not finite"),
        ("inf.nii.gz", {"inf": 3}, "inf.nii.gz: 3 of 1440 values are not finite"),
    ):
        data = load({"image": str(nifti_with(tmp_path / name, **kwargs))})
        with pytest.raises(UserInputError, match=message):
            CheckInputd("image")(data)
    write_nifti(tmp_path / "fmri.nii.gz", np.zeros((16, 16, 4, 3)), AFFINE)
    with pytest.raises(
        UserInputError, match=r"fmri.nii.gz: 3 volumes or channels of shape \(16, 16, 4\).*one 2-D or 3-D image"
    ):
        CheckInputd("image")(load({"image": str(tmp_path / "fmri.nii.gz")}))
    write_nifti(tmp_path / "flat.nii.gz", np.ones((16, 12, 1)), AFFINE)
    data = load({"image": str(tmp_path / "flat.nii.gz")})
    assert CheckInputd("image")(data)["image"] is data["image"]  # a (H, W, 1) image passes, unchanged


def test_modality_from_the_dicom_header_the_option_or_neither(tmp_path, caplog):
    write_dicom_series(tmp_path / "mr", np.zeros((16, 16, 2)), modality="MR", intercept=0)
    write_dicom_series(tmp_path / "us", np.zeros((16, 16, 2)), modality="US", intercept=0)
    write_nifti(tmp_path / "x.nii.gz", np.zeros((16, 16)), np.eye(4))

    def task(source, modality=None):
        (item,) = folder_datalist(tmp_path / source)
        return ResolveModalityd("image", modality=modality)(load(item))["task"]

    assert task("mr") == "mri"
    with caplog.at_level(logging.WARNING):
        assert task("mr", "PT") == "mri"  # the header wins over a contradicting option, with a warning
    assert "im000.dcm: DICOM Modality MR contradicts --modality pet; restored as mri" in caplog.text
    assert task("us", "ct") == "ct"  # the option gives the task of a DICOM of another modality
    assert task("x.nii.gz", "mr") == "mri"
    with pytest.raises(UserInputError, match="x.nii.gz: a NIfTI image does not say its modality; give it with"):
        task("x.nii.gz")
    with pytest.raises(UserInputError, match="'US' is not MR, CT or PT"):
        task("us")
    assert canonical_modality(" CT ") == "ct"
    with pytest.raises(UserInputError, match="use one of mri, ct, pet"):
        ResolveModalityd("image", modality="xray")


def test_an_mri_stored_as_0_to_1_is_refused_unless_its_scale_is_given(tmp_path, caplog):
    write_nifti(tmp_path / "unit.nii.gz", np.random.default_rng(0).uniform(0, 1, (16, 16)), np.eye(4))
    write_nifti(tmp_path / "scanner.nii.gz", np.random.default_rng(0).uniform(0, 3000, (16, 16)), np.eye(4))
    items = {str(i["image"]).rsplit("/", 1)[-1]: i for i in folder_datalist(tmp_path)}
    with pytest.raises(
        UserInputError, match=r"unit.nii.gz: MRI values reach only 0.99\d, below 41: it looks normalised"
    ):
        ResolveModalityd("image", modality="mri")(load(items["unit.nii.gz"]))
    with pytest.raises(UserInputError, match=r"give --mri_scale 30\d\d \(values are multiplied by it before restoring"):
        ResolveModalityd("image", modality="mri")(load(items["unit.nii.gz"]))
    ResolveModalityd("image", modality="mri")(load(items["scanner.nii.gz"]))  # scanner units pass
    for modality in ("pet", "ct"):  # CT and PET are not concerned
        ResolveModalityd("image", modality=modality)(load(items["unit.nii.gz"]))
    with pytest.raises(UserInputError, match="mri_scale must be a positive number"):
        ResolveModalityd("image", modality="mri", mri_scale=0)


def test_a_stated_mri_scale_is_applied_before_the_network_and_undone_after(tmp_path):
    values = np.random.default_rng(0).uniform(0, 1, (16, 16))
    write_nifti(tmp_path / "unit.nii.gz", values, np.eye(4))
    (item,) = folder_datalist(tmp_path)
    resolve = ResolveModalityd("image", modality="mri", mri_scale=3000)
    data = resolve(load(item))
    assert np.allclose(data["image"][0].numpy(), values * 3000, rtol=1e-5)  # what the window sees
    pred = data["image"].clone()  # an identity network's restoration, with the image's metadata
    data["pred"] = pred
    inverted = Invertd("pred", transform=Compose([resolve]), orig_keys="image")(data)
    assert np.allclose(inverted["pred"][0].numpy(), values, rtol=1e-5)  # back in the input's units
    same = ResolveModalityd("image", modality="mri", mri_scale=1)(load(item))  # stated: these are its units
    assert np.allclose(same["image"][0].numpy(), values, rtol=1e-6)


def test_the_modality_is_that_of_the_series_whose_pixels_are_restored(tmp_path):
    write_series(tmp_path / "study", ct_values(), "CT", prefix="a")  # the folder's first file is CT
    write_series(tmp_path / "study", ct_values(seed=1), "MR", prefix="b", intercept=0)
    tasks = [ResolveModalityd("image")(load(item))["task"] for item in folder_datalist(tmp_path)]
    assert tasks == ["ct", "mri"]


def test_ct_without_rescale_tags_is_refused_by_inference_and_training_alike(tmp_path):
    files = write_series(tmp_path / "ct", ct_values(), "CT", intercept=None)
    (item,) = folder_datalist(tmp_path)
    message = r"im000.dcm: CT DICOM without RescaleSlope and RescaleIntercept, so its Hounsfield units are unknown"
    with pytest.raises(UserInputError, match=message):
        ResolveModalityd("image")(load(item))
    with pytest.raises(DataError, match=message):
        read_dicom_slice(files[0], "ct")
    write_series(tmp_path / "mr", ct_values(), "MR", intercept=None)  # other modalities: as stored
    (item,) = folder_datalist(tmp_path / "mr")
    assert ResolveModalityd("image")(load(item))["task"] == "mri"


def test_pet_dicom_in_bq_per_ml_becomes_suv(tmp_path):
    pet = pet_attributes()
    write_dicom_series(tmp_path / "pet", np.full((16, 16, 2), 10000), modality="PT", intercept=0, extra=pet)
    (item,) = folder_datalist(tmp_path)
    out = ResolveModalityd("image")(load(item))
    assert out["task"] == "pet"
    assert torch.allclose(out["image"], torch.full_like(out["image"], 2.0))  # 1e4 Bq/ml * 70 kg / 350 MBq


def test_linked_folders_are_searched_once_and_loops_are_named(tmp_path, caplog):
    inputs, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    write_nifti(inputs / "a" / "a.nii.gz", np.zeros((16, 16)), np.eye(4))
    write_nifti(elsewhere / "b.nii.gz", np.zeros((16, 16)), np.eye(4))
    write_dicom_series(elsewhere / "series", np.zeros((16, 16, 2)))
    (inputs / "linked").symlink_to(elsewhere, target_is_directory=True)  # data kept on another disk
    (inputs / "a" / "loop").symlink_to(inputs, target_is_directory=True)  # back to the top: a loop
    (inputs / "again").symlink_to(inputs / "a", target_is_directory=True)  # a folder found under its own name
    with caplog.at_level(logging.WARNING):
        found = find_inputs(inputs)
    assert names(found, inputs) == ["a/a.nii.gz", "linked/b.nii.gz", "linked/series"]
    for link in ("a/loop", "again"):
        assert f"{inputs / link}: a link to " in caplog.text and "skipped" in caplog.text
