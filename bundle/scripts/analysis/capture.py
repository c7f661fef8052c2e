"""What the routing modules decide in a forward pass, read with forward hooks (the network is not changed).

A hook sees a routing module's inputs ``(features, instruction)``; from them it recomputes, in evaluation mode, what
the module itself computes and does not return: the top-k experts and gates of every token of an SRM
(:func:`srm_routing`) and the channel mask of a CRM (:func:`crm_mask`). The instruction is the one every routing
module receives, so the RIN's output is captured whatever module produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..networks.routing import ChannelRoutingModule, SpatialRoutingModule

__all__ = ["srm_routing", "crm_mask", "ForwardRouting", "RoutingRecorder"]


def srm_routing(
    module: SpatialRoutingModule, x: torch.Tensor, instruction: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation-mode routing of an SRM: each token's top-k experts and their gates.

    The same computation as :meth:`SpatialRoutingModule.forward` with clean logits (no gate noise):
    ``[token, fc(instruction)] @ w_gate``, the top-(k+1) logits, a softmax over the first k.

    Args:
        module: the SRM.
        x: its input features ``(N, C, H, W)``.
        instruction: its input instruction ``(N, atom_dim)``.

    Returns:
        ``(top_idx, gates)``, both ``(N * H * W, k)``: expert indices (best first) and gates summing to 1 per token,
        tokens in the module's order (image, then row-major pixels).
    """
    n, c, h, w = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    cond = module.fc(instruction).unsqueeze(1).expand(n, h * w, c).reshape(n * h * w, c)
    logits = torch.cat([tokens, cond], dim=1) @ module.w_gate
    top_vals, top_idx = logits.topk(min(module.top_k + 1, module.num_experts), dim=1)
    return top_idx[:, : module.top_k], torch.softmax(top_vals[:, : module.top_k], dim=1)


def crm_mask(module: ChannelRoutingModule, instruction: torch.Tensor) -> torch.Tensor:
    """The channel mask ``sigmoid(fc(instruction))`` of a CRM, ``(N, C)``."""
    return torch.sigmoid(module.fc(instruction))


@dataclass
class ForwardRouting:
    """The routing of one forward pass (all on the CPU).

    Attributes:
        instruction: ``(N, atom_dim)`` instruction of each image, or None for a network without routing modules.
        experts: SRM name -> ``(top_idx, gates)`` of :func:`srm_routing`, ``(N * H * W, k)`` each.
        tokens_per_image: SRM name -> ``H * W`` of its feature map.
        masks: CRM name -> ``(N, C)`` mask.
    """

    instruction: torch.Tensor | None = None
    experts: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    tokens_per_image: dict[str, int] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


class RoutingRecorder:
    """Context manager recording the routing of every forward pass of ``network`` through forward hooks.

    Routing modules are found by type, named by their attribute path (``srm_level1``, ``crm_latent``, ...).
    ``recorder.last`` is the :class:`ForwardRouting` of the latest forward. The hooks are removed on exit.

    Args:
        network: AMIR (or any module holding :class:`SpatialRoutingModule` / :class:`ChannelRoutingModule`).

    Raises:
        RuntimeError: (during a forward) the network is in training mode: its gates are then noisy and the
            recorded routing would not be the one used.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.srms = {n: m for n, m in network.named_modules() if isinstance(m, SpatialRoutingModule)}
        self.crms = {n: m for n, m in network.named_modules() if isinstance(m, ChannelRoutingModule)}
        self.last = ForwardRouting()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def has_routing(self) -> bool:
        """Whether the network has any SRM or CRM."""
        return bool(self.srms or self.crms)

    def __enter__(self) -> RoutingRecorder:
        self._handles.append(self.network.register_forward_pre_hook(self._start))
        for name, module in self.srms.items():
            self._handles.append(module.register_forward_hook(self._srm_hook(name)))
        for name, module in self.crms.items():
            self._handles.append(module.register_forward_hook(self._crm_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            raise RuntimeError("RoutingRecorder: put the network in eval mode (training gates are noisy).")
        self.last = ForwardRouting()

    def _keep_instruction(self, instruction: torch.Tensor) -> None:
        if self.last.instruction is None:
            self.last.instruction = instruction.detach().float().cpu()

    def _srm_hook(self, name: str):
        def hook(module: SpatialRoutingModule, args: tuple, output: torch.Tensor) -> None:
            x, instruction = args
            with torch.no_grad():
                top_idx, gates = srm_routing(module, x, instruction)
            self._keep_instruction(instruction)
            self.last.experts[name] = (top_idx.cpu(), gates.float().cpu())
            self.last.tokens_per_image[name] = x.shape[-2] * x.shape[-1]

        return hook

    def _crm_hook(self, name: str):
        def hook(module: ChannelRoutingModule, args: tuple, output: torch.Tensor) -> None:
            _, instruction = args
            with torch.no_grad():
                mask = crm_mask(module, instruction)
            self._keep_instruction(instruction)
            self.last.masks[name] = mask.float().cpu()

        return hook
