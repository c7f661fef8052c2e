"""Tests of scripts.data.dicom_series: slice headers and the pairing of two series."""

from __future__ import annotations

import numpy as np
import pytest
from _data_factories import write_dicom_slice
from scripts.data.dicom_series import DicomSliceHeader, pair_dicom_series, read_dicom_header
from scripts.data.slices import DataError


def test_read_dicom_header_position_on_slice_normal(tmp_path):
    # sagittal slice: normal along x, so the position is ImagePositionPatient[0]
    path = write_dicom_slice(tmp_path / "s.dcm", np.zeros((20, 20)), 5, 12.0, orientation=(0, 1, 0, 0, 0, -1))
    h = read_dicom_header(path)
    assert (h.instance, h.rows, h.columns) == (5, 20, 20)
    # normal = row x column direction = (0, 1, 0) x (0, 0, -1) = (-1, 0, 0): minus the x of ImagePositionPatient
    assert h.position == pytest.approx(100.0)


def test_read_dicom_header_rejects_small_and_non_dicom(tmp_path):
    with pytest.raises(DataError, match=r"small\.dcm: image of 8x8 px is smaller than 16"):
        read_dicom_header(write_dicom_slice(tmp_path / "small.dcm", np.zeros((8, 8)), 1, 0.0))
    text = tmp_path / "notes.IMA"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.IMA: not a readable DICOM"):
        read_dicom_header(text)


def _h(name, instance, position, size=32):
    return DicomSliceHeader(name, instance, position, size, size)


def test_pair_by_position_ignores_instance_numbers():
    hq = [_h("f2", 1, 2.0), _h("f1", 2, 1.0), _h("f3", 3, 3.0)]
    lq = [_h("q1", 9, 1.01), _h("q3", 7, 3.0), _h("q2", 8, 2.0)]
    assert [(a.path, b.path) for a, b in pair_dicom_series(hq, lq)] == [("f1", "q1"), ("f2", "q2"), ("f3", "q3")]


def test_pair_falls_back_to_instance_without_positions():
    hq = [_h("f1", 1, None), _h("f2", 2, None)]
    lq = [_h("q2", 2, None), _h("q1", 1, None)]
    assert [(a.path, b.path) for a, b in pair_dicom_series(hq, lq)] == [("f1", "q1"), ("f2", "q2")]


def test_pair_errors_name_files():
    hq = [_h("f1", 1, 1.0), _h("f2", 2, 2.0)]
    with pytest.raises(DataError, match="1 DICOM slice.*no partner.*f2"):
        pair_dicom_series(hq, [_h("q1", 1, 1.0)])
    with pytest.raises(DataError, match="f1 and f2: same slice position"):
        pair_dicom_series([_h("f1", 1, 1.0), _h("f2", 2, 1.0)], [_h("q1", 1, 1.0)], pair_by="position")
    with pytest.raises(DataError, match="f1: no InstanceNumber"):
        pair_dicom_series([_h("f1", None, 1.0)], [_h("q1", 1, 1.0)], pair_by="instance")
    with pytest.raises(DataError, match="LQ/HQ sizes differ"):
        pair_dicom_series([_h("f1", 1, 1.0)], [_h("q1", 1, 1.0, size=64)])
