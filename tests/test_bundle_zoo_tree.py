"""The model zoo's pull-request tree of the bundle (``python -m scripts.zoo``), checked as the zoo checks it offline:
layout without weights, its pre-commit rules (1 MB, JSON layout, whitespace), ``large_files.yml``, MONAI's
``verify_metadata``, ``verify_net_in_out``, ``ckpt_export`` and the property check of the default inference config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _workflow_data import BUNDLE
from monai.apps.utils import check_hash
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.utils import set_determinism
from scripts.weights import file_sha256
from scripts.zoo import MAX_FILE_BYTES, PLACEHOLDER_HOST, TREE_ENTRIES, ZOO_NAME

SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"


def zoo(*args: str, cwd: Path = BUNDLE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.zoo", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    result = zoo("--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "models" / ZOO_NAME)
    assert "placeholder urls" in result.stderr  # said while the weights are not published
    return out / "models" / ZOO_NAME


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_tree_holds_the_bundle_without_weights_runs_or_caches(tree):
    assert sorted(p.name for p in tree.iterdir()) == sorted(TREE_ENTRIES)
    files = _files(tree)
    assert {"LICENSE", "large_files.yml", "configs/metadata.json", "configs/inference.json", "docs/README.md"} <= files
    assert not [f for f in files if f.endswith((".pt", ".ts", ".onnx", ".pyc")) or "__pycache__" in f]
    expected = {f"{d}/{f}" for d in ("configs", "docs", "scripts") for f in _files(BUNDLE / d)}
    expected = {f for f in expected if "__pycache__" not in f and not f.endswith(".pyc")}
    assert files - {"LICENSE", "large_files.yml"} == expected
    assert (tree / "scripts" / "zoo.py").read_bytes() == (BUNDLE / "scripts" / "zoo.py").read_bytes()


def test_tree_passes_the_zoo_pre_commit_rules(tree):
    """check-added-large-files (1024 kB), pretty-format-json (indent 4, key order kept), whitespace, yaml."""
    for path in (p for p in tree.rglob("*") if p.is_file()):
        name = str(path.relative_to(tree))
        assert path.stat().st_size <= MAX_FILE_BYTES, name
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # figures: the text hooks leave binary files alone
            continue
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert not [n for n, line in enumerate(text.splitlines(), 1) if line != line.rstrip()], name
        if path.suffix == ".json":
            assert json.dumps(json.loads(text), indent=4) + "\n" == text, name
        if os.access(path, os.X_OK):
            assert text.startswith("#!"), f"{name}: executable without a shebang"
    assert yaml.safe_load((tree / "large_files.yml").read_text())["large_files"]


def test_large_files_list_every_weight_file_with_its_sha256(tree):
    entries = yaml.safe_load((tree / "large_files.yml").read_text())["large_files"]
    shipped = {str(p.relative_to(BUNDLE)) for p in (BUNDLE / "models").rglob("*.pt")}
    assert {e["path"] for e in entries} == shipped == {"models/model.pt", "models/baselines/restormer_demo.pt"}
    for entry in entries:
        assert entry["hash_type"] == "sha256" and entry["hash_val"] == file_sha256(BUNDLE / entry["path"])
        assert check_hash(str(BUNDLE / entry["path"]), entry["hash_val"], entry["hash_type"])  # as MONAI checks it
        assert entry["url"].startswith("https://") and PLACEHOLDER_HOST in entry["url"]  # not published yet


@pytest.fixture(scope="module")
def downloaded(tree, tmp_path_factory) -> Path:
    """A copy of the tree with its large files in place, as the zoo's CI downloads them (here: local copies)."""
    root = tmp_path_factory.mktemp("ci") / ZOO_NAME
    shutil.copytree(tree, root)
    for entry in yaml.safe_load((tree / "large_files.yml").read_text())["large_files"]:
        (root / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLE / entry["path"], root / entry["path"])
        assert check_hash(str(root / entry["path"]), entry["hash_val"], entry["hash_type"])
    return root


def test_zoo_verify_metadata_net_in_out_and_export_on_the_tree(downloaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meta, config = str(downloaded / "configs" / "metadata.json"), str(downloaded / "configs" / "inference.json")
    schema = tmp_path / "schema.json"  # where the zoo's prepare_schema puts it: verify_metadata then stays offline
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=meta, filepath=str(schema))
    kwargs = {"net_id": "network_def", "meta_file": meta, "config_file": config, "bundle_root": str(downloaded)}
    verify_net_in_out(device="cpu", **kwargs)
    ckpt_export(filepath=str(tmp_path / "model.ts"), ckpt_file=str(downloaded / "models" / "model.pt"), **kwargs)
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    assert exported(torch.rand(1, 1, 24, 20)).shape == (1, 1, 24, 20)


def test_default_inference_config_of_the_tree_has_its_properties(downloaded, tmp_path, monkeypatch, restore_logging):
    monkeypatch.chdir(tmp_path)
    configs = downloaded / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(downloaded),
    )
    try:
        workflow.initialize()
        assert workflow.check_properties() == []
    finally:
        set_determinism(seed=None)


def _small_bundle(root: Path, weights: bytes = b"weights") -> Path:
    for entry in ("configs", "docs", "scripts"):
        (root / entry).mkdir(parents=True)
        (root / entry / "a.txt").write_text(entry + "\n")
    (root / "LICENSE").write_text("licence\n")
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(weights)
    entry = {"path": "models/model.pt", "url": "https://example.org/m.pt", "hash_type": "sha256"}
    entry["hash_val"] = file_sha256(root / "models" / "model.pt")
    (root / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))
    return root


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_refuses_an_existing_folder_changed_weights_and_unlisted_weights(tmp_path):
    bundle = _small_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    assert zoo("--out", str(out), "--bundle_root", str(bundle)).returncode == 0
    written = out / "models" / ZOO_NAME
    assert _files(written) == {"LICENSE", "large_files.yml", "configs/a.txt", "docs/a.txt", "scripts/a.txt"}
    (written / "docs" / "a.txt").write_text("the user's edit\n")
    line = _one_error_line(zoo("--out", str(out), "--bundle_root", str(bundle)))
    assert f"{written}: exists" in line
    assert (written / "docs" / "a.txt").read_text() == "the user's edit\n"  # never written over

    (bundle / "models" / "model.pt").write_bytes(b"retrained")  # large_files.yml not updated
    line = _one_error_line(zoo("--out", str(tmp_path / "out2"), "--bundle_root", str(bundle)))
    assert "model.pt: its sha256 differs from large_files.yml" in line
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    (bundle / "models" / "other.pt").write_bytes(b"more")
    line = _one_error_line(zoo("--out", str(tmp_path / "out2"), "--bundle_root", str(bundle)))
    assert "weights not in large_files.yml: ['models/other.pt']" in line
    assert not (tmp_path / "out2").exists()  # checked before anything is written


def test_refuses_a_file_over_the_zoo_limit(tmp_path):
    bundle = _small_bundle(tmp_path / "bundle")
    (bundle / "docs" / "figure.png").write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    line = _one_error_line(zoo("--out", str(tmp_path / "out"), "--bundle_root", str(bundle)))
    assert "over the zoo's 1 MB limit: ['docs/figure.png']" in line
    assert not [p for p in (tmp_path / "out" / "models").iterdir()]
