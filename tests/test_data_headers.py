"""What a header claims is checked before the pixels are read, by the inference loader and the training reader alike:
the size against max_input_voxels, complex and colour values, DICOM rescale values."""

import math

import numpy as np
import pytest
from _hostile_inputs import claim_nifti, complex_nifti, rgb_nifti, set_tags
from _inference_cases import ct_values, write_series
from scripts.data import DataError
from scripts.data.loading import read_slice
from scripts.errors import UserInputError
from scripts.workflows import LoadImageInputd, folder_datalist


def load_input(folder, max_voxels=None):
    """The inference loader of configs/inference.json on the one input of ``folder``."""
    (item,) = folder_datalist(folder)
    limit = {} if max_voxels is None else {"max_voxels": max_voxels}
    return LoadImageInputd("image", ensure_channel_first=True, **limit)(item)


def test_the_default_limit_passes_the_largest_realistic_volumes():
    from scripts.data.headers import check_claimed_size

    check_claimed_size("ct.nii", (1024, 1024, 2048), np.int16)  # ultra-high-resolution whole-body CT
    check_claimed_size("mr.nii", (512, 512, 512), np.float32)
    with pytest.raises(DataError, match=r"ct.nii: the header claims an image of 1024x1024x2049 int16"):
        check_claimed_size("ct.nii", (1024, 1024, 2049), np.int16)


def test_a_tiny_nifti_claiming_a_huge_image_is_refused_by_inference_and_training(tmp_path):
    path = claim_nifti(tmp_path / "in" / "huge.nii.gz", (8192, 8192, 40))
    assert path.stat().st_size < 200
    message = r"huge.nii.gz: the header claims an image of 8192x8192x40 float32 .* more than max_input_voxels"
    with pytest.raises(UserInputError, match=message):
        load_input(tmp_path / "in")
    with pytest.raises(DataError, match=message):
        read_slice(path, "mri", 0, 2)  # training reads one slice, but the claim is refused all the same
    small = claim_nifti(tmp_path / "small" / "small.nii.gz", (64, 64, 8))
    with pytest.raises(UserInputError, match=r"small.nii.gz: the header claims .* max_input_voxels \(1000\)"):
        load_input(tmp_path / "small", max_voxels=1000)
    with pytest.raises(DataError, match=r"max_input_voxels \(1000\)"):
        read_slice(small, "mri", 0, 2, max_voxels=1000)


def test_a_dicom_series_claiming_a_huge_image_is_refused_from_its_headers(tmp_path):
    files = write_series(tmp_path / "ct", ct_values((20, 24, 3)), "CT")
    set_tags(files, Rows=40000, Columns=40000)  # 1.6e9 pixels per file, 3 files
    with pytest.raises(UserInputError, match=r"im00\d.dcm: the header claims an image of 40000x40000x3 uint16"):
        load_input(tmp_path / "ct")
    with pytest.raises(DataError, match=r"im000.dcm: the header claims an image of 40000x40000x1 uint16"):
        read_slice(files[0], "ct", max_voxels=10**9)


def test_complex_and_colour_images_are_refused(tmp_path):
    for maker, message in (
        (complex_nifti, r"c.nii.gz: complex values \(complex64\); reading them would drop the imaginary part"),
        (rgb_nifti, r"c.nii.gz: R/G/B colour values \(not one scalar per voxel\)"),
    ):
        path = maker(tmp_path / maker.__name__ / "c.nii.gz")
        with pytest.raises(UserInputError, match=message):
            load_input(path.parent)
        with pytest.raises(DataError, match=message):
            read_slice(path, "ct", 0, 2)
    files = write_series(tmp_path / "rgb", ct_values(), "MR", intercept=0)
    set_tags(files, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    with pytest.raises(UserInputError, match=r"im000.dcm: DICOM with 3 sample\(s\) per pixel, .*RGB"):
        load_input(tmp_path / "rgb")


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"RescaleSlope": 0}, r"im000.dcm: DICOM RescaleSlope is 0, which makes every pixel the intercept"),
        ({"RescaleIntercept": "NaN"}, r"im000.dcm: DICOM RescaleIntercept is (NaN|nan), not a finite number"),
        ({"RescaleSlope": "Inf"}, r"im000.dcm: DICOM RescaleSlope is (Inf|inf), not a finite number"),
    ],
)
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_a_rescale_slope_of_0_or_non_finite_rescale_is_refused(tmp_path, tags, message, modality):
    files = write_series(tmp_path / "s", ct_values(), modality, intercept=-1024.0)
    set_tags(files, **tags)
    with pytest.raises(UserInputError, match=message):
        load_input(tmp_path / "s")
    with pytest.raises(DataError, match=message):
        read_slice(files[0], "ct" if modality == "CT" else "mri")


def test_a_valid_rescale_still_reads(tmp_path):
    files = write_series(tmp_path / "s", ct_values(), "CT")
    set_tags(files, RescaleSlope=2)
    image = load_input(tmp_path / "s")["image"]
    assert math.isfinite(float(image.max())) and float(image.max()) > float(ct_values().max())  # slope applied
