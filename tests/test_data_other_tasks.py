"""The tasks a training's data lacks: their items from the demo set or a folder, labelled; the checked options."""

from __future__ import annotations

import numpy as np
import pytest
from _workflow_data import demo_dir, write_nifti
from scripts.data import DataError, build_datalist
from scripts.data.other_tasks import (
    SOURCE_KEY,
    missing_tasks,
    mix_share,
    other_source,
    other_tasks_datalist,
    task_sources,
)
from scripts.errors import UserInputError

MRI_ONLY = [{"task": "mri", "label": "a.nii.gz"}]


def test_the_tasks_the_data_lacks_come_from_the_demo_split_labelled():
    demo_dir()
    items = other_tasks_datalist(MRI_ONLY, "demo", "validation")
    expected = build_datalist("demo", None, ["ct", "pet"], "validation")
    assert items == [{**item, SOURCE_KEY: "demo"} for item in expected] and {i["task"] for i in items} == {"ct", "pet"}
    assert {i["task"] for i in other_tasks_datalist(MRI_ONLY, "demo", "train")} == {"ct", "pet"}
    assert missing_tasks([{"label": "a"}], default_task="ct") == ["mri", "pet"]  # a Label item: the modality's task
    for off in (None, False, "off", "None", "null"):
        assert other_tasks_datalist(MRI_ONLY, off) == []
    every_task = [{"task": t} for t in ("mri", "ct", "pet")]
    assert other_tasks_datalist(every_task, "demo") == []


def test_a_folder_gives_the_lacking_tasks_it_holds_and_a_folder_without_any_is_one_line(tmp_path):
    for i in range(3):
        write_nifti(tmp_path / "site" / "CT" / f"v{i}.nii.gz", np.zeros((20, 20, 2)), np.eye(4))
    assert other_source(tmp_path / "site") == str(tmp_path / "site")
    items = other_tasks_datalist(MRI_ONLY, tmp_path / "site", "validation")
    assert items and all(i["task"] == "ct" and i[SOURCE_KEY] == "other" for i in items)
    assert task_sources(MRI_ONLY + items) == {"mri": None, "ct": "other"}
    with pytest.raises(DataError, match=r"holds no sub-folder of the tasks the training data lacks \(mri, pet\)"):
        other_tasks_datalist([{"task": "ct"}], tmp_path / "site")
    (tmp_path / "plain" / "images").mkdir(parents=True)
    with pytest.raises(UserInputError, match="neither 'demo' nor a folder data set"):
        other_source(tmp_path / "plain")  # no task sub-folder: refused before the run starts
    with pytest.raises(ValueError, match="several data sets"):
        task_sources([{"task": "ct"}, {"task": "ct", SOURCE_KEY: "demo"}])


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5, "abc", float("nan")])
def test_a_share_outside_0_to_1_is_refused(share):
    with pytest.raises(UserInputError, match=r"must be a number in \[0, 1\)") as raised:
        mix_share(share)
    assert "\n" not in str(raised.value)


def test_shares_and_sources_that_are_used():
    assert mix_share(None) == 0.0 and mix_share("0.25") == 0.25 and mix_share(0) == 0.0
    assert other_source("demo") == "demo" and other_source("OFF") is None
    with pytest.raises(UserInputError, match="neither 'demo' nor a folder data set"):
        other_source("/no/such/folder")
