"""Plain tensors into the network: the batch's images leave their metadata behind before the forward pass.

MONAI's loaders give ``MetaTensor`` images, and every operation on a ``MetaTensor`` goes through its
``__torch_function__``, which copies metadata along. A GPU training step of AMIR is launch-bound, so that per-op
cost made it 34-69 % slower there (4 % on a CPU). :class:`PlainBatch` is the ``prepare_batch`` of the bundle's
trainers and evaluators: it hands the network ``torch.Tensor`` images and leaves the metadata (``task``, ``id``,
each image's ``meta``) where the workflow keeps it, in ``engine.state.batch``, for the handlers and
post-processing that use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

__all__ = ["plain_tensor", "PlainBatch"]


def plain_tensor(
    image: torch.Tensor, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> torch.Tensor:
    """``image`` as a plain ``torch.Tensor`` (sharing its data, no copy) moved to ``device``.

    Args:
        image: a tensor or ``MetaTensor``.
        device: where to move it (None: where it is).
        non_blocking: asynchronous copy from pinned memory.
        kwargs: other arguments of ``Tensor.to`` (e.g. ``dtype``).

    Returns:
        A ``torch.Tensor`` that is not a ``MetaTensor``.
    """
    if isinstance(image, MetaTensor):
        image = image.as_tensor()
    return image.to(device=device, non_blocking=non_blocking, **kwargs)


class PlainBatch(PrepareBatch):
    """``prepare_batch`` of a MONAI trainer or evaluator: ``(image, label)`` as plain tensors on the device.

    The batch dictionary itself is not changed, so ``engine.state.batch`` still holds the ``MetaTensor`` images,
    the tasks and the slice ids.

    Args:
        image_key: key of the network input.
        label_key: key of the target; a batch without it gives ``None`` (inference).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        self.image_key = image_key
        self.label_key = label_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            batchdata: a collated batch dictionary.
            device: the engine's device.
            non_blocking: asynchronous host-to-device copies (with a pinned-memory loader).
            kwargs: other arguments of ``Tensor.to``.

        Returns:
            ``(image, label)``; ``label`` is None when the batch has none.

        Raises:
            KeyError: the batch has no image.
        """
        if not isinstance(batchdata, Mapping) or self.image_key not in batchdata:
            raise KeyError(f"PlainBatch: the batch has no {self.image_key!r} (keys: {list(batchdata)}).")
        image = plain_tensor(batchdata[self.image_key], device, non_blocking, **kwargs)
        label = batchdata.get(self.label_key)
        if isinstance(label, torch.Tensor):
            return image, plain_tensor(label, device, non_blocking, **kwargs)
        return image, None
