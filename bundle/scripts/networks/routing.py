"""Task-adaptive routing of AMIR: the routing instruction network and the spatial and channel routing modules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RoutingInstructionNetwork", "SpatialRoutingModule", "ChannelRoutingModule", "cv_squared"]


class RoutingInstructionNetwork(nn.Module):
    """Routing instruction network (RIN): one instruction vector per image, from the image itself.

    A small strided CNN summarises the degraded image; its pooled features weight a learnable dictionary of
    ``num_atoms`` atoms (softmax weights), and a GELU gives the instruction. Without the dictionary (Table 3's
    ablation) the pooled features are projected straight to ``atom_dim``.

    Args:
        in_channels: image channels.
        num_atoms: dictionary atoms (the released code uses 32; the paper says 16).
        atom_dim: instruction length.
        use_dictionary: weight a learned dictionary (``True``) or project the features (``False``).

    Returns:
        ``forward(x)`` gives an ``(N, atom_dim)`` instruction.
    """

    def __init__(
        self, in_channels: int = 1, num_atoms: int = 32, atom_dim: int = 256, use_dictionary: bool = True
    ) -> None:
        super().__init__()
        self.use_dictionary = use_dictionary
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=3),
            nn.LeakyReLU(0.1),
            nn.Conv2d(64, 64, 3, stride=3),
            nn.LeakyReLU(0.1),
            nn.Conv2d(64, 64, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(64, 64, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(64, 32, 1),
        )
        if use_dictionary:
            self.fc = nn.Linear(32, num_atoms)
            self.dictionary = nn.Parameter(torch.randn(num_atoms, atom_dim))
        else:
            self.fc = nn.Linear(32, atom_dim)
            self.register_parameter("dictionary", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x).mean(dim=(2, 3))
        dictionary = self.dictionary
        if dictionary is None:
            return F.gelu(self.fc(features))
        return F.gelu(torch.softmax(self.fc(features), dim=1) @ dictionary)


def cv_squared(v: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var(v) / (mean(v)^2 + 1e-10)`` (unbiased variance); 0 for one element."""
    v = v.float()
    if v.numel() <= 1:
        return torch.zeros((), dtype=v.dtype, device=v.device)
    return v.var() / (v.mean() ** 2 + 1e-10)


class SpatialRoutingModule(nn.Module):
    """Spatial routing module (SRM): a noisy top-k mixture of MLP experts applied to every pixel (token).

    Each token's gate sees its own features and the image's instruction projected to ``dim``. Only the top-k
    experts of a token run on it (``dispatch="sparse"``); ``dispatch="dense"`` runs every expert on every token and
    weights by the gates -- the same result, used as the obviously-correct reference and for ONNX export.

    The balance loss (Shazeer et al., 2017) of the last forward is in ``self.balance_loss``.

    Args:
        dim: channels C of the feature map.
        atom_dim: instruction length.
        num_experts: M experts.
        top_k: K experts per token.
        hidden_factor: expert hidden width is ``int(dim * hidden_factor)``.
        combine: ``"logsumexp"`` (released code: ``log(sum_k g_k exp(E_k))``) or ``"linear"`` (paper: ``sum g E``).
        dispatch: ``"sparse"`` or ``"dense"``.
        noise_epsilon: floor of the gate noise std.

    Returns:
        ``forward(x, instruction)`` gives ``combined + x``, shape of ``x``.
    """

    def __init__(
        self,
        dim: int,
        atom_dim: int = 256,
        num_experts: int = 4,
        top_k: int = 2,
        hidden_factor: float = 2.66,
        combine: str = "logsumexp",
        dispatch: str = "sparse",
        noise_epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}.")
        if combine not in ("logsumexp", "linear"):
            raise ValueError(f"combine must be 'logsumexp' or 'linear', got {combine!r}.")
        if dispatch not in ("sparse", "dense"):
            raise ValueError(f"dispatch must be 'sparse' or 'dense', got {dispatch!r}.")
        hidden = int(dim * hidden_factor)
        self.num_experts = num_experts
        self.top_k = top_k
        self.combine = combine
        self.dispatch = dispatch
        self.noise_epsilon = noise_epsilon
        self.fc = nn.Linear(atom_dim, dim)
        self.w_gate = nn.Parameter(torch.randn(2 * dim, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(2 * dim, num_experts))
        # Experts stacked along dim 0: (M, out, in) weights, as nn.Linear stores them.
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[-1])  # nn.Linear's default initialisation, per expert
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        # The standard normal whose CDF gives the training load; buffers as in the released state dict.
        self.register_buffer("mean", torch.zeros(1))
        self.register_buffer("std", torch.ones(1))
        self.balance_loss = torch.zeros(())

    def _experts_dense(self, tokens: torch.Tensor) -> torch.Tensor:
        """All experts on all tokens: ``(M, T, C)``."""
        hidden = F.gelu(
            torch.baddbmm(
                self.b1.unsqueeze(1), tokens.unsqueeze(0).expand(self.num_experts, -1, -1), self.w1.transpose(1, 2)
            )
        )
        return torch.baddbmm(self.b2.unsqueeze(1), hidden, self.w2.transpose(1, 2))

    def _expert(self, e: int, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(tokens, self.w1[e], self.b1[e])), self.w2[e], self.b2[e])

    def _mix(self, outputs: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Combine ``(..., K, C)`` expert outputs with ``(..., K)`` gates."""
        if self.combine == "linear":
            return (gates.unsqueeze(-1) * outputs).sum(dim=-2)
        # log(sum g exp(E)) as a logsumexp: equal to the released code's float32 evaluation where that one is finite
        # (it overflows for E > 88.7 and floors an underflowed sum, E < -103, at log(2.2e-16)).
        return torch.logsumexp(torch.log(gates).unsqueeze(-1) + outputs, dim=-2)

    def _routed(self, tokens: torch.Tensor, top_idx: torch.Tensor, top_gates: torch.Tensor) -> torch.Tensor:
        """Run each expert on the tokens routed to it; ``(T, C)``."""
        t, k = top_idx.shape
        if self.dispatch == "dense":
            every = self._experts_dense(tokens)  # (M, T, C)
            outputs = every[top_idx, torch.arange(t, device=tokens.device).unsqueeze(1)]  # (T, K, C)
        else:
            flat_expert = top_idx.reshape(-1)
            order = torch.argsort(flat_expert, stable=True)
            counts: list[int] = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
            routed_tokens = tokens.index_select(0, order // k)
            # An expert with no tokens runs on an empty chunk: no special case, and its parameters still join the graph.
            pieces = [self._expert(e, chunk) for e, chunk in enumerate(torch.split(routed_tokens, counts))]
            sorted_out = torch.cat(pieces, dim=0)
            outputs = torch.empty_like(sorted_out).index_copy_(0, order, sorted_out).view(t, k, -1)
        return self._mix(outputs, top_gates)

    def forward(self, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        cond = self.fc(instruction).unsqueeze(1).expand(n, h * w, c).reshape(n * h * w, c)
        gate_input = torch.cat([tokens, cond], dim=1)
        clean = gate_input @ self.w_gate
        noisy_training = self.training and self.top_k < self.num_experts
        if noisy_training:
            noise_std = F.softplus(gate_input @ self.w_noise) + self.noise_epsilon
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            noise_std = clean  # unused
            logits = clean
        top_vals, top_idx = logits.topk(min(self.top_k + 1, self.num_experts), dim=1)
        top_gates = torch.softmax(top_vals[:, : self.top_k], dim=1)
        top_idx = top_idx[:, : self.top_k]

        combined = self._routed(tokens, top_idx, top_gates)
        out = combined.view(n, h, w, c).permute(0, 3, 1, 2) + x

        if self.training:
            gates = torch.zeros_like(logits).scatter(1, top_idx, top_gates)
            importance = gates.sum(0)
            if noisy_training:
                load = self._smooth_load(clean, logits, noise_std, top_vals)
            else:
                load = (gates > 0).sum(0).to(gates.dtype)
            self.balance_loss = cv_squared(importance) + cv_squared(load)
        return out

    def _smooth_load(
        self, clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, top_vals: torch.Tensor
    ) -> torch.Tensor:
        """Expected number of tokens per expert: ``sum_t P(expert in top-k | other noise fixed)``."""
        threshold_if_in = top_vals[:, self.top_k : self.top_k + 1]
        threshold_if_out = top_vals[:, self.top_k - 1 : self.top_k]
        is_in = noisy > threshold_if_in
        prob_if_in = self._normal_cdf((clean - threshold_if_in) / noise_std)
        prob_if_out = self._normal_cdf((clean - threshold_if_out) / noise_std)
        return torch.where(is_in, prob_if_in, prob_if_out).sum(0)

    def _normal_cdf(self, z: torch.Tensor) -> torch.Tensor:
        # Phi of N(mean, std), written out because torch.distributions does not compile with TorchScript.
        return 0.5 * (1.0 + torch.erf((z - self.mean) / (self.std * math.sqrt(2.0))))


class ChannelRoutingModule(nn.Module):
    """Channel routing module (CRM): ``x + sigmoid(W d) * (gamma * x + beta)``, per channel.

    ``gamma`` and ``beta`` start at zero, so a fresh module is the identity (released code; the paper writes the
    non-residual ``x * m``).

    Args:
        dim: channels.
        atom_dim: instruction length.
    """

    def __init__(self, dim: int, atom_dim: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(atom_dim, dim)
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc(instruction))[:, :, None, None]
        return x + scale * (self.gamma * x + self.beta)
