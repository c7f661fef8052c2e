"""Inference backends: the network runs in PyTorch (eager, or compiled) or in ONNX Runtime, chosen by ``backend``.

- ``torch`` (the configs' default): the network as it is.
- ``onnxruntime``: the network exported to ONNX once per weights file (:class:`~scripts.onnx_cache.OnnxCache`),
  run by ONNX Runtime on the CPU.
- ``auto``: on a CPU, both are run on the first call and the faster one runs the rest; on a GPU, with ``amp`` or
  ``compile``, torch. (On this project's 2-core CPU the engines ran within 3 % of each other, so the first slice
  run twice and ONNX Runtime's memory made ``auto`` the slower default per volume: ``bench/README.md``.)

With ``onnxruntime`` and ``auto`` the first call (the first slice) is run by both engines and their outputs are
compared, and so is the first slice of every other size ONNX Runtime gets: a difference above :data:`CHECK_ATOL`
(on the network's [0, 1] scale) is a warning naming the weights, and torch runs the rest; so is a failed export.
(A routed network whose routers are close to ties, e.g. random weights on a large slice, can send a few pixels to
other experts in the two engines: the check then keeps torch.) The ONNX session is wrapped as a callable that takes
and returns torch tensors, so MONAI's inferers and everything around them are unchanged.

ONNX Runtime gets the process's torch thread count as its intra-op threads (``scripts.runtime`` sets it to the
cores this process may use), one inter-op thread, every graph optimisation and its CPU memory arena.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import optional_import
from torch import nn

from .errors import UserInputError
from .export import INPUT_NAME, OUTPUT_NAME
from .onnx_cache import DEFAULT_CACHE_DIR, OnnxCache
from .runtime import yes_no

ort, has_ort = optional_import("onnxruntime")

__all__ = ["BACKENDS", "CHECK_ATOL", "BackendNetwork", "OnnxNetwork", "check_backend", "session_options"]

logger = logging.getLogger(__name__)

#: Values of ``backend``.
BACKENDS = ("auto", "torch", "onnxruntime")
#: Largest absolute difference between ONNX Runtime and eager PyTorch on the first call (outputs in [0, 1]).
CHECK_ATOL = 1e-4


def check_backend(backend: str) -> str:
    """``backend`` in lower case if it is one of :data:`BACKENDS`.

    Raises:
        UserInputError: any other value (one line saying the valid ones).
    """
    value = str(backend).strip().lower()
    if value not in BACKENDS:
        raise UserInputError(f"backend {backend!r}: use one of {', '.join(BACKENDS)} (--backend torch)")
    return value


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options for this machine.

    Args:
        threads: intra-op threads (default: torch's, which ``scripts.runtime`` sets to the usable cores).

    Returns:
        ``onnxruntime.SessionOptions``: ``threads`` intra-op threads, one inter-op thread (sequential execution:
        the network is one chain), graph optimisation ``ORT_ENABLE_ALL``, CPU memory arena on.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    return options


class OnnxNetwork:
    """An ONNX Runtime session as a network: takes and returns torch tensors (on the input's device).

    Args:
        model: the ``.onnx`` file (input :data:`~scripts.export.INPUT_NAME`, output
            :data:`~scripts.export.OUTPUT_NAME`).
        threads: intra-op threads (see :func:`session_options`).
    """

    def __init__(self, model: str | os.PathLike, threads: int | None = None) -> None:
        options = session_options(threads)
        self.session = ort.InferenceSession(os.fspath(model), options, providers=["CPUExecutionProvider"])
        self.settings = {
            "intra_op_threads": options.intra_op_num_threads,
            "inter_op_threads": options.inter_op_num_threads,
            "graph_optimization": "ORT_ENABLE_ALL",
            "cpu_memory_arena": options.enable_cpu_mem_arena,
        }

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on ``x`` ``(N, 1, H, W)``; returns the float32 output on ``x``'s device."""
        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        array = np.ascontiguousarray(plain.detach().to("cpu", torch.float32).numpy())
        (output,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(output).to(x.device)


def _timed(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    output = function(x)
    return output, time.perf_counter() - start


class BackendNetwork(nn.Module):
    """The network as the workflows call it, run by the engine ``backend`` says (see the module's docstring).

    The weights are loaded into ``network`` when the workflow starts, after this is built, so the export and the
    choice happen on the first call.

    Args:
        network: the network (possibly compiled with ``torch.compile``).
        backend: ``"auto"``, ``"torch"`` or ``"onnxruntime"``.
        weights_path: the weights file loaded into ``network`` (keys the ONNX cache; named in warnings).
        cache_dir: the ONNX cache folder (:class:`~scripts.onnx_cache.OnnxCache`).
        network_config: the network's config (``network_def``), part of the cache key.
        device: the inference device.
        amp: the workflow's mixed precision (a torch feature: ``auto`` then means torch).
        compile: the workflow's ``torch.compile`` (likewise).
        atol: the first call's tolerance.

    Raises:
        UserInputError: an unknown ``backend``; ``onnxruntime`` with ``amp`` or ``compile``, without onnxruntime
            installed, or with a cache folder that is not the bundle's or cannot be written.
    """

    def __init__(
        self,
        network: nn.Module,
        backend: str = "torch",
        weights_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
        network_config: Any = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        compile: bool = False,
        atol: float = CHECK_ATOL,
    ) -> None:
        super().__init__()
        self.network = network
        self.backend = check_backend(backend)
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.cache = OnnxCache(cache_dir)
        self.network_config = json.loads(json.dumps(network_config, default=str))
        self.atol = float(atol)
        self.choice = ""  # "torch" or "onnxruntime" once chosen (on the first call, unless torch is the only one)
        self.onnx: OnnxNetwork | None = None
        self._checked: set[tuple[int, ...]] = set()  # slice sizes on which ONNX Runtime was checked
        why_torch, warn = self._torch_only(torch.device(device), yes_no(amp, "amp"), yes_no(compile, "compile"))
        if why_torch:
            self.choice = "torch"
            (logger.warning if warn else logger.info)(f"backend {self.backend}: torch ({why_torch})")

    def _torch_only(self, device: torch.device, amp: bool, compile: bool) -> tuple[str, bool]:
        """Why the network runs in torch without trying ONNX Runtime ("" if it will try), and whether that is a
        warning (``auto`` cannot try what it should)."""
        if self.backend == "torch":
            return "as asked", False
        reasons = {
            "amp is a torch feature": amp,
            "compile is a torch feature": compile,
            "onnxruntime is not installed": not has_ort,
            "no weights file to key the ONNX cache": self.weights_path is None,
        }
        found = [why for why, true in reasons.items() if true]
        problem = self.cache.problem()
        if self.backend == "onnxruntime":  # asked for: what prevents it is the user's to fix, before any work
            if found:
                raise UserInputError(f"backend onnxruntime: {found[0]}; use --backend torch or auto")
            if problem:
                raise UserInputError(f"{problem}; give --onnx_cache_dir another folder, or use --backend torch")
            return "", False
        if device.type != "cpu":
            return f"the faster on {device.type}", False
        if found:
            return found[0], found[0] == "onnxruntime is not installed"
        return (f"the ONNX cache cannot be used: {problem}", True) if problem else ("", False)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The network's output for ``x``, by the chosen engine (chosen on the first call)."""
        if not self.choice:
            return self._first_call(x)
        if self.choice == "torch":
            return self.network(x, *args, **kwargs)
        if tuple(x.shape[2:]) not in self._checked:  # a new slice size: checked as the first slice was
            expected, got, diff, _, _ = self._compare(x, self.onnx)
            return got if self._agree(diff, x) else expected
        return self.onnx(x)

    def _compare(self, x: torch.Tensor, onnx: OnnxNetwork) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
        """Both engines on ``x``: torch's output, ONNX Runtime's, their largest difference, and both times."""
        expected, torch_s = _timed(self.network, x)
        got, onnx_s = _timed(onnx, x)
        return expected, got, float((got.float() - expected.float()).abs().max()), torch_s, onnx_s

    def _agree(self, diff: float, x: torch.Tensor) -> bool:
        """Whether ``diff`` is within the tolerance on a slice of ``x``'s size (else torch from now on)."""
        size = "x".join(str(s) for s in x.shape[2:])
        if not diff <= self.atol:  # NaN too
            self._fall_back(f"ONNX Runtime differs from PyTorch by {diff:.3g} (> {self.atol:g}) on a {size} slice")
            return False
        self._checked.add(tuple(x.shape[2:]))
        return True

    def _eager(self) -> nn.Module:
        return getattr(self.network, "_orig_mod", self.network)  # a compiled network's eager module

    def _fall_back(self, message: str) -> None:
        logger.warning(f"{self.weights_path}: {message}; using torch.")
        self.choice = "torch"

    def _first_call(self, x: torch.Tensor) -> torch.Tensor:
        """Export (or reuse) the ONNX model, check it against eager PyTorch on ``x``, choose the engine."""
        try:
            model = self.cache.model(self._eager(), self.weights_path, self.network_config)
            start = time.perf_counter()
            onnx = OnnxNetwork(model)
            created = time.perf_counter() - start
        except Exception as e:  # a network the exporter cannot trace, a full disk: torch still restores
            self._fall_back(f"no ONNX model ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            return self.network(x)
        logger.info(f"ONNX Runtime session in {created:.2f} s: {onnx.settings}")
        expected, got, diff, torch_s, onnx_s = self._compare(x, onnx)
        if not self._agree(diff, x):
            return expected
        shape = tuple(x.shape)
        times = f"onnxruntime {onnx_s:.3f} s, torch {torch_s:.3f} s per call of {shape}"
        self.onnx = onnx
        self.choice = "torch" if self.backend == "auto" and onnx_s >= torch_s else "onnxruntime"
        logger.info(
            f"backend {self.backend}: {self.choice} (ONNX Runtime matches PyTorch within {diff:.2g} <= {self.atol:g}"
            f" on the first slice; {times})"
        )
        return got if self.choice == "onnxruntime" else expected
