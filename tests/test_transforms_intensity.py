"""Tests of scripts.transforms.intensity (per-modality windows, DICOM to HU)."""

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from scripts.transforms import CT_METRIC_WINDOW, MODALITY_WINDOWS, IntensityWindow, IntensityWindowd, dicom_to_hu


def test_windows_are_those_of_the_released_code():
    assert MODALITY_WINDOWS == {"ct": (-1024.0, 3071.0), "mri": (0.0, 4095.0), "pet": (0.0, 20.0)}
    assert CT_METRIC_WINDOW == (-160.0, 240.0)


@pytest.mark.parametrize("modality", ["ct", "mri", "pet"])
def test_forward_is_clip_then_minmax(modality):
    low, high = MODALITY_WINDOWS[modality]
    x = np.linspace(low - 0.5 * (high - low), high + 0.5 * (high - low), 101, dtype=np.float32)[None, None]
    expected = (np.clip(x.astype(np.float64), low, high) - low) / (high - low)
    out = IntensityWindow(modality)(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize("modality", ["ct", "mri", "pet"])
def test_inverse_maps_back_and_clips(modality):
    low, high = MODALITY_WINDOWS[modality]
    x = np.linspace(low, high, 50, dtype=np.float32)[None, None]
    back = IntensityWindow(modality, inverse=True)(IntensityWindow(modality)(x))
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5 * (high - low))
    out = IntensityWindow(modality, inverse=True)(np.array([[[-0.5, 0.0, 1.0, 1.5]]], dtype=np.float32))
    np.testing.assert_allclose(out[0, 0], [low, low, high, high])


def test_ct_numbers():
    out = IntensityWindow("ct")(torch.tensor([[[-2000.0, -1024.0, 0.0, 3071.0, 4000.0]]]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy()[0, 0], [0.0, 0.0, 1024 / 4095, 1.0, 1.0], atol=1e-7)


def test_case_insensitive_and_unknown_modality():
    np.testing.assert_array_equal(
        IntensityWindow("CT")(np.zeros((1, 2, 2))), IntensityWindow("ct")(np.zeros((1, 2, 2)))
    )
    with pytest.raises(ValueError, match=r"\['ct', 'mri', 'pet'\]"):
        IntensityWindow("xray")


def test_input_not_modified():
    x = np.array([[[5000.0, -3000.0]]], dtype=np.float32)
    IntensityWindow("ct")(x)
    np.testing.assert_array_equal(x, [[[5000.0, -3000.0]]])


def test_dict_reads_modality_per_item():
    t = IntensityWindowd(keys=["image", "label"])
    img = np.full((1, 2, 2), 10.0, dtype=np.float32)
    for task in ("ct", "mri", "pet"):
        d = t({"image": img, "label": img, "task": task})
        np.testing.assert_allclose(d["image"], IntensityWindow(task)(img))
        np.testing.assert_allclose(d["label"], IntensityWindow(task)(img))
        assert d["task"] == task
    # the same value means different things per modality
    assert t({"image": img, "label": img, "task": "pet"})["image"][0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="valid modalities"):
        t({"image": img, "task": "us"})
    with pytest.raises(KeyError, match="task"):
        t({"image": img})


def test_dict_fixed_modality_and_inverse():
    img = np.full((1, 2, 2), 0.5, dtype=np.float32)
    d = IntensityWindowd(keys="pred", modality="mri", inverse=True)({"pred": img, "task": "ct"})
    np.testing.assert_allclose(d["pred"], 2047.5)
    with pytest.raises(ValueError, match="valid modalities"):
        IntensityWindowd(keys="pred", modality="xray")


def _ct_dataset(stored: np.ndarray, slope=1.0, intercept=-1024.0, padding=None) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "CT"
    ds.set_pixel_data(stored.astype(np.int16), "MONOCHROME2", 16)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if padding is not None:
        ds.PixelPaddingValue = padding
    return ds


def test_dicom_to_hu_rescale():
    stored = np.array([[0, 1024], [1064, 4095]])
    hu = dicom_to_hu(_ct_dataset(stored, slope=1.0, intercept=-1024.0))
    assert hu.dtype == np.float32 and hu.shape == (2, 2)
    np.testing.assert_array_equal(hu, [[-1024, 0], [40, 3071]])
    hu = dicom_to_hu(_ct_dataset(np.array([[10, 20]]), slope=2.0, intercept=-30.0))
    np.testing.assert_array_equal(hu, [[-10, 10]])


def test_dicom_to_hu_padding_to_air():
    # -2000 stored with intercept 0: the usual outside-FOV fill, no padding tag
    hu = dicom_to_hu(_ct_dataset(np.array([[-2000, 40], [-3024, -1100]]), intercept=0.0))
    np.testing.assert_array_equal(hu, [[-1024, 40], [-1024, -1024]])
    # a PixelPaddingValue that would otherwise map to a plausible HU is set to air too
    hu = dicom_to_hu(_ct_dataset(np.array([[-1, 1064]]), intercept=-1024.0, padding=-1))
    np.testing.assert_array_equal(hu, [[-1024, 40]])


def test_dicom_to_hu_missing_tag():
    ds = _ct_dataset(np.zeros((2, 2)))
    del ds.RescaleIntercept
    with pytest.raises(ValueError, match="RescaleIntercept"):
        dicom_to_hu(ds)
