"""Fine-tuning: start a training from a checkpoint's weights (``--init_ckpt``) and freeze parts of the network.

``--init_ckpt PATH`` loads a state dict (``model.pt``) or a training checkpoint's ``"model"`` entry
(``checkpoint_last.pt``) strictly through :func:`scripts.weights.load_weights` (one error line naming the file and
the first mismatched key); the optimizer, its schedule and the iteration count start fresh. On resume the run's own
checkpoint is loaded instead (the weights are not loaded twice). ``--freeze "['encoder']"`` stops the gradients of
the named parts (:data:`PARTS`, prefixes of :class:`scripts.networks.AMIR`'s modules); it applies on resume too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from torch import nn

from ..errors import UserInputError
from ..weights import load_weights

__all__ = ["PARTS", "part_parameters", "freeze_parts", "fine_tune"]

logger = logging.getLogger(__name__)

#: The parts ``--freeze`` names, each the module-name prefixes it covers (AMIR; the Restormer has no routing).
PARTS: dict[str, tuple[str, ...]] = {
    "rin": ("rin.",),  # the routing instruction network (task instruction from the input)
    "encoder": ("patch_embed.", "encoder_level", "down"),
    "latent": ("latent.",),
    "decoder": ("up", "reduce_chan_level", "decoder_level"),
    "refinement": ("refinement.", "output."),
    # everything that routes per task: the instruction network, spatial (SRM) and channel (CRM) routing modules
    "routing": ("rin.", "srm_level", "crm_"),
}


def part_parameters(network: nn.Module, part: str) -> dict[str, nn.Parameter]:
    """The parameters of one part of ``network`` (a DDP wrapper: of its module), by name.

    Raises:
        UserInputError: an unknown part, or one the network does not have.
    """
    if part not in PARTS:
        raise UserInputError(f"--freeze: unknown part {part!r}; valid: {', '.join(PARTS)}")
    target = network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network
    found = {n: p for n, p in target.named_parameters() if n.startswith(PARTS[part])}
    if not found:
        raise UserInputError(f"--freeze: the network ({type(target).__name__}) has no {part!r} part")
    return found


def freeze_parts(network: nn.Module, parts: Sequence[str] | str | None) -> list[str]:
    """Stop the gradients of the named parts (``requires_grad=False``).

    Args:
        network: the network.
        parts: names of :data:`PARTS` (a single name is taken as a list); None or empty: nothing frozen.

    Returns:
        The names of the frozen parameters.

    Raises:
        UserInputError: an unknown part name, or one the network does not have.
    """
    parts = [parts] if isinstance(parts, str) else list(parts or ())
    frozen: dict[str, nn.Parameter] = {}
    for part in parts:
        frozen.update(part_parameters(network, part))
    for p in frozen.values():
        p.requires_grad_(False)
    if frozen:
        total = sum(p.numel() for p in network.parameters())
        count = sum(p.numel() for p in frozen.values())
        logger.info(f"Frozen {', '.join(parts)}: {count:,} of {total:,} parameters.")
    return sorted(frozen)


def fine_tune(
    network: nn.Module,
    init_ckpt: str | os.PathLike | None = None,
    freeze: Sequence[str] | str | None = None,
    resume: bool = False,
) -> nn.Module:
    """The training network: loaded from ``init_ckpt`` (unless resuming) and with ``freeze`` parts frozen.

    Args:
        network: the freshly built network.
        init_ckpt: ``model.pt`` or ``checkpoint_last.pt`` to start from; None: random initialisation.
        freeze: parts to freeze (:data:`PARTS`).
        resume: the run resumes from its own checkpoint, which holds the weights.

    Returns:
        ``network`` in training mode.

    Raises:
        UserInputError: the checkpoint cannot be loaded or does not fit (the file and first mismatched key), or an
            unknown part.
    """
    if init_ckpt is not None and not resume:
        load_weights(network, init_ckpt)
        logger.info(f"Fine-tuning from {init_ckpt} (fresh optimizer and learning-rate schedule).")
    freeze_parts(network, freeze)
    return network.train()
