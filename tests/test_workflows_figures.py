"""Figures LQ | restored | HQ | error (PNG) and the TensorBoard triplets of the validation."""

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image
from scripts.workflows import TaskTripletsHandler, display_window, restoration_panel, save_png


def test_panel_layout_and_windows(tmp_path):
    hq = torch.linspace(-200, 300, 32 * 24).reshape(1, 32, 24)
    panel = restoration_panel(hq + 50, hq, hq, "ct")
    assert panel.dtype == np.uint8 and panel.shape == (32 + 14, 4 * 24 + 3 * 2)
    body = panel[14:]
    assert body[:, 2 * 26 : 2 * 26 + 24].min() == 0 and body[:, 2 * 26 : 2 * 26 + 24].max() == 255  # CT window
    assert body[:, 3 * 26 :].max() == 0  # restored == HQ: no error
    assert display_window(hq, "ct") == (-160.0, 240.0)
    assert display_window(torch.full((4, 4), 3.0), "pet") == (3.0, 4.0)
    assert restoration_panel(hq, hq, hq, "mri", with_error=False).shape[1] == 3 * 24 + 2 * 2
    with pytest.raises(ValueError, match="differ in shape"):
        restoration_panel(hq, hq[:, :16], hq, "mri")
    save_png(panel, tmp_path / "sub" / "fig.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "fig.png")), panel)


def test_triplets_go_to_tensorboard_once_per_task(tmp_path):
    logged = []

    class Writer:
        def add_image(self, tag, image, step, dataformats):
            logged.append((tag, image.shape, step))

        def flush(self):
            pass

    x = torch.rand(1, 20, 16)
    outputs = iter([("mri", x), ("mri", x), ("pet", x[:, :18])])

    def step(engine, batch):
        task, image = next(outputs)
        engine.state.batch = [{"task": task}]  # as a decollated MONAI evaluator batch
        return [{"image": image, "pred": image, "label": image}]

    evaluator = Engine(step)
    handler = TaskTripletsHandler(summary_writer=Writer(), global_step_transform=lambda epoch: epoch * 100)
    handler.attach(evaluator)
    evaluator.run([0, 1, 2], max_epochs=1)
    assert logged == [("val_mri", (1, 20 + 14, 3 * 16 + 4), 100), ("val_pet", (1, 18 + 14, 3 * 16 + 4), 100)]
