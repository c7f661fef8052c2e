"""scripts.analysis.capture: the routing read by hooks is the one the network used."""

import pytest
import torch
from scripts.analysis import RoutingRecorder, crm_mask, srm_routing
from scripts.networks import AMIR
from scripts.networks.routing import ChannelRoutingModule, SpatialRoutingModule

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "num_atoms": 4, "atom_dim": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def net():
    torch.manual_seed(0)
    return AMIR(**TINY).eval()


def test_srm_routing_reproduces_each_srm_output(net):
    """Running the module's own experts on the recomputed top-k gives its output: same experts, same gates."""
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = (module, args, output)

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in net.named_modules() if isinstance(m, SpatialRoutingModule)]
    with torch.no_grad():
        net(torch.rand(2, 1, 32, 24))
    for h in handles:
        h.remove()
    assert sorted(seen) == ["srm_level1", "srm_level2", "srm_level3"]
    for module, (x, instruction), output in seen.values():
        top_idx, gates = srm_routing(module, x, instruction)
        n, c, h, w = x.shape
        assert top_idx.shape == gates.shape == (n * h * w, module.top_k)
        torch.testing.assert_close(gates.sum(1), torch.ones(n * h * w))
        tokens = x.permute(0, 2, 3, 1).reshape(-1, c)
        rebuilt = module._routed(tokens, top_idx, gates).view(n, h, w, c).permute(0, 3, 1, 2) + x
        torch.testing.assert_close(rebuilt, output)


def test_recorder_captures_instruction_experts_and_masks_and_removes_hooks(net):
    image = torch.rand(1, 1, 16, 16)
    with RoutingRecorder(net) as recorder, torch.no_grad():
        net(image)
        record = recorder.last
        expected_instruction = net.rin(image)
        crm = net.crm_latent
        assert isinstance(crm, ChannelRoutingModule)
        torch.testing.assert_close(record.masks["crm_latent"], crm_mask(crm, expected_instruction))
    torch.testing.assert_close(record.instruction, expected_instruction)
    assert record.tokens_per_image == {"srm_level1": 256, "srm_level2": 64, "srm_level3": 16}
    assert record.experts["srm_level2"][0].shape == (64, 2)
    assert sorted(record.masks) == ["crm_decoder_level1", "crm_decoder_level2", "crm_decoder_level3", "crm_latent"]
    assert record.masks["crm_latent"].shape == (1, 64)
    # hooks gone: nothing is recorded any more
    recorder.last = None
    with torch.no_grad():
        net(image)
    assert recorder.last is None


def test_recorder_refuses_training_mode(net):
    net.train()
    with RoutingRecorder(net), pytest.raises(RuntimeError, match="eval mode"):
        net(torch.rand(1, 1, 16, 16))


def test_restormer_has_no_routing():
    from scripts.networks import Restormer

    recorder = RoutingRecorder(Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1))
    assert not recorder.has_routing
