"""Load checkpoints of the authors' released AMIR (and of the public Restormer) into this package's networks."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["convert_reference_state_dict"]

# Renames of the released key names, applied in order to every key (expert weights are stacked separately).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^dict_generator\.CondNet\.", "rin.body."),
    (r"^dict_generator\.lastOut\.", "rin.fc."),
    (r"^dict_generator\.dictionary$", "rin.dictionary"),
    (r"^spatial_routing_encoder_level(\d)\.moe\.", r"srm_level\1."),
    (r"^spatial_routing_encoder_level(\d)\.", r"srm_level\1."),
    (r"^channel_routing_latent\.", "crm_latent."),
    (r"^channel_routing_decoder_level(\d)\.", r"crm_decoder_level\1."),
    (r"\.norm(\d)\.body\.", r".norm\1."),
    # MONAI's Convolution wraps the conv of MDTA and GDFN in a ``conv`` child.
    (r"\.(attn\.qkv|attn\.qkv_dwconv|attn\.project_out|ffn\.project_in|ffn\.dwconv|ffn\.project_out)\.", r".\1.conv."),
)
_EXPERT = re.compile(r"^(srm_level\d)\.experts\.(\d+)\.(fc1|fc2)\.(weight|bias)$")
_STACKED = {("fc1", "weight"): "w1", ("fc1", "bias"): "b1", ("fc2", "weight"): "w2", ("fc2", "bias"): "b2"}


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the released AMIR or Restormer code onto :class:`~scripts.networks.AMIR` keys.

    Per-expert ``fc1`` / ``fc2`` linears are stacked into ``(M, out, in)`` tensors; everything else is renamed.
    A ``"params"`` or ``"state_dict"`` wrapper (as the released training scripts save) is unwrapped.

    Args:
        state_dict: the released model's state dict.

    Returns:
        A state dict for ``AMIR(...)`` / ``Restormer(...)`` built with the same configuration (``strict`` loadable).
    """
    for wrapper in ("params", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    converted: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")  # DataParallel / DDP checkpoints
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        match = _EXPERT.match(key)
        if match:
            module, index, layer, kind = match.groups()
            experts.setdefault((module, _STACKED[(layer, kind)]), {})[int(index)] = value
        else:
            converted[key] = value
    for (module, name), per_expert in experts.items():
        if sorted(per_expert) != list(range(len(per_expert))):
            raise ValueError(f"{module}: expert indices {sorted(per_expert)} are not 0..{len(per_expert) - 1}.")
        converted[f"{module}.{name}"] = torch.stack([per_expert[i] for i in range(len(per_expert))])
    return converted
