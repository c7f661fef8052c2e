"""AMIR / Restormer: parity with the released code, fast paths against plain ones, counts, shapes, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scripts.networks import AMIR, Restormer, convert_reference_state_dict
from scripts.networks.blocks import MDTA, ChannelLayerNorm, _row_norms
from scripts.networks.routing import SpatialRoutingModule, cv_squared
from torch.utils.flop_counter import FlopCounterMode

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}


def reference_network(config: dict, routing: bool) -> AMIR:
    """Build our network from a released-code constructor config."""
    kwargs = {
        "in_channels": config["inp_channels"],
        "out_channels": config["out_channels"],
        "dim": config["dim"],
        "num_blocks": config["num_blocks"],
        "num_refinement_blocks": config["num_refinement_blocks"],
        "heads": config["heads"],
        "ffn_expansion_factor": config["ffn_expansion_factor"],
        "bias": config["bias"],
        "layer_norm": {"WithBias": "with_bias", "BiasFree": "bias_free"}[config["LayerNorm_type"]],
    }
    return AMIR(**kwargs) if routing else Restormer(**kwargs)


@pytest.mark.parametrize(
    "name, routing", [("amir_tiny.pt", True), ("amir_tiny_biasfree.pt", True), ("restormer_tiny.pt", False)]
)
def test_released_code_vectors(name, routing):
    vectors = torch.load(REFERENCE / name, weights_only=True)
    net = reference_network(vectors["config"], routing)
    net.load_state_dict(convert_reference_state_dict(vectors["state_dict"]), strict=True)
    net.eval()
    with torch.no_grad():
        for x, expected in zip(vectors["inputs"], vectors["outputs"], strict=True):
            torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, cls", [("amir_paper_keys.json", AMIR), ("restormer_paper_keys.json", Restormer)])
def test_key_conversion_of_paper_configurations(name, cls):
    listing = json.loads((REFERENCE / name).read_text())
    released = {key: torch.zeros(shape) for key, shape in listing["state_dict"].items()}
    converted = convert_reference_state_dict(released)
    ours = cls().state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert sum(p.numel() for p in cls().parameters()) == listing["num_parameters"]


def test_conversion_unwraps_and_rejects_gaps():
    vectors = torch.load(REFERENCE / "amir_tiny.pt", weights_only=True)
    wrapped = {"params": {"module." + k: v for k, v in vectors["state_dict"].items()}}
    assert convert_reference_state_dict(wrapped).keys() == convert_reference_state_dict(vectors["state_dict"]).keys()
    broken = {k: v for k, v in vectors["state_dict"].items() if ".experts.1." not in k}
    with pytest.raises(ValueError, match="expert indices"):
        convert_reference_state_dict(broken)


def test_parameter_counts():
    def count(**kwargs):
        return sum(p.numel() for p in AMIR(**kwargs).parameters())

    assert count() == 23_540_498
    assert sum(p.numel() for p in Restormer().parameters()) == 26_124_052
    assert count(channel_routing=False) == 23_366_450  # Table 3: 23.37 M
    # Table 3's other ablations cannot be matched exactly from the description; ours are within 0.5 %.
    assert count(instruction_dictionary=False) == pytest.approx(23.53e6, rel=5e-3)
    assert count(spatial_routing=False) == pytest.approx(22.74e6, rel=5e-3)


# --- fast paths against plain, obviously-correct ones ---------------------------------------------------------


def plain_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    centred = x - mean if bias is not None else x
    out = centred / torch.sqrt(var + eps) * weight[None, :, None, None]
    return out if bias is None else out + bias[None, :, None, None]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_layer_norm(with_bias, channels_last):
    torch.manual_seed(0)
    norm = ChannelLayerNorm(12, with_bias)
    torch.nn.init.normal_(norm.weight)
    if with_bias:
        torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 12, 9, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(norm(x), plain_layer_norm(x, norm.weight, norm.bias), atol=1e-5, rtol=1e-5)


def plain_mdta(block: MDTA, x: torch.Tensor) -> torch.Tensor:
    """Attention one image and one head at a time, with explicit L2 normalisation and softmax."""
    qkv = block.qkv_dwconv(block.qkv(x))
    c = x.shape[1]
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    d = c // block.num_heads
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for h in range(block.num_heads):
            rows = slice(h * d, (h + 1) * d)
            qh, kh, vh = (t[n, rows].flatten(1) for t in (q, k, v))
            qh = qh / qh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            kh = kh / kh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            logits = torch.einsum("ip,jp->ij", qh, kh) * block.temperature[h]
            weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            weights = weights / weights.sum(dim=1, keepdim=True)
            out[n, rows] = (weights @ vh).view(d, *x.shape[2:])
    return block.project_out(out)


@pytest.mark.parametrize("dim, heads, bias", [(8, 1, False), (12, 3, True), (16, 4, False), (24, 8, True)])
def test_mdta_against_explicit_attention(dim, heads, bias):
    torch.manual_seed(dim)
    block = MDTA(dim, heads, bias)
    with torch.no_grad():
        block.temperature.uniform_(0.5, 3.0)
    x = torch.randn(2, dim, 10, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x), plain_mdta(block, x), atol=1e-5, rtol=1e-5)


def test_mdta_row_norms_by_the_matrix_product_equal_vector_norm():
    """On a CPU in float32 MDTA takes its q/k norms from the diagonal of q @ q^T (faster on the strided rows of a
    channels-last map); same values and gradients as the reduction, on a large map too."""
    x = torch.randn(1, 3 * 24, 96, 80).contiguous(memory_format=torch.channels_last).requires_grad_()
    rows = x.reshape(1, 3, 2, 12, 96 * 80)[:, 0]  # the strided q view MDTA takes
    got, want = _row_norms(rows), torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    exact = torch.linalg.vector_norm(rows.double(), dim=-1, keepdim=True)
    torch.testing.assert_close(got.double(), exact, atol=0, rtol=2e-6)  # float32 sums of 7,680 squares
    grad_got, grad_want = (torch.autograd.grad(n.sum(), x)[0] for n in (got, want))
    torch.testing.assert_close(grad_got, grad_want, atol=1e-7, rtol=1e-5)
    with FlopCounterMode(display=False) as counter:
        _row_norms(rows.detach())
    assert counter.get_total_flops() == 2 * 12 * 12 * 96 * 80 * 2  # eager: the product ran
    traced = torch.jit.trace(_row_norms, rows.detach())  # exported (traced): the plain reduction
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "aten::linalg_vector_norm" in kinds and "aten::matmul" not in kinds
    block = MDTA(24, 2, bias=False)
    with torch.no_grad():
        y = torch.randn(1, 24, 96, 80).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(block(y), plain_mdta(block, y), atol=1e-5, rtol=1e-5)


def plain_srm(srm: SpatialRoutingModule, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
    """Eval-mode SRM token by token, with the released code's float32 ``log(sum g exp(E))`` and its eps floor."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    cond = srm.fc(instruction)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                token = x[b, :, i, j]
                logits = torch.cat([token, cond[b]]) @ srm.w_gate
                values, index = logits.topk(srm.top_k)
                gates = torch.softmax(values, dim=0)
                total = torch.zeros(c)
                for g, e in zip(gates, index.tolist(), strict=True):
                    expert = F.linear(F.gelu(F.linear(token, srm.w1[e], srm.b1[e])), srm.w2[e], srm.b2[e])
                    total = total + (g * expert.exp() if srm.combine == "logsumexp" else g * expert)
                if srm.combine == "logsumexp":
                    total = torch.where(total == 0, torch.full_like(total, 2.220446049250313e-16), total).log()
                out[b, :, i, j] = total + token
    return out


@pytest.mark.parametrize("combine", ["logsumexp", "linear"])
@pytest.mark.parametrize("dim, experts, top_k", [(6, 4, 2), (8, 3, 1), (5, 4, 4)])
def test_srm_sparse_dense_and_token_loop_agree(combine, dim, experts, top_k):
    torch.manual_seed(dim * 10 + experts)
    srm = SpatialRoutingModule(dim, atom_dim=16, num_experts=experts, top_k=top_k, combine=combine).eval()
    x, instruction = torch.randn(2, dim, 5, 4), torch.randn(2, 16)
    with torch.no_grad():
        sparse = srm(x, instruction)
        srm.dispatch = "dense"
        dense = srm(x, instruction)
        plain = plain_srm(srm, x, instruction)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse, plain, atol=1e-5, rtol=1e-5)


CONFIGS = [
    {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1},
    {"dim": 12, "num_blocks": (1, 2, 1, 2), "num_refinement_blocks": 2, "heads": (1, 2, 3, 6), "bias": True},
    {"dim": 16, "num_blocks": (2, 1, 1, 1), "heads": (2, 2, 4, 4), "ffn_expansion_factor": 3.0},
    {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 0, "layer_norm": "bias_free", "bias": True},
    {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "moe_combine": "linear", "top_k": 1},
    {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "num_experts": 6, "top_k": 3},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_network_sparse_equals_dense_experts(config):
    torch.manual_seed(1)
    net = AMIR(**config).eval()
    perturb(net)
    x = torch.rand(3, 1, 24, 32)
    with torch.no_grad():
        sparse = net(x)
        for m in net.modules():
            if isinstance(m, SpatialRoutingModule):
                m.dispatch = "dense"
        torch.testing.assert_close(net(x), sparse, atol=1e-5, rtol=1e-5)


def perturb(net: torch.nn.Module) -> None:
    """Move every parameter off its initial value, so zero-initialised parts (CRM, gate noise) are exercised."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)


# --- shapes, padding, determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 50), (40, 16)])
def test_any_size_is_padded_and_cropped(size):
    torch.manual_seed(0)
    net = AMIR(**TINY).eval()
    perturb(net)
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape
        ph, pw = (-size[0]) % 8, (-size[1]) % 8
        padded = F.pad(x, [0, pw, 0, ph], mode="reflect")
        torch.testing.assert_close(y, net(padded)[..., : size[0], : size[1]], atol=0, rtol=0)


def test_rejects_small_or_malformed_input():
    net = AMIR(**TINY).eval()
    with pytest.raises(ValueError, match="H, W >= 16"):
        net(torch.rand(1, 1, 15, 32))
    with pytest.raises(ValueError, match="H, W >= 16"):
        net(torch.rand(1, 32, 32))


def test_eval_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    net = AMIR(**TINY).eval()
    perturb(net)
    x = torch.rand(4, 1, 32, 24)
    with torch.no_grad():
        a, b = net(x), net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(4)])
    assert torch.equal(a, b)
    torch.testing.assert_close(a, single, atol=1e-5, rtol=1e-5)


# --- training ------------------------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = AMIR(**TINY).train()
    perturb(net)
    x, target = torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64)
    loss = F.l1_loss(net(x), target) + 1e-3 * net.balance_loss
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_balance_loss():
    torch.manual_seed(0)
    net = AMIR(**TINY).train()
    net(torch.rand(2, 1, 32, 32))
    per_srm = [m.balance_loss for m in (net.srm_level1, net.srm_level2, net.srm_level3)]
    assert net.balance_loss.requires_grad
    torch.testing.assert_close(net.balance_loss, sum(per_srm))
    assert all(torch.isfinite(v) and v > 0 for v in per_srm)
    restormer = Restormer(**TINY).train()
    restormer(torch.rand(1, 1, 32, 32))
    assert float(restormer.balance_loss) == 0.0


def test_balance_loss_hard_load_without_noise():
    """With top_k == num_experts there is no gate noise and the load is the hard count: check it by hand."""
    torch.manual_seed(0)
    srm = SpatialRoutingModule(4, atom_dim=8, num_experts=3, top_k=3).train()
    x, instruction = torch.randn(1, 4, 4, 4), torch.randn(1, 8)
    srm(x, instruction)
    tokens = x.permute(0, 2, 3, 1).reshape(16, 4)
    gates = torch.softmax(torch.cat([tokens, srm.fc(instruction).expand(16, 4)], 1) @ srm.w_gate, dim=1)
    importance, load = gates.sum(0), torch.full((3,), 16.0)
    expected = importance.var() / importance.mean() ** 2 + load.var() / (load.mean() ** 2 + 1e-10)
    torch.testing.assert_close(srm.balance_loss, expected)


def test_cv_squared():
    v = torch.tensor([1.0, 2.0, 6.0])
    assert float(cv_squared(v)) == pytest.approx(v.numpy().var(ddof=1) / v.numpy().mean() ** 2)
    assert float(cv_squared(torch.tensor([3.0]))) == 0.0


def test_gradient_checkpointing_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    plain = AMIR(**TINY).train()
    perturb(plain)
    checkpointed = AMIR(**TINY, gradient_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x, target = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    results = []
    for net in (plain, checkpointed):
        torch.manual_seed(123)  # same gate noise
        out = net(x)
        (F.l1_loss(out, target) + 1e-3 * net.balance_loss).backward()
        results.append((out, {n: p.grad for n, p in net.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=0, rtol=0)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_training_gate_noise_is_used_and_eval_is_not():
    torch.manual_seed(0)
    srm = SpatialRoutingModule(6, atom_dim=8)
    with torch.no_grad():
        srm.w_noise.fill_(1.0)
    x, instruction = torch.randn(1, 6, 8, 8), torch.randn(1, 8)
    srm.train()
    assert not torch.equal(srm(x, instruction), srm(x, instruction))
    srm.eval()
    assert torch.equal(srm(x, instruction), srm(x, instruction))


# --- TorchScript ------------------------------------------------------------------------------------------------


def test_torchscript_matches_eager_on_new_sizes():
    torch.manual_seed(0)
    net = AMIR(**TINY).eval()
    perturb(net)
    scripted = torch.jit.script(net)
    for shape in [(1, 1, 32, 32), (2, 1, 19, 45), (3, 1, 56, 24)]:
        x = torch.rand(shape) * math.pi
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x), atol=1e-6, rtol=1e-6)
