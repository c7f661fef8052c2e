"""The run's validation record: each validation's metrics and the data each task was validated on."""

from __future__ import annotations

import json
import logging

from ignite.engine import Engine
from scripts.workflows.validation_record import ValidationRecord


def validate(record: ValidationRecord, epoch: int, metrics: dict) -> None:
    """The record's handlers, called as the evaluator of the trainer's epoch ``epoch`` calls them."""
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.metrics = epoch, metrics
    record.log_sources()
    record(engine)


def test_each_validation_is_recorded_with_its_sources_and_a_resume_keeps_the_earlier_ones(tmp_path, caplog):
    path = tmp_path / "validation.json"
    sources = {"mri": None, "ct": "demo", "pet": "demo"}
    step = lambda epoch: 10 * epoch  # noqa: E731
    first = ValidationRecord(path, sources, "folder", step)
    with caplog.at_level(logging.INFO, logger="scripts.workflows.validation_record"):
        validate(first, 1, {"val_psnr": 30.0, "demo_val_psnr_ct": 25.0, "flag": True, "table": [1, 2]})
        validate(first, 2, {"val_psnr": 31.0, "demo_val_psnr_ct": 24.0})
    logged = [r.getMessage() for r in caplog.records if "Validation data per task" in r.getMessage()]
    assert logged == [
        "Validation data per task: mri: folder (val_*_mri); ct: demo (demo_val_*_ct); pet: demo (demo_val_*_pet). "
        "Key metric val_psnr: mean PSNR of mri (the training data's tasks); chooses model.pt."
    ]
    resumed = ValidationRecord(path, sources, "folder", step)  # a resume validates iteration 20 again, then 30
    validate(resumed, 2, {"val_psnr": 32.0})
    validate(resumed, 3, {"val_psnr": 33.0})
    record = json.loads(path.read_text())
    assert record["sources"]["tasks"]["ct"] == {"data": "demo", "split": "validation", "metrics": "demo_val_*_ct"}
    assert [(v["iteration"], v["metrics"]["val_psnr"]) for v in record["validations"]] == [
        (10, 30.0),
        (20, 32.0),
        (30, 33.0),
    ]
    assert record["validations"][0]["metrics"] == {"val_psnr": 30.0, "demo_val_psnr_ct": 25.0}  # scalars only
