"""The bundle as MONAI's model zoo checks it: metadata, configs, workflow properties, logging, licences, file sizes.

Run on the bundle as it is in the repository; every config in ``configs/`` is checked, whatever its name.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import os
import pydoc
import re
import subprocess
from pathlib import Path

import jsonschema
import monai.bundle.scripts as bundle_scripts
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from _workflow_data import demo_dir
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out
from monai.bundle.config_item import ConfigComponent, ConfigExpression
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.workflows import _reject_executable_logging_config
from monai.utils import set_determinism
from scripts.errors import find_user_error
from scripts.transforms import MODALITY_WINDOWS

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
METADATA = CONFIGS / "metadata.json"
# The schema metadata.json names, kept with the tests so that the checks run offline (MONAI would download it).
SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"
MAX_FILE_BYTES = 25 * 1024 * 1024  # the model zoo's limit for files in the repository
TINY_NET = {
    "_target_": "scripts.networks.AMIR",
    "dim": 8,
    "num_blocks": [1, 1, 1, 1],
    "num_refinement_blocks": 1,
    "num_atoms": 4,
    "atom_dim": 16,
}


def metadata() -> dict:
    return json.loads(METADATA.read_text())


def config_stacks() -> dict[str, list[Path]]:
    """Every config of ``configs/``; a ``multi_gpu_<name>`` config is read on top of ``<name>``, as MONAI runs it."""
    stacks = {}
    for path in sorted(CONFIGS.glob("*.json")):
        if path.name == METADATA.name:
            continue
        base = CONFIGS / path.name.removeprefix("multi_gpu_")
        stacks[path.name] = [base, path] if base != path else [path]
    # the model zoo's usual stack: evaluate.json read on top of train.json (evaluates what the training wrote)
    stacks["train.json+evaluate.json"] = [CONFIGS / "train.json", CONFIGS / "evaluate.json"]
    return stacks


def read_stack(stack: list[Path]) -> dict:
    """The top-level keys of a config stack, as MONAI merges them."""
    config: dict = {}
    for path in stack:
        config.update(json.loads(path.read_text()))
    return config


@pytest.fixture
def elsewhere(monkeypatch, tmp_path_factory):
    """Run from an unrelated folder, as the model zoo's CI and MONAI Label parse a bundle (with ``bundle_root`` set)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))


@pytest.fixture
def offline(monkeypatch):
    """Make MONAI's schema download fail unless the file is already there (it then skips the download)."""
    original = bundle_scripts.download_url

    def no_network(url, filepath="", **kwargs):
        if not Path(filepath).is_file():
            raise AssertionError(f"verify_metadata would download {url}")
        return original(url=url, filepath=filepath, **kwargs)

    monkeypatch.setattr(bundle_scripts, "download_url", no_network)


def test_metadata_validates_against_schema_offline(tmp_path, offline):
    meta = metadata()
    schema = json.loads(SCHEMA.read_text())
    assert meta["schema"].endswith("/" + SCHEMA.name)
    jsonschema.validate(meta, schema)
    local = tmp_path / SCHEMA.name
    local.write_bytes(SCHEMA.read_bytes())
    verify_metadata(meta_file=str(METADATA), filepath=str(local))
    # the check can fail: a metadata without network_data_format is rejected
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({k: v for k, v in meta.items() if k != "network_data_format"}))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(broken), filepath=str(local))


def test_version_is_in_changelog():
    meta = metadata()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["version"] in meta["changelog"]


def _requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def test_package_versions_match_requirements():
    """metadata.json states requirements.txt's versions, but requirements-zoo.txt's where the zoo's Python 3.10
    has no wheel of requirements.txt's pin (each an older release than the project's own)."""
    meta = metadata()
    pins = _requirement_pins(REPO / "requirements.txt")
    zoo = _requirement_pins(REPO / "requirements-zoo.txt")
    for name, version in zoo.items():
        older = tuple(map(int, version.split("."))) < tuple(map(int, pins[name].split(".")))
        assert older, f"requirements-zoo.txt: {name} {version} is not older than requirements.txt's {pins[name]}"
    pins.update(zoo)
    assert meta["monai_version"] == pins.pop("monai")
    assert meta["pytorch_version"] == pins.pop("torch")
    assert meta["numpy_version"] == pins.pop("numpy")
    listed = {name.lower(): version for name, version in meta["required_packages_version"].items()}
    assert listed == pins
    # MONAI 1.6 renames this deprecated key to required_packages_version when parsing, replacing the real one
    assert "optional_packages_version" not in meta


def test_network_data_format_states_io_and_units():
    meta = metadata()
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    for tensor in (fmt["inputs"]["image"], fmt["outputs"]["pred"]):
        assert tensor["num_channels"] == 1 and tensor["dtype"] == "float32"
        assert tensor["value_range"] == [0, 1] and len(tensor["spatial_shape"]) == 2
        # any H, W >= 16 (the network pads to a multiple of 8): n = 1, 2, ... gives 16, 17, ...
        sizes = [bundle_scripts._get_fake_spatial_shape(tensor["spatial_shape"], n=n) for n in (1, 2, 9)]
        assert sizes == [(16, 16), (17, 17), (24, 24)]
    # the description gives every modality's window, as scripts.transforms defines it
    units = {"ct": "HU", "mri": "", "pet": "SUV"}
    for modality, (low, high) in MODALITY_WINDOWS.items():
        assert f"[{low:g}, {high:g}] {units[modality]}".strip() in meta["description"], modality


def test_verify_net_in_out(elsewhere):
    kwargs = {"net_id": "network_def", "meta_file": str(METADATA), "config_file": str(CONFIGS / "inference.json")}
    verify_net_in_out(device="cpu", **kwargs)  # "15+n" with n = 1: the smallest input, 16 x 16
    verify_net_in_out(device="cpu", n=8, **kwargs)  # 23 x 23: any size from 16 on, not only multiples of 8
    with pytest.raises(ValueError, match="output channel"):
        verify_net_in_out(device="cpu", **kwargs, **{"_meta_#network_data_format#outputs#pred#num_channels": 2})


@pytest.mark.parametrize("name", sorted(config_stacks()))
def test_config_parses_and_references_resolve(name, elsewhere):
    """Macros, ``@`` references, ``_target_`` components and ``$`` expressions, without instantiating anything."""
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_stacks()[name]])
    parser.read_meta(str(METADATA))
    parser["bundle_root"] = str(BUNDLE)
    parser.parse()
    items = parser.ref_resolver.items
    assert items, name
    problems = []
    for id_, item in items.items():
        config = item.get_config()
        for ref in ReferenceResolver.match_refs_pattern(config) if isinstance(config, str) else {}:
            if ref not in items:
                problems.append(f"{id_}: @{ref} does not exist")
        if isinstance(item, ConfigComponent) and ConfigComponent.is_instantiable(config):
            target = item.resolve_module_name()
            if isinstance(target, str) and pydoc.locate(target) is None:
                problems.append(f"{id_}: _target_ {target} cannot be imported")
        if isinstance(item, ConfigExpression) and ConfigExpression.is_expression(config):
            code = config[len(ConfigExpression.prefix) :]
            if not ConfigExpression.is_import_statement(config):
                try:
                    ast.parse(re.sub(r"@[\w#:]+", "_ref", code), mode="eval")
                except SyntaxError as e:
                    problems.append(f"{id_}: expression {code!r}: {e.msg}")
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "name", sorted(n for n, stack in config_stacks().items() if "network_def" in read_stack(stack))
)
def test_network_def_is_the_shipped_one_and_takes_path_overrides(name, elsewhere):
    """Every config builds the shipped demo network, and ``--network_def#dim 8`` style overrides change it."""
    from scripts.networks import DEMO_AMIR

    def network(**overrides) -> torch.nn.Module:
        parser = ConfigParser()
        parser.read_config([str(p) for p in config_stacks()[name]])
        parser.update({"bundle_root": str(BUNDLE), **overrides})
        return parser.get_parsed_content("network_def")

    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    network().load_state_dict(shipped)  # strict: the shipped weights fit the network every config builds
    small = network(**{"network_def#dim": 8, "network_def#num_blocks": [1, 1, 1, 1]})
    assert small.patch_embed.out_channels == 8 != DEMO_AMIR["dim"]
    assert sum(1 for _ in small.encoder_level2.modules()) < sum(1 for _ in network().encoder_level2.modules())


def test_logging_conf_is_accepted(tmp_path, restore_logging):
    conf = CONFIGS / "logging.conf"
    _reject_executable_logging_config(str(conf))  # MONAI 1.6.1's check before fileConfig
    logging.config.fileConfig(str(conf), disable_existing_loggers=False)
    assert logging.getLogger().handlers
    # the check is real: a handler class outside the logging package is refused
    bad = tmp_path / "logging.conf"
    bad.write_text(conf.read_text().replace("class=StreamHandler", "class=os.system"))
    with pytest.raises(ValueError):
        _reject_executable_logging_config(str(bad))


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory) -> dict[str, Path]:
    """The demo set (training; the tests' shared one: a limited set would be rebuilt in full by train.json, which
    asks for all of it) and a folder with one NIfTI image (inference)."""
    tmp = tmp_path_factory.mktemp("props")
    demo = demo_dir()
    images = tmp / "images"
    images.mkdir()
    nib.save(nib.Nifti1Image(np.full((24, 20, 2), 100.0, np.float32), np.eye(4)), str(images / "ct.nii.gz"))
    return {"demo": demo, "images": images}


@pytest.mark.parametrize(("config", "workflow_type"), [("train.json", "train"), ("inference.json", "infer")])
def test_workflow_properties(config, workflow_type, small_inputs, elsewhere, tmp_path, monkeypatch, restore_logging):
    """MONAI's required train / infer properties exist (they are instantiated: small network and data)."""
    monkeypatch.setenv("AMIR_DEMO_DIR", str(small_inputs["demo"]))
    data = small_inputs["demo"] if workflow_type == "train" else small_inputs["images"]
    overrides = {"bundle_root": str(tmp_path), "dataset_dir": str(data), "network_def": copy.deepcopy(TINY_NET)}
    if workflow_type == "train":
        overrides["num_workers"] = 0
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / config),
        meta_file=str(METADATA),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    try:
        workflow.initialize()
        assert workflow.check_properties() == []
    finally:
        set_determinism(seed=None)
        torch.use_deterministic_algorithms(False)


def test_inference_properties_with_the_default_config(elsewhere, restore_logging):
    """As the zoo's CI checks it: the shipped config as it is (its default dataset_dir does not exist here)."""
    assert not Path(read_stack([CONFIGS / "inference.json"])["dataset_dir"]).exists()
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(METADATA),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(BUNDLE),
    )
    try:
        workflow.initialize()
        assert workflow.check_properties() == []  # instantiates dataset and evaluator: the folder is read at run
        with pytest.raises(RuntimeError) as raised:  # MONAI wraps what the run raises
            workflow.run()
        assert "the input folder (dataset_dir) does not exist" in str(find_user_error(raised.value))
    finally:
        set_determinism(seed=None)


def _repository_files() -> list[Path]:
    """Tracked files and untracked files git does not ignore (what a commit would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [REPO / p for p in listed.split("\0") if p and (REPO / p).is_file()]


def test_no_large_files_in_repository():
    large = [p.relative_to(REPO) for p in _repository_files() if p.stat().st_size > MAX_FILE_BYTES]
    assert not large, f"files over 25 MB belong in bundle/large_files.yml, not in git: {large}"
    listing = BUNDLE / "large_files.yml"
    if listing.exists():  # the model zoo's format: large_files: [{path, url, hash_val, hash_type}]
        entries = yaml.safe_load(listing.read_text())["large_files"]
        for entry in entries:
            assert {"path", "url"} <= set(entry) and entry["url"].startswith("https://"), entry


def test_licence_and_docs_exist():
    licence = (REPO / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "Copyright 2026 AMIR bundle contributors" in licence
    assert (BUNDLE / "LICENSE").read_text() == licence
    assert (BUNDLE / "docs" / "README.md").stat().st_size > 0
    data_licence = (BUNDLE / "docs" / "data_license.txt").read_text()
    for dataset in ("IXI", "Mayo", "PET"):
        assert dataset in data_licence
    assert os.path.getsize(METADATA) > 0
