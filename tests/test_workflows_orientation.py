"""Slice orientation of 3-D inputs: the through-plane axis from the header, and the invertible reorientation."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scripts.workflows import SliceOrientationd, through_plane_axis

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
