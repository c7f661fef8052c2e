"""Tests of scripts.data.template_mri: the noisy and noise-free template slices of the weights' second stage."""

import json

import nibabel as nib
import numpy as np
import pytest
from _workflow_data import demo_dir
from scripts.data import corpus
from scripts.data.folder import build_folder_datalist
from scripts.data.template_mri import build_template_mri_folder
from scripts.errors import UserInputError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("template") / "site"
    return out, build_template_mri_folder(out, demo_dir())


def test_the_demo_mri_training_slices_and_their_clean_template_counterparts(folder):
    out, written = folder
    datalist = json.loads((demo_dir() / "datalist.json").read_text())
    demo_names = sorted(i["label"].split("/")[-1] for i in datalist["training"] if i["task"] == "mri")
    clean = [p for p in written if p.name.startswith("mni_clean_")]
    assert sorted(p.name for p in written if not p.name.startswith("mni_clean_")) == demo_names
    assert len(clean) == sum(len(f) for f in corpus.MNI_POSITIONS.values())
    for path in clean:
        image = np.asarray(nib.load(path).dataobj)
        assert image.shape[2] == 1 and image.max() > 1000
        # noise-free: the template's background is exactly 0 (the corpus's noisy slices have a floor near 75)
        assert np.mean(image == 0) > 0.2
    noisy = [np.asarray(nib.load(out / "mri" / n).dataobj) for n in demo_names]
    assert max(float(np.mean(image == 0)) for image in noisy) < 0.01


def test_the_folder_data_set_reads_every_slice_as_one_axial_item(folder):
    out, written = folder
    items = build_folder_datalist(out, tasks=["mri"], split="all")
    assert len(items) == len(written)
    assert {i["task"] for i in items} == {"mri"} and all(i["degrade"] == "kspace" for i in items)


def test_a_folder_that_is_not_empty_is_refused_and_kept(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(UserInputError, match="not empty"):
        build_template_mri_folder(tmp_path, demo_dir())
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
