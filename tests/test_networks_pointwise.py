"""scripts.networks.blocks.PointwiseConv2d: oneDNN at one CPU thread, the plain convolution's results, the same
parameters and initialisation, and the plain convolution wherever the network is traced or exported."""

import pytest
import torch
from scripts.networks import AMIR
from scripts.networks.blocks import GDFN, MDTA, PointwiseConv2d
from torch import nn
from torch.profiler import ProfilerActivity, profile


@pytest.fixture
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kernels(module: nn.Module, x: torch.Tensor) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        module(x)
    return {event.key for event in prof.key_averages()}


def test_one_thread_runs_on_onednn_with_the_plain_convolutions_results(one_torch_thread):
    torch.manual_seed(0)
    plain = nn.Conv2d(24, 64, 1)
    pointwise = PointwiseConv2d.like(plain)
    x = torch.randn(2, 24, 40, 36).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert "aten::mkldnn_convolution" in _kernels(pointwise, x)
    assert "aten::_slow_conv2d_forward" in _kernels(plain, x)  # what PyTorch does itself at one thread
    out = pointwise(x)
    grads = torch.autograd.grad(out.square().sum(), (x, pointwise.weight, pointwise.bias))
    expected = plain(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, plain.weight, plain.bias))
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()
    for got, want in zip(grads, expected_grads, strict=True):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_traced_and_multithreaded_runs_keep_the_plain_convolution(one_torch_thread):
    pointwise = PointwiseConv2d(8, 16)
    x = torch.randn(1, 8, 20, 20)
    traced = torch.jit.trace(pointwise, x)
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "aten::_convolution" in kinds and "aten::mkldnn_convolution" not in kinds
    scripted = torch.jit.script(pointwise)
    assert torch.allclose(scripted(x), pointwise(x), atol=1e-6)
    assert "aten::convolution" not in _kernels(pointwise, x)  # one thread: redirected
    torch.set_num_threads(2)
    assert "aten::convolution" in _kernels(pointwise, x)  # PyTorch's own choice (oneDNN) at more threads


def test_like_keeps_the_parameters_and_draws_nothing_from_the_generator():
    torch.manual_seed(0)
    plain = nn.Conv2d(12, 36, 1, bias=False)
    state = torch.random.get_rng_state()
    twin = PointwiseConv2d.like(plain)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert twin.weight is plain.weight and twin.bias is None
    with pytest.raises(ValueError, match="not a plain 1x1 convolution"):
        PointwiseConv2d.like(nn.Conv2d(12, 36, 3, padding=1))


def test_the_networks_pointwise_layers_and_state_dict_keys():
    """Every 1x1 convolution of the backbone is pointwise; the keys stay those of the released layout."""
    net = AMIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8))
    attn, ffn = net.encoder_level1[0].attn, net.encoder_level1[0].ffn
    assert isinstance(attn, MDTA) and isinstance(ffn, GDFN)
    for conv in (attn.qkv.conv, attn.project_out.conv, ffn.project_in.conv, ffn.project_out.conv):
        assert isinstance(conv, PointwiseConv2d)
    assert isinstance(net.reduce_chan_level3, PointwiseConv2d) and isinstance(net.reduce_chan_level2, PointwiseConv2d)
    keys = set(net.state_dict())
    assert {"encoder_level1.0.attn.qkv.conv.weight", "encoder_level1.0.ffn.project_in.conv.weight"} <= keys
