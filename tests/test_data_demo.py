"""Tests of scripts.data.demo: offline, deterministic, atomic build of the demo set (version 1, the small set;
version 3, the real-image corpus, is tested in test_data_corpus.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _workflow_data import BUNDLE, bundle_command, dead_pid
from monai.data import load_decathlon_datalist
from scripts.atomic import temporary_name
from scripts.data import DataError, LoadSlicePaird, build_datalist
from scripts.data import demo as demo_module
from scripts.data.demo import build_demo_set, main
from scripts.errors import UserInputError
from scripts.ownership import MARKER, folder_kind, mark_folder
from scripts.transforms import MODALITY_WINDOWS, KSpaceCrop


def digest(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def write_user_files(folder: Path) -> None:
    """A user's data folder: test images and notes the bundle must never touch."""
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "case1_lq.nii.gz").write_bytes(b"not the bundle's")
    (folder / "README.txt").write_text("my data")


@pytest.fixture(scope="module")
def limited_pairs() -> list:
    """The slice pairs of a build of limit 1, version 1, simulated once (about 5 CPU-s: CT and PET simulation)."""
    return list(demo_module._pairs(1, 1))


@pytest.fixture
def simulated_once(monkeypatch, limited_pairs):
    """Builds of limit 1, version 1 write :func:`limited_pairs` rather than simulate them again: the tests that use
    this check how folders are built, replaced and cleaned (the first test checks the simulated pairs' build)."""

    def pairs(limit, version):
        assert (limit, version) == (1, 1), "only the pairs of limit 1, version 1 are kept"
        return iter(limited_pairs)

    monkeypatch.setattr(demo_module, "_pairs", pairs)


def test_limited_build_is_deterministic_reused_and_found_by_env(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AMIR_DEMO_DIR", str(tmp_path / "env_demo"))
    val = build_datalist("demo", None, split="val", limit=1, version=1)  # builds the missing set in $AMIR_DEMO_DIR
    folder = tmp_path / "env_demo"
    assert [i["task"] for i in val] == ["mri", "ct", "pet"]
    assert all(Path(i["image"]).parent == folder / "slices" for i in val)
    first = digest(folder)
    stamp = (folder / "datalist.json").stat().st_mtime_ns
    assert build_datalist("demo", None, tasks=("ct",), split="test", limit=1, version=1)[0]["task"] == "ct"
    assert (folder / "datalist.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert main(["--out", str(folder), "--limit", "1", "--version", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    other = build_demo_set(tmp_path / "again", limit=1, version=1)
    assert digest(other) == first  # byte-identical rebuild
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(limit):
        raise DataError("simulated failure half-way")
        yield  # pragma: no cover

    written = []
    write = demo_module._write_nifti
    monkeypatch.setattr(demo_module, "_write_nifti", lambda *a: written.append(a[-1]) or write(*a))
    monkeypatch.setattr(demo_module, "_ct_pairs", broken)  # MRI slices are written before CT
    with pytest.raises(DataError, match="half-way"):
        build_demo_set(tmp_path / "demo", limit=1, version=1)
    assert len(written) == 6  # 3 MRI pairs were on disk when the build failed
    assert list(tmp_path.iterdir()) == []


def test_full_default_build(tmp_path):
    folder = build_demo_set(tmp_path / "demo", version=1)  # about 9 s on 2 cores: see bench/data.py
    raw = json.loads((folder / "datalist.json").read_text())
    counts = {
        k: {t: sum(i["task"] == t for i in raw[k]) for t in ("mri", "ct", "pet")}
        for k in ("training", "validation", "test")
    }
    assert counts == {
        "training": {"mri": 14, "ct": 16, "pet": 11},
        "validation": {"mri": 2, "ct": 1, "pet": 2},
        "test": {"mri": 4, "ct": 4, "pet": 3},
    }
    # each CT source slice in one split only
    sources = {k: {i["subject"] for i in raw[k] if i["task"] == "ct"} for k in ("training", "validation", "test")}
    assert sources == {"training": {"J2K_pixelrep_mismatch"}, "validation": {"CT_small"}, "test": {"693_J2KI"}}
    items = load_decathlon_datalist(folder / "datalist.json", data_list_key="test")
    assert all(Path(i["image"]).is_file() and i["task"] in ("mri", "ct", "pet") for i in items)
    load = LoadSlicePaird()
    for item in items:
        out = load(item)
        lq, hq = out["image"], out["label"]
        low, high = MODALITY_WINDOWS[item["task"]]
        assert lq.shape == hq.shape and min(hq.shape[1:]) >= 96
        assert hq.max() > low + 0.05 * (high - low) and hq.min() >= low - 1e-3 and hq.max() <= high
        assert not torch.equal(lq, hq)
        if item["task"] == "mri":
            np.testing.assert_allclose(lq, KSpaceCrop(0.25)(hq), atol=1e-2)
        if item["task"] == "pet":
            # DRF 12 is noisier than full dose, with the same mean activity
            assert float((lq - hq).std()) > 0.1 and float(lq.mean()) == pytest.approx(float(hq.mean()), rel=0.1)


def test_a_folder_the_bundle_did_not_build_is_never_replaced(tmp_path):
    user = tmp_path / "amir"
    write_user_files(user)
    before = digest(user)
    for force in (False, True):
        with pytest.raises(UserInputError, match=r"amir is a folder the bundle did not create .* left untouched"):
            build_demo_set(user, force=force, limit=1, version=1)
        assert digest(user) == before
    file = tmp_path / "a_file"
    file.write_text("mine")
    with pytest.raises(UserInputError, match="is a file"):
        build_demo_set(file, limit=1, version=1)
    assert file.read_text() == "mine"


def test_empty_folder_is_built_and_a_marked_set_is_rebuilt(tmp_path, simulated_once):
    empty = tmp_path / "demo"
    empty.mkdir()
    folder = build_demo_set(empty, limit=1, version=1)
    assert folder_kind(folder) == "demo-set" and (folder / "datalist.json").is_file()
    (folder / "slices" / "mri_000_lq.nii.gz").unlink()  # an incomplete set of the bundle's own is rebuilt
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same build, completed: nothing to say
        build_demo_set(folder, limit=1, version=1)
    assert (folder / "slices" / "mri_000_lq.nii.gz").is_file()
    datalist = json.loads((folder / "datalist.json").read_text())
    (folder / "datalist.json").write_text(json.dumps({**datalist, "build": {"version": 1, "limit": 2}}))
    said = r"rebuilding the demo set \(it holds version 1, limit 2; this needs version 1, limit 1\)"
    with pytest.warns(UserWarning, match=said):
        build_demo_set(folder, limit=1, version=1)  # a set of another build: replaced, and said so


def test_demo_set_of_version_1_without_marker_is_adopted(tmp_path, simulated_once):
    folder = build_demo_set(tmp_path / "demo", limit=1, version=1)
    (folder / MARKER).unlink()  # as built before the marker existed
    stamp = (folder / "datalist.json").stat().st_mtime_ns
    assert build_demo_set(folder, limit=1, version=1) == folder
    assert folder_kind(folder) == "demo-set" and (folder / "datalist.json").stat().st_mtime_ns == stamp
    (folder / MARKER).unlink()
    (folder / "notes.txt").write_text("a user's file")  # anything more: not adopted, not touched
    with pytest.raises(UserInputError):
        build_demo_set(folder, limit=1, force=True, version=1)
    assert (folder / "notes.txt").read_text() == "a user's file"


def test_what_a_killed_build_left_is_removed_and_nothing_else(tmp_path, simulated_once):
    killed = tmp_path / f"{temporary_name('demo', dead_pid())}abc"  # killed before its rename
    running = tmp_path / f"{temporary_name('demo')}def"  # a build in progress (this process)
    unmarked = tmp_path / f"{temporary_name('demo', dead_pid())}ghi"  # named alike, but not the bundle's
    for path in (killed, running, unmarked):
        (path / "slices").mkdir(parents=True)
    mark_folder(killed, "demo-set")
    mark_folder(running, "demo-set")
    build_demo_set(tmp_path / "demo", limit=1, version=1)
    assert not killed.exists() and running.exists() and unmarked.exists()


@pytest.mark.parametrize("config", ["evaluate.json", "train.json"])
def test_cli_without_dataset_refuses_a_users_folder_in_one_line(tmp_path, config):
    user = tmp_path / "amir"
    write_user_files(user)
    before = digest(user)
    result = subprocess.run(
        bundle_command("--config_file", f"configs/{config}", "--dataset_dir", str(user), "--num_workers", "0"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(user) in errors[0] and "--dataset" in errors[0], result.stderr[-2000:]
    assert digest(user) == before
