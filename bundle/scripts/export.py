"""Export the bundle's network to ONNX, with dynamic batch, height and width, checked against eager PyTorch.

The spatial routing modules pick experts per pixel: their default sparse dispatch runs each expert on the pixels
routed to it, with data-dependent shapes that tracing cannot capture. The export runs on a copy of the network
whose routing modules use the dense dispatch (every expert on every pixel, weighted by the same gates), which gives
the same output with static shapes. The legacy TorchScript-based exporter (``dynamo=False``) is used: it keeps
the height and width symbolic through the network's reflect pad to a multiple of 8 and the crop back.

That pad is only recorded in the graph if the example input needs it, so the example's height and width must not
be multiples of 8 (:data:`EXAMPLE_SHAPE`); the exported model then pads by ``(-H) % 8`` for every input, zero
included. After export the ONNX model is run with onnxruntime on inputs of other sizes and batch sizes
(:data:`CHECK_SHAPES`) and compared with the eager network; the file is only written if they match.

Usage, from the bundle folder::

    python -m scripts.export --ckpt models/model.pt --out models/model.onnx
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.networks.utils import convert_to_onnx
from monai.utils import optional_import
from torch import nn

from .atomic import atomic_path
from .errors import UserInputError
from .networks.routing import SpatialRoutingModule
from .weights import load_weights

ort, has_ort = optional_import("onnxruntime")

__all__ = [
    "CHECK_SHAPES",
    "EXAMPLE_SHAPE",
    "INPUT_NAME",
    "OPSET_VERSION",
    "OUTPUT_NAME",
    "check_onnx",
    "dense_copy",
    "export_onnx",
    "load_network",
    "load_weights",
    "main",
]

logger = logging.getLogger(__name__)

#: Name of the ONNX model's input and output, as in the bundle's ``network_data_format``.
INPUT_NAME, OUTPUT_NAME = "image", "pred"
#: The traced example: height and width not multiples of 8, so that the pad to a multiple of 8 is in the graph.
EXAMPLE_SHAPE: tuple[int, int, int, int] = (1, 1, 44, 52)
#: Inputs of other batch sizes and sizes (multiples of 8 and odd ones) the exported model is checked on.
CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((2, 1, 37, 61), (1, 1, 64, 48), (3, 1, 16, 23))
#: ONNX opset (17 has LayerNormalization).
OPSET_VERSION = 17

_BUNDLE_ROOT = Path(__file__).resolve().parents[1]

# Warnings of the legacy exporter that do not apply here: it is chosen on purpose (see the module docstring), and
# the dense dispatch indexes with non-negative expert ids only.
_KNOWN_EXPORT_WARNINGS = (
    "You are using the legacy TorchScript-based ONNX export",
    "The feature will be removed",
    "Exporting aten::index operator of advanced indexing",
)


def dense_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode whose spatial routing modules use the dense dispatch.

    Args:
        network: AMIR (or any module); it is not changed.

    Returns:
        The copy; same weights, same outputs, static shapes.
    """
    exported = copy.deepcopy(network).eval()
    for module in exported.modules():
        if isinstance(module, SpatialRoutingModule):
            module.dispatch = "dense"
    return exported


def _check_example_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"example_shape must be (N, C, H, W), got {tuple(shape)}.")
    n, c, h, w = (int(s) for s in shape)
    if h < 16 or w < 16:
        raise ValueError(f"example_shape needs H, W >= 16, got {tuple(shape)}.")
    if h % 8 == 0 or w % 8 == 0:
        raise ValueError(
            f"example_shape {tuple(shape)}: H and W must not be multiples of 8, or the network's pad to a multiple "
            "of 8 is traced away and other sizes fail in the exported model."
        )
    return n, c, h, w


def check_onnx(
    filepath: str | os.PathLike,
    network: nn.Module,
    shapes: Sequence[Sequence[int]] = CHECK_SHAPES,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Run an exported model with onnxruntime on random inputs and compare with the eager network.

    Args:
        filepath: the ONNX file.
        network: the eager network (any dispatch), in eval mode for the comparison.
        shapes: input shapes ``(N, C, H, W)`` to check.
        atol: largest absolute difference allowed.
        seed: seed of the random inputs.

    Returns:
        The largest absolute difference over all checked inputs.

    Raises:
        RuntimeError: onnxruntime is not installed, or an output differs by more than ``atol`` (naming the file
            and the shape).
    """
    if not has_ort:
        raise RuntimeError("checking the ONNX model needs onnxruntime (pip install onnxruntime).")
    session = ort.InferenceSession(os.fspath(filepath), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    was_training = network.training
    network.eval()
    worst = 0.0
    try:
        for shape in shapes:
            x = torch.rand(*shape, generator=generator)
            with torch.no_grad():
                expected = network(x).cpu().numpy()
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
            if got.shape != expected.shape:
                raise RuntimeError(
                    f"{filepath}: output shape {got.shape} for input {tuple(shape)}, expected {expected.shape}."
                )
            diff = float(np.max(np.abs(got - expected)))
            if not diff <= atol:  # also catches NaN
                raise RuntimeError(
                    f"{filepath}: ONNX output differs from PyTorch by {diff:.3g} (> {atol:g}) for input {tuple(shape)}."
                )
            worst = max(worst, diff)
    finally:
        network.train(was_training)
    return worst


def export_onnx(
    network: nn.Module,
    filepath: str | os.PathLike,
    example_shape: Sequence[int] = EXAMPLE_SHAPE,
    check_shapes: Sequence[Sequence[int]] | None = CHECK_SHAPES,
    opset_version: int = OPSET_VERSION,
    atol: float = 1e-4,
) -> Path:
    """Export ``network`` to ONNX with dynamic batch, height and width; check it, then write it atomically.

    Args:
        network: the network with its weights (AMIR or Restormer); it is not changed.
        filepath: the ``.onnx`` file to write (replaced if it exists).
        example_shape: ``(N, C, H, W)`` of the traced example; H, W >= 16 and not multiples of 8.
        check_shapes: input shapes to compare onnxruntime with eager PyTorch on; None or empty skips the check.
        opset_version: ONNX opset.
        atol: largest absolute difference allowed by the check.

    Returns:
        The path written.

    Raises:
        ValueError: bad ``example_shape``.
        RuntimeError: the exported model does not match the eager network (nothing is written).
    """
    n, c, h, w = _check_example_shape(example_shape)
    target = Path(filepath)
    target.parent.mkdir(parents=True, exist_ok=True)
    exported = dense_copy(network)
    example = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(target) as tmp:  # written 0644 and renamed into place, or not at all
        with warnings.catch_warnings():
            # the input checks and the pad test become constants in the trace: expected, and checked below
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for message in _KNOWN_EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            convert_to_onnx(
                exported,
                inputs=[example],
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset_version,
                dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
                filename=os.fspath(tmp),
                verify=False,
                use_trace=True,
                dynamo=False,
            )
        if check_shapes:
            worst = check_onnx(tmp, network, check_shapes, atol=atol)
            logger.info(f"ONNX matches PyTorch within {worst:.2g} on inputs {[tuple(s) for s in check_shapes]}.")
    return target


def load_network(
    ckpt: str | os.PathLike,
    config_file: str | os.PathLike | Sequence[str | os.PathLike] = _BUNDLE_ROOT / "configs" / "inference.json",
    network_id: str = "network_def",
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The bundle's network from its config, with the weights of ``ckpt`` (loaded with ``weights_only=True``).

    Args:
        ckpt: a state dict or a training checkpoint holding one under ``"model"``.
        config_file: the config(s) defining the network.
        network_id: the network's id in the config.
        overrides: config ids to set before parsing (e.g. ``{"network_def#dim": 48}``).
        device: where the network goes.

    Returns:
        The network on ``device``, in eval mode.

    Raises:
        FileNotFoundError: no config at the given path.
        KeyError: the config has no ``network_id``.
        UserInputError: the checkpoint cannot be loaded or does not fit the network (one line naming the file).
    """
    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"no config file at {f}.")
    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in files])
    for key, value in (overrides or {}).items():
        parser[key] = value
    if network_id not in parser:
        raise KeyError(f"{', '.join(map(os.fspath, files))} defines no {network_id!r}.")
    network = parser.get_parsed_content(network_id, instantiate=True)
    return load_weights(network.to(device), ckpt, map_location=device)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m scripts.export --ckpt models/model.pt --out models/model.onnx``.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for weights that cannot be loaded (one line on stderr; other errors raise).
    """
    parser = argparse.ArgumentParser(prog="python -m scripts.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="weights: models/model.pt or a training checkpoint")
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    parser.add_argument(
        "--config", nargs="+", default=[os.fspath(_BUNDLE_ROOT / "configs" / "inference.json")], help="config(s)"
    )
    parser.add_argument("--network-id", default="network_def", help="the network's id in the config")
    parser.add_argument("--opset", type=int, default=OPSET_VERSION, help="ONNX opset")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of the onnxruntime check")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        network = load_network(args.ckpt, args.config, args.network_id)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = export_onnx(
        network,
        args.out,
        opset_version=args.opset,
        atol=args.atol,
        check_shapes=None if args.no_check else CHECK_SHAPES,
    )
    logger.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
