"""TorchScript export with MONAI's ``ckpt_export``: the command, its extra files, eager parity on new inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _workflow_data import BUNDLE, TINY_ROUTED, tiny_routed_amir
from scripts.networks import AMIR


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[AMIR, Path]:
    """A tiny checkpoint exported by ``python -m monai.bundle ckpt_export`` run from the bundle folder."""
    tmp = tmp_path_factory.mktemp("ts")
    net = tiny_routed_amir().eval()
    ckpt = tmp / "model.pt"
    torch.save(net.state_dict(), ckpt)
    target = tmp / "model.ts"
    overrides = []
    for key, value in TINY_ROUTED.items():
        overrides += [f"--network_def#{key}", json.dumps(value)]
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(target)]
    cmd += ["--ckpt_file", str(ckpt), "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    result = subprocess.run(
        cmd + overrides, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": "."}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return net, target


def test_extra_files_are_the_bundle_configs(exported):
    _, target = exported
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(target), _extra_files=extra)
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    shipped = json.loads(extra["metadata.json"])
    assert {k: shipped[k] for k in metadata} == metadata
    assert json.loads(extra["inference.json"]) == json.loads((BUNDLE / "configs" / "inference.json").read_text())


def test_scripted_model_matches_eager_on_new_inputs(exported):
    net, target = exported
    scripted = torch.jit.load(str(target)).eval()
    generator = torch.Generator().manual_seed(5)
    ramp = torch.linspace(0, 1, 45 * 70).reshape(1, 1, 45, 70)
    inputs = [torch.rand(2, 1, 37, 53, generator=generator), ramp, torch.rand(1, 1, 64, 16, generator=generator) ** 3]
    for x in inputs:
        with torch.no_grad():
            expected, got = net(x), scripted(x)
        assert got.shape == x.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert (got - x).abs().max() > 1e-3  # a real restoration, not the identity
