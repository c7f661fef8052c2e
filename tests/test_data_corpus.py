"""Tests of scripts.data.corpus: the real-image demo corpus (demo set version 3), split by source image."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import load_decathlon_datalist
from scripts.data import LoadSlicePaird, build_datalist
from scripts.data import corpus as corpus_module
from scripts.data.corpus import SOURCES, source_path
from scripts.data.demo import CORPUS_VERSION, build_demo_set
from scripts.data.slices import SPLITS, TASKS
from scripts.ownership import folder_kind
from scripts.transforms import KSpaceCrop

RESERVED = "explicit_VR-UN.dcm"  # kept for checks outside the project: never read
KEYS = {"training": "train", "validation": "val", "test": "test"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_demo_set(tmp_path_factory.mktemp("corpus") / "corpus", version=CORPUS_VERSION)


def test_sources_table_one_split_per_source_and_no_reserved_file():
    subjects = [s.subject for s in SOURCES]
    assert len(subjects) == len(set(subjects))
    for source in SOURCES:
        assert source.split in SPLITS and set(source.tasks) <= set(TASKS) and source.licence
        assert RESERVED not in source.file and source.package != "dipy"
    for task in TASKS:  # every task has a source in every split
        assert {s.split for s in SOURCES if task in s.tasks} == set(SPLITS), task


def test_full_corpus_splits_never_share_a_source_and_slices_are_whole(corpus):
    raw = json.loads((corpus / "datalist.json").read_text())
    assert raw["build"] == {"version": CORPUS_VERSION, "limit": None} and folder_kind(corpus) == "demo-set"
    split_of = {s.subject: s.split for s in SOURCES}
    subjects = defaultdict(set)
    counts = defaultdict(int)
    for key, split in KEYS.items():
        for item in raw[key]:
            assert split_of[item["subject"]] == split, item
            subjects[split].add(item["subject"])
            counts[item["task"], split] += 1
            assert len(item["spacing"]) == 2 and item["body_diameter_cm"] >= 0.0
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"])
    assert not subjects["val"] & subjects["test"]
    assert all(counts[task, split] > 0 for task in TASKS for split in SPLITS), dict(counts)
    assert counts["mri", "train"] >= 18 and counts["pet", "train"] >= 18  # MNI152: 3 planes x 6 positions
    # whole DICOM slices at their native size (no crops)
    load = LoadSlicePaird()
    for source in SOURCES:
        if source.package in ("pydicom", "pydicom-data") and "pet" not in source.tasks:
            header = pydicom.dcmread(source_path(source), stop_before_pixels=True)
            key = next(k for k, v in KEYS.items() if v == source.split)
            items = [i for i in raw[key] if i["subject"] == source.subject and i["task"] != "pet"]
            assert len(items) == 1
            out = load({k: (corpus / v if k in ("image", "label") else v) for k, v in items[0].items()})
            assert tuple(out["label"].shape[1:]) == (header.Rows, header.Columns), source.subject


def test_full_corpus_pairs_follow_the_papers_recipes(corpus):
    load = LoadSlicePaird()
    for item in load_decathlon_datalist(corpus / "datalist.json", data_list_key="test", base_dir=corpus):
        out = load(item)
        lq, hq = out["image"], out["label"]
        assert lq.shape == hq.shape and torch.isfinite(lq).all() and not torch.equal(lq, hq)
        if item["task"] == "mri":
            np.testing.assert_allclose(lq, KSpaceCrop(0.25)(hq), atol=1e-2 * float(hq.max()))
        elif item["task"] == "ct":
            noise = (lq - hq)[0][(hq[0] > -50) & (hq[0] < 100)]  # soft tissue / brain
            assert 3.0 < float(noise.std()) < 30.0
        else:  # DRF 12: noisier, same mean activity, no negative activity
            assert float(lq.min()) >= 0 and float((lq - hq).std()) > 0.1
            assert float(lq.mean()) == pytest.approx(float(hq.mean()), rel=0.1)


def test_template_slices_carry_the_noise_of_an_acquisition_at_drawn_levels(corpus):
    """The MNI152 template has no noise; each of its MRI slices gets Rician noise of a std drawn from 0 to
    MNI_NOISE_STD: outside the brain (where the template is 0) a Rician magnitude of zero signal has mean
    std * sqrt(pi / 2). The draws span the range, so the weights see clean and noisy backgrounds."""
    load = LoadSlicePaird()
    items = load_decathlon_datalist(corpus / "datalist.json", data_list_key="training", base_dir=corpus)
    template = [i for i in items if i["subject"] == "mni152" and i["task"] == "mri"]
    positions = [(p, f) for p, fractions in corpus_module.MNI_POSITIONS.items() for f in fractions]
    assert len(template) == len(positions)
    stds = [corpus_module.template_noise_std(*position) for position in positions]
    assert min(stds) < 0.1 * corpus_module.MNI_NOISE_STD and max(stds) > 0.9 * corpus_module.MNI_NOISE_STD
    assert corpus_module.template_noise_std(*positions[0], drawn=False) == corpus_module.MNI_NOISE_STD  # version 2
    for item, std in list(zip(template, stds, strict=True))[:4]:
        corner = load(item)["label"][0].numpy()[:8, :8]
        assert corner.mean() == pytest.approx(std * np.sqrt(np.pi / 2), rel=0.25, abs=1.0), item["label"]


def test_limited_build_is_deterministic_offline_and_reads_no_reserved_file(corpus, tmp_path, monkeypatch):
    read = []
    dcmread = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda path, *a, **k: read.append(str(path)) or dcmread(path, *a, **k))
    folder = build_demo_set(tmp_path / "a", limit=1, version=CORPUS_VERSION)
    items = build_datalist("demo", folder, split="all", version=CORPUS_VERSION, limit=1)
    assert sorted({(i["task"]) for i in items}) == sorted(TASKS) and len(items) == 9  # one per task and split
    assert read and not any(path.endswith(RESERVED) for path in read)
    assert "dipy" not in sys.modules
    # the first slice of each task and split, byte for byte as in the full build made in another process state
    full = json.loads((corpus / "datalist.json").read_text())
    limited = json.loads((folder / "datalist.json").read_text())
    for key in KEYS:
        for item in limited[key]:
            twin = next(i for i in full[key] if i["task"] == item["task"])
            for k in ("image", "label"):
                assert (folder / item[k]).read_bytes() == (corpus / twin[k]).read_bytes(), (key, item)
    stamp = (folder / "datalist.json").stat().st_mtime_ns
    assert build_demo_set(folder, limit=1, version=CORPUS_VERSION) == folder
    assert (folder / "datalist.json").stat().st_mtime_ns == stamp  # cached: reused, not rebuilt


def test_a_missing_package_file_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(
        corpus_module, "SOURCES", (SOURCES[0].__class__(**{**SOURCES[0].__dict__, "file": "nope.dcm"}),)
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nope.dcm").write_bytes(b"not the package's")  # a file of that name elsewhere is never taken
    with pytest.raises(corpus_module.DataError, match=r"nope.dcm: not installed.*pydicom-data"):
        list(corpus_module.corpus_pairs())
