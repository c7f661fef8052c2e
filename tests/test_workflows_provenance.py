"""The record of what made an output: file digests, the settings read from the config being run, the reasons a
record differs."""

import hashlib
import json

from monai.bundle import ConfigParser
from scripts.workflows.provenance import FileDigests, config_settings, make_record, record_differences


def test_digests_are_sha256_read_once_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    path.write_bytes(b"x" * 3_000_000)
    digests, opened = FileDigests(), []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert digests(path) == digests(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(opened) == 1  # cached
    path.write_bytes(b"y" * 3_000_001)
    assert digests(path) == hashlib.sha256(b"y" * 3_000_001).hexdigest()  # a changed file is read again


def test_settings_follow_references_and_leave_out_what_does_not_change_pixels(tmp_path):
    config = {
        "device": "cpu",
        "progress": True,
        "scale": 0.5,
        "max_input_voxels": 1000,
        "displayable": {"modality": "ct"},
        "modality": "@displayable#modality",  # recorded by value: as "--modality ct" would give it
        "network_def": {"_target_": "scripts.networks.AMIR", "dim": 8, "gradient_checkpointing": True},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "X", "scale": "$@scale * 2", "limit": "@max_input_voxels"}],
        },
        "inferer": {"_target_": "Y", "progress": "@progress", "device": "@device"},
        "settings": {"_target_": "scripts.workflows.provenance.config_settings"},
    }
    parser = ConfigParser(config)
    settings = parser.get_parsed_content("settings")
    assert settings["scale"] == 0.5  # an option the preprocessing refers to
    assert settings["network_def"] == {"_target_": "scripts.networks.AMIR", "dim": 8}
    assert "progress" not in settings and "device" not in settings and settings["modality"] == "ct"
    assert "max_input_voxels" not in settings  # a limit that refuses inputs, not a pixel setting
    assert "displayable" not in settings
    assert config_settings() == {}  # outside a config run


def test_differences_name_what_changed(tmp_path):
    (tmp_path / "in.nii").write_bytes(b"a")
    (tmp_path / "w.pt").write_bytes(b"w")
    old = make_record([tmp_path / "in.nii"], tmp_path / "w.pt", {"modality": "ct"})
    assert record_differences(old, json.loads(json.dumps(old))) == []
    (tmp_path / "in.nii").write_bytes(b"b")
    new = make_record([tmp_path / "in.nii"], tmp_path / "w.pt", {"modality": "mri"})
    assert record_differences(old, new) == ["the input's content", 'modality ("ct" -> "mri")']
    assert record_differences(None, new) == ["it has no record of what made it"]
