"""scripts.analysis.channel_masks: per-task mean CRM masks and the distances between tasks."""

import math

import numpy as np
import pytest
import torch
from scripts.analysis import ChannelMasks, RoutingRecorder, mask_distance
from scripts.networks import AMIR

TASKS = ["mri", "ct", "pet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_amir() -> AMIR:
    torch.manual_seed(0)
    return AMIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, num_atoms=4, atom_dim=16).eval()


def masks_of(net: AMIR, images: dict[str, list[torch.Tensor]]) -> ChannelMasks:
    recorder = RoutingRecorder(net)
    masks = ChannelMasks(list(recorder.crms))
    with recorder, torch.no_grad():
        for task, batch in images.items():
            for image in batch:
                net(image)
                for crm, mask in recorder.last.masks.items():
                    masks.add(task, crm, mask)
    return masks


def test_mask_distance_known_values():
    assert mask_distance(np.zeros(4), np.ones(4)) == 1.0
    assert mask_distance(np.array([0.0, 1.0]), np.zeros(2)) == pytest.approx(math.sqrt(0.5))
    assert mask_distance(np.full(3, 0.3), np.full(3, 0.3)) == 0.0


def test_identical_tasks_give_zero_distances():
    torch.manual_seed(1)
    shared = [torch.rand(1, 1, 16, 16) for _ in range(3)]
    masks = masks_of(tiny_amir(), {task: shared for task in TASKS})
    assert masks.crms == ["crm_latent", "crm_decoder_level3", "crm_decoder_level2", "crm_decoder_level1"]
    for crm in masks.crms:
        np.testing.assert_array_equal(masks.distances(crm, TASKS), np.zeros((3, 3)))
    assert [r["distance"] for r in masks.distance_rows(TASKS)] == [0.0] * 3 * 4


def test_different_instructions_give_symmetric_positive_distances_and_known_means():
    net = tiny_amir()
    torch.manual_seed(2)
    images = {"mri": [torch.rand(1, 1, 16, 16)], "ct": [torch.zeros(1, 1, 16, 16)], "pet": [torch.ones(1, 1, 16, 16)]}
    masks = masks_of(net, images)
    for crm in masks.crms:
        d = masks.distances(crm, TASKS)
        np.testing.assert_array_equal(d, d.T)
        assert np.all(d[~np.eye(3, dtype=bool)] > 0)
    # the mean is over images: two images of one task average their masks
    with torch.no_grad():
        a, b = net.rin(torch.zeros(1, 1, 16, 16)), net.rin(torch.ones(1, 1, 16, 16))
        expected = (torch.sigmoid(net.crm_latent.fc(a)) + torch.sigmoid(net.crm_latent.fc(b)))[0].double() / 2
    both = masks_of(net, {"ct": [torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)]})
    np.testing.assert_allclose(both.mean("ct", "crm_latent"), expected.numpy(), rtol=1e-6)
    table = masks.markdown(TASKS)
    assert table.splitlines()[0].startswith("| CRM | channels | mean mask mri |") and "| crm_latent | 64 |" in table
