"""Mixed precision and compilation as configuration: ``amp``, ``amp_dtype`` and ``compile`` of every workflow.

MONAI's engines autocast only on CUDA, in float16 by default, always with a gradient scaler, and compute the loss
inside the autocast region. Here the network's forward runs under ``torch.autocast`` on whatever device the
batch is on (bf16 autocast runs on a CPU too) in the chosen dtype, its output comes back as float32, and the loss
and the metrics are computed outside autocast in float32. A gradient scaler is used for float16 only: bfloat16
has float32's range, so its gradients do not underflow.

- :func:`resolve_amp_dtype`: ``amp_dtype`` of the configs (None: bfloat16 where the device supports it, else
  float16).
- :class:`AutocastInferer`: wraps any MONAI inferer (``SimpleInferer``, the folder inference's
  ``SliceWiseInferer``) so the network runs under autocast; the evaluators' and inference's amp.
- :class:`AmpTrainer`: MONAI's ``SupervisedTrainer`` with that amp, :class:`~scripts.workflows.PlainBatch`
  batches and a gradient scaler (:func:`grad_scaler`) for float16.
- :func:`maybe_compile`: ``torch.compile`` of a network when the config says so (MONAI's trainer and evaluator
  take ``compile`` themselves).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys

from ..errors import UserInputError
from .batches import PlainBatch
from .ema import WeightEMA

__all__ = ["AMP_DTYPES", "resolve_amp_dtype", "grad_scaler", "AutocastInferer", "AmpTrainer", "maybe_compile"]

#: Names ``amp_dtype`` accepts.
AMP_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"


def resolve_amp_dtype(amp_dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The autocast dtype of a workflow.

    Args:
        amp_dtype: ``"bfloat16"``, ``"float16"`` (or ``torch`` dtypes); None: bfloat16 where ``device`` supports it
            (CPUs, CUDA GPUs from Ampere on), else float16.
        device: the workflow's device.

    Returns:
        ``torch.bfloat16`` or ``torch.float16``.

    Raises:
        UserInputError: an unknown name, or bfloat16 asked for on a device without it.
    """
    device = torch.device(device)
    if amp_dtype is None:
        return torch.bfloat16 if _bf16_supported(device) else torch.float16
    dtype = amp_dtype if isinstance(amp_dtype, torch.dtype) else AMP_DTYPES.get(str(amp_dtype).lower())
    if dtype not in (torch.bfloat16, torch.float16):
        raise UserInputError(f"amp_dtype must be 'bfloat16', 'float16' or null (the device's best), got {amp_dtype!r}")
    if dtype == torch.bfloat16 and not _bf16_supported(device):
        raise UserInputError(f"amp_dtype bfloat16: {device} does not support it; use --amp_dtype float16")
    return dtype


def grad_scaler(device: str | torch.device, amp: bool = False, amp_dtype: str | torch.dtype | None = None):
    """A ``torch.amp.GradScaler`` for ``device``, enabled only for float16 training (it can then be checkpointed).

    Args:
        device: the trainer's device.
        amp: mixed precision on.
        amp_dtype: as :func:`resolve_amp_dtype`.

    Returns:
        ``torch.amp.GradScaler``; disabled (``scale``, ``step`` and ``update`` pass through) unless float16.
    """
    device = torch.device(device)
    enabled = bool(amp) and resolve_amp_dtype(amp_dtype, device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)


def _float32(output: Any) -> Any:
    """Floating tensors of ``output`` (a tensor, or a tuple / list / dict of them) cast to float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_float32(o) for o in output)
    if isinstance(output, dict):
        return {k: _float32(v) for k, v in output.items()}
    return output


class AutocastInferer(Inferer):
    """Runs another inferer with the network under ``torch.autocast``; the result comes back as float32.

    The device type is the input's, so bf16 autocast works on a CPU as well as on a GPU. With ``amp`` off this is
    the wrapped inferer, unchanged.

    Args:
        inferer: the inferer to wrap (default ``SimpleInferer``).
        amp: autocast on.
        dtype: as :func:`resolve_amp_dtype`'s ``amp_dtype``; resolved for the input's device on the first call.
    """

    def __init__(self, inferer: Inferer | None = None, amp: bool = False, dtype: str | torch.dtype | None = None):
        super().__init__()
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.amp = bool(amp)
        self.dtype = dtype
        self._resolved: dict[str, torch.dtype] = {}

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The dtype the network runs in on ``device`` (None with amp off)."""
        if not self.amp:
            return None
        if device.type not in self._resolved:
            self._resolved[device.type] = resolve_amp_dtype(self.dtype, device)
        return self._resolved[device.type]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        Args:
            inputs: the network input.
            network: the network.
            args: passed on.
            kwargs: passed on.

        Returns:
            The wrapped inferer's output; with amp, its floating tensors in float32.
        """
        dtype = self.autocast_dtype(inputs.device)
        if dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(device_type=inputs.device.type, dtype=dtype):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _float32(output)


class AmpTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` with mixed precision on any device, the loss in float32, plain-tensor batches.

    One iteration: ``prepare_batch`` (default :class:`PlainBatch`: plain tensors, metadata left in
    ``engine.state.batch``); forward under autocast (:class:`AutocastInferer`) with a float32 prediction; loss
    outside autocast; backward and optimizer step through ``grad_scaler`` (a pass-through unless float16); the
    ``ema`` update. It
    fires MONAI's iteration events (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``,
    ``MODEL_COMPLETED``) like ``SupervisedTrainer``, so its handlers work unchanged; a handler of
    ``BACKWARD_COMPLETED`` may clear the gradients (``set_to_none``) to skip the step, with or without the scaler
    (:class:`~scripts.workflows.NonFiniteGuard` does). MONAI's own ``amp`` (CUDA float16 only) stays off.

    Args:
        args: ``SupervisedTrainer``'s.
        amp: mixed precision on.
        amp_dtype: as :func:`resolve_amp_dtype`.
        grad_scaler: the scaler (to checkpoint it, build it with :func:`grad_scaler` and pass it here too); default
            a new one, enabled for float16 only.
        ema: an average of the weights (:class:`~scripts.workflows.WeightEMA`) updated after each optimizer step.
        kwargs: ``SupervisedTrainer``'s (``compile``, ``optim_set_to_none``, ...); no ``accumulation_steps``.

    Raises:
        ValueError: ``accumulation_steps`` other than 1.
        UserInputError: bad ``amp_dtype``.
    """

    def __init__(
        self,
        *args: Any,
        amp: bool = False,
        amp_dtype: str | torch.dtype | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        ema: WeightEMA | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError("AmpTrainer does not accumulate gradients: accumulation_steps must be 1.")
        kwargs.setdefault("prepare_batch", PlainBatch())
        super().__init__(*args, amp=False, **kwargs)
        device = torch.device(self.state.device)
        self.amp_dtype = resolve_amp_dtype(amp_dtype, device) if amp else None
        self.inferer = AutocastInferer(self.inferer, amp=bool(amp), dtype=self.amp_dtype)
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        elif grad_scaler.is_enabled() and self.amp_dtype != torch.float16:
            warnings.warn("AmpTrainer: an enabled gradient scaler without float16 autocast.", stacklevel=2)
        self.grad_scaler = grad_scaler
        self.ema = ema

    def _iteration(self, engine: AmpTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        """One training step (see the class docstring); returns ``{image, label, pred, loss}``."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        engine.state.output[Keys.PRED] = pred = engine.inferer(inputs, engine.network, *args, **kwargs)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = loss = engine.loss_function(pred, targets).mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        scaler = engine.grad_scaler
        scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if not scaler.is_enabled() or _has_gradients(engine.optimizer):  # the scaler refuses a step without any
            scaler.step(engine.optimizer)
            scaler.update()
        if engine.ema is not None:  # here, so that every ITERATION_COMPLETED handler sees the updated average
            engine.ema.update()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def maybe_compile(network: torch.nn.Module, compile: bool = False, **compile_kwargs: Any) -> torch.nn.Module:
    """``torch.compile(network, **compile_kwargs)`` when ``compile``, else ``network`` itself.

    The compiled module shares the network's parameters, so weights loaded into ``network`` afterwards (e.g. by
    a ``CheckpointLoader``) are the ones it runs with.

    Args:
        network: the network.
        compile: compile it.
        compile_kwargs: arguments of ``torch.compile`` (``mode``, ``backend``, ``dynamic``...).

    Returns:
        The compiled or the same module.
    """
    return torch.compile(network, **compile_kwargs) if compile else network
