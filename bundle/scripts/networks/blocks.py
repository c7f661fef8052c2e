"""Backbone blocks of the Restormer U-Net shared by AMIR and the Restormer baseline.

MDTA and GDFN are MONAI's ``CABlock`` and ``FeedForward`` (same parameters, same operations as the released code);
their ``forward`` is re-stated here only so that the network compiles with TorchScript (MONAI's use ``einops`` and
``typing.cast``, which ``torch.jit.script`` rejects) and to run the GDFN gate as one fused expression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks.cablock import CABlock, FeedForward
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "PointwiseConv2d",
    "ChannelLayerNorm",
    "MDTA",
    "GDFN",
    "TransformerBlock",
    "Downsample",
    "Upsample",
    "TransformerStage",
]


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution that runs on oneDNN on a CPU at one thread too; the same parameters and state dict.

    At one thread PyTorch sends a 1x1 convolution of a batch under 16 to its im2col path (``_slow_conv2d_forward``)
    instead of oneDNN, and that path is slower on these layers: measured at one thread on the paper AMIR, 256x256,
    8.0 instead of 10.2 CPU-s per slice, outputs within 1e-6 (``bench/README.md``). At more threads PyTorch picks
    oneDNN itself, so only the one-thread case is redirected; traced, exported, compiled, scripted, autocast and
    non-CPU runs keep the plain convolution.

    Args:
        in_channels, out_channels: as ``nn.Conv2d``.
        bias: a bias term.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, device=None) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias, device=device)

    @classmethod
    def like(cls, conv: nn.Conv2d) -> PointwiseConv2d:
        """``conv``, a plain 1x1 convolution, as this class: its own parameters, and no draw from the random
        generator (a seeded network is initialised as before)."""
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
            raise ValueError(f"PointwiseConv2d: {conv} is not a plain 1x1 convolution.")
        twin = nn.utils.skip_init(cls, conv.in_channels, conv.out_channels, bias=conv.bias is not None)
        twin.weight, twin.bias = conv.weight, conv.bias
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._on_onednn(x):
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _on_onednn(self, x):  # no annotations: TorchScript parses the signature of an unused method too
        return (
            _eager_cpu_float32(x)
            and torch.get_num_threads() == 1
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        )


@torch.jit.unused
def _eager_cpu_float32(x):  # no annotations, as above
    """Whether ``x`` is float32 on a CPU in an eager run: not traced, exported, compiled or under autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of every pixel of an (N, C, H, W) map, as in Restormer.

    The variance is biased and taken about the mean in both kinds; the bias-free kind does not subtract the mean
    from ``x`` itself (so it is not RMSNorm).

    Args:
        num_channels: C.
        with_bias: ``True`` for Restormer's "WithBias" kind, ``False`` for "BiasFree" (no mean shift, no bias).
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, with_bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.with_bias = with_bias
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise the last axis of an NHWC view: contiguous (and fused) when the map is channels-last, which is
        # how AMIR runs; about 10x faster than reducing over dim 1 of NCHW.
        xp = x.permute(0, 2, 3, 1)
        if self.bias is not None:
            return F.layer_norm(xp, [self.num_channels], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        var = torch.var(xp, dim=-1, keepdim=True, correction=0)
        return (xp * torch.rsqrt(var + self.eps) * self.weight).permute(0, 3, 1, 2)


class MDTA(CABlock):
    """Multi-Dconv head transposed attention (MONAI's ``CABlock``, 2-D), attention across channels.

    Args:
        dim: channels.
        num_heads: heads; each is a contiguous group of ``dim // num_heads`` channels.
        bias: bias of the 1x1 and depthwise convolutions.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        if dim % num_heads:
            raise ValueError(f"MDTA: dim {dim} is not divisible by num_heads {num_heads}.")
        super().__init__(spatial_dims=2, dim=dim, num_heads=num_heads, bias=bias)
        for pointwise in (self.qkv, self.project_out):  # MONAI's Convolution blocks: the conv is their child
            pointwise.conv = PointwiseConv2d.like(pointwise.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x)).reshape(n, 3, self.num_heads, c // self.num_heads, h * w)
        q, k = qkv[:, 0], qkv[:, 1]
        if q.dtype == torch.float16:
            # float16 autocast: the product of un-normalised rows sums HW terms and overflows 65504 on large or flat
            # images (a 208x176 slice of zeros gives inf, then NaN): normalise the rows first (norms in float32, as
            # the released code does), so every entry of the product lies in [-1, 1].
            q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True, dtype=torch.float32).clamp_min(1e-12)
            k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True, dtype=torch.float32).clamp_min(1e-12)
            logits = q @ k.transpose(-2, -1)
        else:
            # Cosine similarity of the L2-normalised rows, by dividing the small (d x d) product by the outer
            # product of the norms instead of normalising the large (d x HW) q and k.
            q_norm = _row_norms(q).clamp_min(1e-12)
            k_norm = _row_norms(k).clamp_min(1e-12)
            logits = (q @ k.transpose(-2, -1)) / (q_norm * k_norm.transpose(-2, -1))
        attn = torch.softmax(logits * self.temperature, dim=-1)
        out = (attn @ qkv[:, 2]).reshape(n, c, h, w)
        return self.project_out(out)


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """L2 norms of the rows of ``x`` (..., d, HW), shape (..., d, 1).

    In an eager float32 run on a CPU they are the square roots of the diagonal of ``x @ x^T``: the rows are strided
    views of a channels-last map, which ``vector_norm`` reduces slower than the product runs (48 rows of 512x512,
    two threads: 34 ms against 13 ms; the paper AMIR at 512x512 5 % faster, outputs within 5e-6). On a GPU, in
    reduced precision (TF32 or bf16 products would round the norms), traced, exported, scripted or compiled (where
    the reduction is fused or the product would be exported as the model's work): ``vector_norm``.
    """
    if not torch.jit.is_scripting() and _eager_cpu_float32(x):
        return (x @ x.transpose(-2, -1)).diagonal(dim1=-2, dim2=-1).sqrt().unsqueeze(-1)
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True)


class GDFN(FeedForward):
    """Gated-Dconv feed-forward network (MONAI's ``FeedForward``, 2-D): ``W_out(gelu(a) * b)``.

    Args:
        dim: channels.
        ffn_expansion_factor: hidden channels are ``int(dim * ffn_expansion_factor)``.
        bias: bias of the convolutions.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__(spatial_dims=2, dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)
        for pointwise in (self.project_in, self.project_out):
            pointwise.conv = PointwiseConv2d.like(pointwise.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``.

    Args:
        dim: channels.
        num_heads: MDTA heads.
        ffn_expansion_factor: GDFN expansion.
        bias: bias of the convolutions.
        layer_norm: ``"with_bias"`` or ``"bias_free"``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm: str) -> None:
        super().__init__()
        if layer_norm not in ("with_bias", "bias_free"):
            raise ValueError(f"layer_norm must be 'with_bias' or 'bias_free', got {layer_norm!r}.")
        with_bias = layer_norm == "with_bias"
        self.norm1 = ChannelLayerNorm(dim, with_bias)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, with_bias)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TransformerStage(nn.Sequential):
    """A run of transformer blocks at one resolution, optionally gradient-checkpointed block by block.

    Checkpointing recomputes each block's activations in the backward pass: the same outputs and gradients, a
    fraction of the activation memory.

    Args:
        depth: number of blocks.
        dim, num_heads, ffn_expansion_factor, bias, layer_norm: as ``TransformerBlock``.
        gradient_checkpointing: checkpoint every block when training with gradients.
    """

    def __init__(
        self,
        depth: int,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        layer_norm: str,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            *[TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, layer_norm) for _ in range(depth)]
        )
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.gradient_checkpointing and self.training and x.requires_grad and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv ``C -> C/2`` then pixel-unshuffle by 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv ``C -> 2C`` then pixel-shuffle by 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
