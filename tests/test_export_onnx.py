"""ONNX export (scripts.export): dynamic batch / height / width, onnxruntime matches eager PyTorch on new sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _workflow_data import TINY_ROUTED, tiny_routed_amir
from scripts.export import CHECK_SHAPES, EXAMPLE_SHAPE, export_onnx, main
from scripts.networks import AMIR

# Sizes and batch sizes used neither by the traced example nor by the export's own check.
NEW_SHAPES = [(2, 1, 24, 40), (1, 1, 19, 33), (4, 1, 16, 16)]


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["pred"], {"image": x.numpy()})[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[AMIR, Path]:
    net = tiny_routed_amir().eval()
    path = export_onnx(net, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return net, path


def test_new_sizes_match_eager(exported):
    net, path = exported
    assert not {s[2:] for s in NEW_SHAPES} & {tuple(EXAMPLE_SHAPE[2:]), *(s[2:] for s in CHECK_SHAPES)}
    generator = torch.Generator().manual_seed(1)
    for shape in NEW_SHAPES:
        x = torch.rand(*shape, generator=generator)
        with torch.no_grad():
            expected = net(x).numpy()
        got = run_onnx(path, x)
        assert got.shape == shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # the routing really matters: the output depends on the experts (not a pass-through of the input)
    assert float(np.abs(got - x.numpy()).max()) > 1e-3


def test_axes_are_symbolic_and_network_unchanged(exported):
    net, path = exported
    assert path.stat().st_mode & 0o777 == 0o644  # readable like the images, not mkstemp's 0600
    model = onnx.load(str(path))
    (graph_input,) = model.graph.input
    assert graph_input.name == "image"
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == 1
    assert [o.name for o in model.graph.output] == ["pred"]
    # the export works on a dense copy: the given network keeps its sparse dispatch
    assert {m.dispatch for m in net.modules() if hasattr(m, "dispatch")} == {"sparse"}


def test_bad_example_and_failed_check_write_nothing(tmp_path):
    net = tiny_routed_amir().eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        export_onnx(net, tmp_path / "a.onnx", example_shape=(1, 1, 48, 52))
    with pytest.raises(ValueError, match=">= 16"):
        export_onnx(net, tmp_path / "a.onnx", example_shape=(1, 1, 9, 52))
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_onnx(net, tmp_path / "b.onnx", check_shapes=[(1, 1, 20, 20)], atol=-1.0)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind


def test_command_line(tmp_path, capsys):
    net = tiny_routed_amir(seed=3).eval()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "epoch": 1}, ckpt)  # a training checkpoint: weights under "model"
    config = tmp_path / "net.json"
    config.write_text(json.dumps({"network_def": {"_target_": "scripts.networks.AMIR", **TINY_ROUTED}}))
    out = tmp_path / "out" / "model.onnx"
    assert main(["--ckpt", str(ckpt), "--out", str(out), "--config", str(config)]) == 0
    x = torch.rand(2, 1, 27, 35, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(run_onnx(out, x), expected, rtol=0, atol=1e-4)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"output.weight": torch.zeros(1)}}, wrong)
    damaged = tmp_path / "damaged.pt"
    data = bytearray(ckpt.read_bytes())
    data[data.index(net.state_dict()["output.weight"].numpy().tobytes()) + 3] ^= 0x10
    damaged.write_bytes(bytes(data))
    for path, words in ((tmp_path / "missing.pt", "no such weights file"), (wrong, "do not fit the network"),
                        (damaged, "fails its CRC check")):  # fmt: skip
        assert main(["--ckpt", str(path), "--out", str(out), "--config", str(config)]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ") and words in errors[0]
