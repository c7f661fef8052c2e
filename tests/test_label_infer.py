"""MONAI Label's bundle inference task, done as it does it, on the bundle's inference.json.

MONAI Label cannot be installed beside the CPU torch pin, so this module repeats what its ``BundleInferTask``
(monailabel/tasks/infer/bundle.py) and ``BasicInferTask`` do: read ``configs/inference.json`` with ``ConfigParser``
and ``bundle_root`` set to the bundle; instantiate ``network_def`` and load ``models/model.pt``; take the input
and output keys from the metadata; run ``preprocessing`` (as a list of transforms), ``inferer`` on the batched
``image`` and ``postprocessing`` on the item with ``pred``, each parsed separately. A Label request item carries
only ``{"image": path}`` and request options; a Label server sets the modality in the bundle's config (see
deploy/README.md, "Serving with MONAI Label").
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, SaveImaged, Spacing, Spacingd
from scripts.networks import AMIR

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "num_atoms": 4, "atom_dim": 16}


def make_bundle(root: Path, modality: str, identity: bool) -> Path:
    """A copy of the bundle as a Label app holds it: its configs (modality set), scripts, and small weights.

    With ``identity`` the network's output convolution is zero, so it returns its input: the restoration must
    then be the input clipped to the modality's window, in the input's units and on its grid.
    """
    shutil.copytree(BUNDLE / "configs", root / "configs")
    shutil.copytree(BUNDLE / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((root / "configs" / "inference.json").read_text())
    config["network_def"].update(TINY)
    config["modality"] = modality
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    torch.manual_seed(0)
    net = AMIR(**TINY)
    if identity:
        torch.nn.init.zeros_(net.output.weight)
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def label_infer(bundle: Path, image: Path) -> dict:
    """What MONAI Label's ``BundleInferTask`` does for one request; returns the item after postprocessing."""
    sys.path.insert(0, str(bundle))
    try:
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.config.update({"bundle_root": str(bundle)})
        network = parser.get_parsed_content("network_def", instantiate=True)
        checkpoint = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(checkpoint.get("model", checkpoint), strict=True)
        network.eval()
        metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
        key_image = next(iter(metadata["network_data_format"]["inputs"]))
        key_pred = next(iter(metadata["network_data_format"]["outputs"]))
        assert (key_image, key_pred) == ("image", "pred")

        pre = parser.get_parsed_content("preprocessing", instantiate=True)
        pre = list(pre.transforms) if isinstance(pre, Compose) else pre
        assert isinstance(pre[0], LoadImaged)  # Label swaps it for its own loader of the same options
        # Label keeps the user's grid: nothing may resample the image
        assert not [t for t in pre if isinstance(t, (Spacing, Spacingd))]
        inferer = parser.get_parsed_content("inferer", instantiate=True)
        post = parser.get_parsed_content("postprocessing", instantiate=True)
        post = [
            t for t in (list(post.transforms) if isinstance(post, Compose) else post) if not isinstance(t, SaveImaged)
        ]

        data = {key_image: str(image), "model": "amir", "device": "cpu", "result_extension": ".nii.gz"}
        for transform in pre:
            data = transform(data)
        with torch.no_grad():
            data[key_pred] = inferer(data[key_image][None], network)[0]
        for transform in post:
            data = transform(data)
        return data
    finally:
        sys.path.remove(str(bundle))


@pytest.fixture(scope="module")
def ct_volume(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CT volume stored slice axis first (3 x 40 x 36, 3 mm slices), LPS-like axes, values beyond the window."""
    rng = np.random.default_rng(1)
    volume = rng.normal(0.0, 300.0, (3, 40, 36)).astype(np.float32)
    volume[0, :4, :4] = -3000.0  # below the CT window
    volume[1, :4, :4] = 5000.0  # above it
    affine = np.array([[0, 0, -0.7, 20], [0, -0.7, 0, 10], [3.0, 0, 0, -5], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("label_in") / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path, volume, affine


def test_restoration_is_in_input_units_and_grid(tmp_path, ct_volume):
    path, volume, affine = ct_volume
    bundle = make_bundle(tmp_path / "amir", "ct", identity=True)
    pred = label_infer(bundle, path)["pred"]
    assert tuple(pred.shape) == (1, *volume.shape)
    assert pred.dtype == torch.float32
    np.testing.assert_allclose(np.asarray(pred.affine), affine, atol=1e-5)
    # an identity network gives the input back in HU, clipped to the CT window [-1024, 3071]
    np.testing.assert_allclose(pred[0].numpy(), np.clip(volume, -1024.0, 3071.0), rtol=0, atol=0.05)


def test_trained_network_changes_the_image(tmp_path, ct_volume):
    path, volume, _ = ct_volume
    bundle = make_bundle(tmp_path / "amir", "ct", identity=False)
    pred = label_infer(bundle, path)["pred"][0].numpy()
    assert pred.shape == volume.shape
    assert pred.min() >= -1024.0 - 1e-3 and pred.max() <= 3071.0 + 1e-3
    assert np.abs(pred - np.clip(volume, -1024.0, 3071.0)).max() > 1.0
