"""Plain tensors into the network: PlainBatch on the loader's MetaTensor batches."""

import pytest
import torch
from _workflow_data import demo_dir
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from scripts.data import LoadSlicePaird, build_datalist, make_dataset
from scripts.transforms import IntensityWindowd
from scripts.workflows import PlainBatch, plain_tensor


def test_plain_tensor_drops_the_metadata_but_shares_the_data():
    image = MetaTensor(torch.rand(1, 4, 4), meta={"filename_or_obj": "a.nii.gz"})
    plain = plain_tensor(image, "cpu")
    assert type(plain) is torch.Tensor
    assert plain.data_ptr() == image.data_ptr()  # no copy on the same device
    assert plain_tensor(image, dtype=torch.float64).dtype == torch.float64


def test_plain_batch_of_the_training_loader():
    items = build_datalist("demo", demo_dir(), split="validation")[:2]
    dataset = make_dataset(items, [LoadSlicePaird(), IntensityWindowd(["image", "label"])])
    batch = next(iter(DataLoader(dataset, batch_size=1)))
    assert isinstance(batch["image"], MetaTensor)  # what MONAI's loaders give
    image, label = PlainBatch()(batch, "cpu", non_blocking=True)
    assert type(image) is torch.Tensor and type(label) is torch.Tensor
    torch.testing.assert_close(image, batch["image"].as_tensor())
    assert isinstance(batch["image"], MetaTensor) and batch["id"]  # the batch itself keeps its metadata


def test_plain_batch_without_label_and_without_image():
    image, label = PlainBatch()({"image": MetaTensor(torch.zeros(1, 1, 4, 4))})
    assert type(image) is torch.Tensor and label is None
    with pytest.raises(KeyError, match="'image'"):
        PlainBatch()({"label": torch.zeros(1)})


def test_the_evaluator_network_gets_plain_tensors():
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(type(x))
            return x * 2

    batch = {"image": MetaTensor(torch.rand(2, 1, 8, 8)), "label": MetaTensor(torch.rand(2, 1, 8, 8))}
    SupervisedEvaluator(device="cpu", val_data_loader=[batch], network=Net(), prepare_batch=PlainBatch()).run()
    assert seen == [torch.Tensor]
