"""The Restormer U-Net with AMIR's task-adaptive routing; the Restormer baseline is the same U-Net without routing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, PointwiseConv2d, TransformerStage, Upsample
from .routing import ChannelRoutingModule, RoutingInstructionNetwork, SpatialRoutingModule

__all__ = ["AMIR", "Restormer"]


class AMIR(nn.Module):
    """All-in-one medical image restoration network (Yang et al., MICCAI 2024).

    A 4-level Restormer U-Net. With ``routing`` on (AMIR), a routing instruction network (RIN) reads the degraded
    image and gives one instruction per image; spatial routing modules (top-k mixtures of experts) start encoder
    levels 1-3 and channel routing modules scale the latent input and the decoder's merged skips. Switches give
    Table 3's ablations. Defaults are the paper configuration (23,540,498 parameters).

    Args:
        in_channels: image channels.
        out_channels: output channels (equal to ``in_channels``: the output is added to the input).
        dim: channels C of level 1 (levels have C, 2C, 4C, 8C).
        num_blocks: transformer blocks per level.
        num_refinement_blocks: blocks after decoder level 1.
        heads: MDTA heads per level.
        ffn_expansion_factor: GDFN (and expert) expansion.
        bias: bias of the convolutions inside the blocks, the channel reductions and the output conv.
        layer_norm: ``"with_bias"`` or ``"bias_free"``.
        num_atoms: dictionary atoms of the RIN.
        atom_dim: instruction length.
        num_experts: experts per SRM.
        top_k: experts per token.
        spatial_routing: use SRMs.
        channel_routing: use CRMs.
        instruction_dictionary: RIN weights a learned dictionary (else projects its features).
        moe_combine: ``"logsumexp"`` (released code) or ``"linear"`` (paper formula).
        moe_dispatch: ``"sparse"`` (each expert on its tokens only) or ``"dense"`` (for export).
        gradient_checkpointing: recompute block activations in backward to save memory.
        routing: ``False`` drops the RIN, SRMs and CRMs (the Restormer baseline).

    Returns:
        ``forward(x)`` takes ``(N, in_channels, H, W)``, any H, W >= 16, and returns the restored image, same shape.
        In training, ``balance_loss`` holds the summed SRM balance loss of that forward.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 42,
        num_blocks: Sequence[int] = (5, 7, 7, 9),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm: str = "with_bias",
        num_atoms: int = 32,
        atom_dim: int = 256,
        num_experts: int = 4,
        top_k: int = 2,
        spatial_routing: bool = True,
        channel_routing: bool = True,
        instruction_dictionary: bool = True,
        moe_combine: str = "logsumexp",
        moe_dispatch: str = "sparse",
        gradient_checkpointing: bool = False,
        routing: bool = True,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError("num_blocks and heads need one entry per level (4).")
        if out_channels != in_channels:
            raise ValueError("out_channels must equal in_channels: the network predicts a residual of its input.")
        self.spatial_routing = routing and spatial_routing
        self.channel_routing = routing and channel_routing
        self.routing = self.spatial_routing or self.channel_routing

        def stage(depth: int, channels: int, num_heads: int) -> TransformerStage:
            return TransformerStage(
                depth, channels, num_heads, ffn_expansion_factor, bias, layer_norm, gradient_checkpointing
            )

        def srm(channels: int) -> nn.Module:
            if not self.spatial_routing:
                return _Passthrough()
            return SpatialRoutingModule(
                channels, atom_dim, num_experts, top_k, ffn_expansion_factor, moe_combine, moe_dispatch
            )

        def crm(channels: int) -> nn.Module:
            return ChannelRoutingModule(channels, atom_dim) if self.channel_routing else _Passthrough()

        c = dim
        self.rin = (
            RoutingInstructionNetwork(in_channels, num_atoms, atom_dim, instruction_dictionary)
            if self.routing
            else None
        )
        self.patch_embed = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.srm_level1 = srm(c)
        self.encoder_level1 = stage(num_blocks[0], c, heads[0])
        self.down1_2 = Downsample(c)
        self.srm_level2 = srm(2 * c)
        self.encoder_level2 = stage(num_blocks[1], 2 * c, heads[1])
        self.down2_3 = Downsample(2 * c)
        self.srm_level3 = srm(4 * c)
        self.encoder_level3 = stage(num_blocks[2], 4 * c, heads[2])
        self.down3_4 = Downsample(4 * c)
        self.crm_latent = crm(8 * c)
        self.latent = stage(num_blocks[3], 8 * c, heads[3])

        self.up4_3 = Upsample(8 * c)
        self.reduce_chan_level3 = PointwiseConv2d(8 * c, 4 * c, bias=bias)
        self.crm_decoder_level3 = crm(4 * c)
        self.decoder_level3 = stage(num_blocks[2], 4 * c, heads[2])
        self.up3_2 = Upsample(4 * c)
        self.reduce_chan_level2 = PointwiseConv2d(4 * c, 2 * c, bias=bias)
        self.crm_decoder_level2 = crm(2 * c)
        self.decoder_level2 = stage(num_blocks[1], 2 * c, heads[1])
        self.up2_1 = Upsample(2 * c)
        # Level 1 keeps the concatenated 2C channels (no reduction) and one head, as Restormer.
        self.crm_decoder_level1 = crm(2 * c)
        self.decoder_level1 = stage(num_blocks[0], 2 * c, heads[0])
        self.refinement = stage(num_refinement_blocks, 2 * c, heads[0])
        self.output = nn.Conv2d(2 * c, out_channels, 3, padding=1, bias=bias)
        self.balance_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] < 16 or x.shape[-1] < 16:
            raise ValueError(f"AMIR expects (N, C, H, W) with H, W >= 16, got shape {x.shape}.")
        h, w = x.shape[-2], x.shape[-1]
        # The U-Net halves the size three times: reflect-pad to a multiple of 8 and crop back.
        pad_h, pad_w = (-h) % 8, (-w) % 8
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")

        rin = self.rin
        instruction = rin(x) if rin is not None else x.new_zeros(x.shape[0], 1)

        # Channels-last features: the convolutions, layer norms and GELUs are all faster on CPU that way.
        feat = self.patch_embed(x).contiguous(memory_format=torch.channels_last)
        enc1 = self.encoder_level1(self.srm_level1(feat, instruction))
        enc2 = self.encoder_level2(self.srm_level2(self.down1_2(enc1), instruction))
        enc3 = self.encoder_level3(self.srm_level3(self.down2_3(enc2), instruction))
        lat = self.latent(self.crm_latent(self.down3_4(enc3), instruction))

        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3], dim=1))
        dec3 = self.decoder_level3(self.crm_decoder_level3(dec3, instruction))
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self.decoder_level2(self.crm_decoder_level2(dec2, instruction))
        dec1 = torch.cat([self.up2_1(dec2), enc1], dim=1)
        dec1 = self.decoder_level1(self.crm_decoder_level1(dec1, instruction))
        out = self.output(self.refinement(dec1)) + x

        if self.training:
            self.balance_loss = self._balance_loss(out)
        return out[..., :h, :w]

    def _balance_loss(self, like: torch.Tensor) -> torch.Tensor:
        total = like.new_zeros(())
        for module in (self.srm_level1, self.srm_level2, self.srm_level3):
            if isinstance(module, SpatialRoutingModule):
                total = total + module.balance_loss
        return total


class Restormer(AMIR):
    """The Restormer baseline (Zamir et al., CVPR 2022): AMIR's U-Net without routing.

    Defaults are the paper's baseline, C = 48 and (4, 6, 6, 8) blocks (26,124,052 parameters with one channel).
    ``balance_loss`` stays zero.

    Args:
        in_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, bias,
        layer_norm, gradient_checkpointing: as :class:`AMIR`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm: str = "with_bias",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            dim=dim,
            num_blocks=num_blocks,
            num_refinement_blocks=num_refinement_blocks,
            heads=heads,
            ffn_expansion_factor=ffn_expansion_factor,
            bias=bias,
            layer_norm=layer_norm,
            gradient_checkpointing=gradient_checkpointing,
            routing=False,
        )


class _Passthrough(nn.Module):
    """Stands where a routing module is switched off: returns the features unchanged."""

    def forward(self, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        return x
