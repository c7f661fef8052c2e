"""scripts.analysis.RoutingAnalysis end to end on in-memory slices: every file of the report, and its folder rules."""

import csv
import os
import re

import numpy as np
import pytest
import torch
from _workflow_data import dead_pid
from PIL import Image
from scripts.analysis import RoutingAnalysis, spread_per_task
from scripts.atomic import TEMP_TAG, temporary_name
from scripts.errors import UserInputError
from scripts.networks import AMIR, Restormer
from scripts.ownership import MARKER, folder_kind
from scripts.weights import file_sha256

TASKS = ["mri", "ct", "pet"]
TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}
QUICK = {"step_size": 1e-5, "batch_size": 1, "num_batches": 1, "eval_slices": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(AMIR(**TINY, num_atoms=4, atom_dim=16).state_dict(), folder / "amir.pt")
    torch.save(Restormer(**TINY).state_dict(), folder / "restormer.pt")
    return folder


def slices(per_task: int = 4) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for t, task in enumerate(TASKS):
        for k in range(per_task):
            image = (t + 1) / 4 + 0.1 * torch.rand(1, 16, 24, generator=generator)
            items.append({"image": image, "label": image * 0.9, "task": task, "id": f"{task}_{k}"})
    return items


def analysis(weights, out, data=None, **options):
    kwargs = {
        "network": AMIR(**TINY, num_atoms=4, atom_dim=16),
        "ckpt_path": weights / "amir.pt",
        "data": slices() if data is None else data,
        "output_dir": out,
        "restormer": Restormer(**TINY),
        "restormer_ckpt_path": weights / "restormer.pt",
        "interference": QUICK,
        "progress": False,
    }
    return RoutingAnalysis(**{**kwargs, **options})


def test_report_links_every_file_and_each_file_holds_its_quantity(weights, tmp_path):
    out = tmp_path / "analysis"
    report = analysis(weights, out).run()
    assert report == out / "report.md" and folder_kind(out) == "analysis"
    text = report.read_text()
    for name in ("amir.pt", "restormer.pt"):  # the report names the weights it analysed, with their sha256
        assert f"`{weights / name}` (sha256 `{file_sha256(weights / name)}`)" in text
    links = set(re.findall(r"\]\(([^)]+)\)", text))
    assert {"expert_use.png", "instructions.npz", "instruction_embedding.png", "instruction_separability.png",
            "channel_masks.png", "interference_AMIR.png", "interference_Restormer.png"} <= links  # fmt: skip
    for link in links:
        assert (out / link).is_file(), link
    for path in out.iterdir():
        assert TEMP_TAG not in path.name
        assert path.stat().st_mode & 0o777 == 0o644, path.name
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert image.mode == "RGB" and image.width > 100

    with np.load(out / "instructions.npz", allow_pickle=False) as npz:
        assert npz["instruction"].shape == (12, 16)  # one row per slice
        assert list(npz["task"]) == [t for t in TASKS for _ in range(4)]
        assert list(npz["id"]) == [f"{t}_{k}" for t in TASKS for k in range(4)]
    with open(out / "instruction_embedding.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    with open(out / "expert_use.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3 * 4  # SRMs x tasks x experts
    for level in ("srm_level1", "srm_level2", "srm_level3"):
        for task in TASKS:
            total = sum(float(r["fraction"]) for r in rows if r["level"] == level and r["task"] == task)
            assert total == pytest.approx(2.0)  # top-2
    with open(out / "interference.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["AMIR"] * 9 + ["Restormer"] * 9
    assert all(np.isfinite(float(r["relative_change"])) for r in rows)
    with np.load(out / "channel_masks.npz", allow_pickle=False) as npz:
        assert list(npz["tasks"]) == TASKS and npz["crm_latent"].shape == (3, 64)
    assert "Uni-Perceiver-MoE" in text and "| step on \\ loss of | mri | ct | pet |" in text


def test_task_subset_without_restormer_and_rerun_in_place(weights, tmp_path):
    out = tmp_path / "analysis"
    stale = out / f"{temporary_name('report.md', dead_pid())}x1y2.md"
    out.mkdir()
    report = analysis(weights, out, tasks=["ct", "pet"], restormer_ckpt_path=None).run()
    with np.load(out / "instructions.npz", allow_pickle=False) as npz:
        assert sorted(set(npz["task"])) == ["ct", "pet"] and npz["instruction"].shape[0] == 8
    assert not (out / "interference_Restormer.png").exists()
    # a second run reuses its own folder and removes a temporary file a killed run left
    stale.write_text("partial")
    analysis(weights, out, tasks=["ct", "pet"], restormer_ckpt_path=None, interference={"num_batches": 0}).run()
    assert not stale.exists() and "Not measured" in report.read_text()


def test_folders_and_weights_the_analysis_may_not_use(weights, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(UserInputError, match="did not create"):
        analysis(weights, user).run()
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    out = tmp_path / "new"
    with pytest.raises(UserInputError, match="amir.pt: the weights do not fit the network: rin.dictionary has shape"):
        analysis(weights, out, network=AMIR(**TINY)).run()  # 256-long instructions: not the saved network
    with pytest.raises(UserInputError, match="missing.pt: no such weights file"):
        analysis(weights, out, ckpt_path=tmp_path / "missing.pt").run()
    assert not out.exists()  # nothing written on bad input
    with pytest.raises(UserInputError, match="no slice"):
        analysis(weights, out, data=slices()[:4], tasks=["pet"]).run()
    with pytest.raises(UserInputError, match="tasks"):
        analysis(weights, out, tasks=["xray"])
    with pytest.raises(UserInputError, match="step_size > 0"):
        analysis(weights, out, interference={"step_size": -1e-5})
    assert not out.exists() and not (tmp_path / MARKER).exists()


def test_restormer_alone_is_measured_for_interference_only(weights, tmp_path):
    out = tmp_path / "r"
    run = analysis(weights, out, network=Restormer(**TINY), ckpt_path=weights / "restormer.pt",
                   model_name="Restormer", restormer_ckpt_path=None)  # fmt: skip
    text = run.run().read_text()
    assert "no spatial routing modules" in text and "no routing instruction network" in text
    assert (out / "interference_Restormer.png").is_file() and not (out / "instructions.npz").exists()


def test_spread_per_task_keeps_evenly_spaced_slices_in_order():
    items = [{"task": task, "label": f"{task}{k}.nii.gz", "slice": 0, "slice_axis": 2} for task in ("mri", "ct")
             for k in range(10)]  # fmt: skip
    picked = spread_per_task(items, 4)
    assert [i["label"] for i in picked] == [f"{t}{k}.nii.gz" for t in ("mri", "ct") for k in (0, 3, 6, 9)]
    assert len(spread_per_task(items, None)) == 20 and len(spread_per_task(items, 50)) == 20
    with pytest.raises(UserInputError, match="max_per_task"):
        spread_per_task(items, 0)
    assert items[0] == {"task": "mri", "label": "mri0.nii.gz", "slice": 0, "slice_axis": 2}  # input unchanged
    assert os.fspath(picked[0]["label"]) == "mri0.nii.gz"
