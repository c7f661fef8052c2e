"""The non-finite guard: steps skipped and named, validations never a best model, training stopped after N."""

import logging
import math

import pytest
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import ValidationHandler
from scripts.workflows import (
    AmpTrainer,
    AutocastInferer,
    BestCheckpoint,
    NonFiniteError,
    NonFiniteGuard,
    PlainBatch,
    RestorationMetrics,
    nonfinite_items,
    restoration_metrics,
)

POISON = 100.0  # an input holding this value makes Poisonable's output NaN


class Poisonable(torch.nn.Module):
    """A 1x1 convolution whose output is NaN for the items whose input holds ``POISON``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        poisoned = (x == POISON).flatten(1).any(dim=1).view(-1, 1, 1, 1)
        return torch.where(poisoned, torch.full_like(x, math.nan), self.conv(x))


def batch(poisoned=(), n=2, task="mri", prefix="s"):
    image = torch.rand(n, 1, 16, 16)
    for i in poisoned:
        image[i, 0, 0, 0] = POISON
    return {
        "image": MetaTensor(image),
        "label": MetaTensor(torch.rand(n, 1, 16, 16)),
        "task": [task] * n,
        "id": [f"{prefix}#{i}" for i in range(n)],
    }


def trainer_for(net, batches, guard, amp_dtype=None, handlers=()):
    return AmpTrainer(
        device="cpu", max_epochs=1, epoch_length=len(batches), train_data_loader=batches, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.L1Loss(),
        amp=amp_dtype is not None, amp_dtype=amp_dtype, train_handlers=[*handlers, guard],
    )  # fmt: skip


def test_nonfinite_items_names_task_and_slice():
    pred = torch.zeros(3, 1, 2, 2)
    pred[1, 0, 0, 0] = math.inf
    assert nonfinite_items(pred, {"task": ["ct", "mri", "pet"], "id": ["a", "b", "c"]}) == ["mri slice b"]
    assert nonfinite_items(pred, None) == ["#1 slice #1"]


@pytest.mark.parametrize("amp_dtype", [None, "float16"])  # float16: the gradient scaler skips the step itself
def test_a_nonfinite_step_is_skipped_and_logged(amp_dtype, caplog):
    torch.manual_seed(0)
    net = Poisonable()
    weights = []
    guard = NonFiniteGuard(max_nonfinite_steps=3)
    trainer = trainer_for(net, [batch(), batch(poisoned=[1], prefix="bad"), batch()], guard, amp_dtype)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: weights.append(net.conv.weight.detach().clone()))
    with caplog.at_level(logging.ERROR):
        trainer.run()
    assert guard.count == 1
    torch.testing.assert_close(weights[1], weights[0])  # the poisoned step left the weights alone
    assert not torch.equal(weights[2], weights[1])  # the next one trained
    assert all(torch.isfinite(w).all() for w in weights)
    assert "training iteration 2: non-finite loss nan" in caplog.text
    assert "non-finite predictions for mri slice bad#1" in caplog.text


def test_training_stops_after_max_nonfinite_steps():
    guard = NonFiniteGuard(max_nonfinite_steps=1)
    trainer = trainer_for(Poisonable(), [batch(poisoned=[0]) for _ in range(3)], guard)
    with pytest.raises(NonFiniteError, match="max_nonfinite_steps 1; the last: training iteration 2"):
        trainer.run()
    assert trainer.state.iteration == 2


def test_a_nonfinite_validation_is_named_and_never_the_best_model(tmp_path, caplog):
    net = Poisonable()
    best = BestCheckpoint(tmp_path, net)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=[batch(poisoned=[0], n=1, task="ct", prefix="val")], network=net,
        inferer=AutocastInferer(), prepare_batch=PlainBatch(),
        key_val_metric={"val_psnr": RestorationMetrics(tasks=("ct",))}, val_handlers=[best],
    )  # fmt: skip
    guard = NonFiniteGuard(max_nonfinite_steps=5, evaluator=evaluator)
    validation = ValidationHandler(interval=1, validator=evaluator, epoch_level=False)
    trainer = trainer_for(net, [batch(), batch()], guard, handlers=[validation])
    with caplog.at_level(logging.ERROR):
        trainer.run()
    assert math.isnan(evaluator.state.metrics["val_psnr"])  # NaN, no longer an infinite PSNR
    assert not (tmp_path / "model.pt").exists() and best.best_metric == -math.inf
    assert guard.count == 2  # one per validation
    assert "validation after iteration 1: non-finite prediction (NaN or inf) for ct slice val#0" in caplog.text
    assert "ct slice val#0: non-finite metrics" in caplog.text
    assert "val_psnr is nan: not a best model" in caplog.text


def test_metrics_of_a_nan_prediction_are_nan_not_infinite():
    target = torch.rand(1, 32, 32) * 100
    pred = target.clone()
    pred[0, 3, 3] = math.nan
    values = restoration_metrics(pred, target, "ct")
    assert all(math.isnan(values[k]) for k in ("psnr", "ssim", "rmse"))
    assert restoration_metrics(target, target, "ct")["psnr"] == math.inf  # an exact restoration
