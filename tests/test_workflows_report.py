"""The evaluation report: per-slice CSV, Table 1-shaped Markdown (merged across runs), figures."""

import csv

import pytest
import torch
from ignite.engine import Engine
from scripts.workflows import RestorationReport, lq_input, markdown_table, restoration_metrics


def run_report(report: RestorationReport, slices):
    """Feed (task, id, lq, pred, hq) slices to ``report`` as a MONAI evaluator's decollated batches."""
    feed = iter(slices)

    def step(engine, _):
        task, slice_id, lq, pred, hq = next(feed)
        engine.state.batch = [{"task": task, "id": slice_id}]
        return [{"image": lq, "pred": pred, "label": hq}]

    engine = Engine(step)
    report.attach(engine)
    engine.run(range(len(slices)), max_epochs=1)


def make_slices():
    torch.manual_seed(0)
    out = []
    for task, scale, n in (("mri", 3000.0, 3), ("ct", 300.0, 2)):
        for i in range(n):
            hq = torch.rand(1, 24, 20) * scale
            out.append((task, f"{task}{i}", hq + 0.2 * scale * torch.rand(1, 24, 20), hq + 0.05 * scale, hq))
    return out


def test_csv_table_and_figures(tmp_path):
    slices = make_slices()
    report = RestorationReport(tmp_path, "AMIR", {"LQ input": lq_input}, num_figures=2, tasks=("mri", "ct", "pet"))
    run_report(report, slices)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["task"], r["id"]) for r in rows[:2]] == [
        ("LQ input", "mri", "mri0"),
        ("LQ input", "mri", "mri1"),
    ]
    assert len(rows) == 2 * len(slices)
    amir_ct0 = next(r for r in rows if r["method"] == "AMIR" and r["id"] == "ct0")
    expected = restoration_metrics(slices[3][3], slices[3][4], "ct")
    assert float(amir_ct0["psnr"]) == pytest.approx(expected["psnr"])
    table = (tmp_path / "metrics.md").read_text()
    lines = table.splitlines()
    assert lines[0].startswith("| method | MRI SR PSNR | MRI SR SSIM | MRI SR RMSE | CT denoising PSNR")
    assert "PET" not in lines[0] and lines[0].endswith("Average PSNR | Average SSIM |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| LQ input", "| AMIR"]
    mri_psnr = sum(restoration_metrics(s[3], s[4], "mri")["psnr"] for s in slices[:3]) / 3
    assert lines[3].split(" | ")[1] == f"{mri_psnr:.4f}"
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["AMIR_ct_0.png", "AMIR_ct_1.png", "AMIR_mri_0.png", "AMIR_mri_1.png"]


def test_runs_into_one_folder_accumulate_models(tmp_path):
    slices = make_slices()
    run_report(RestorationReport(tmp_path, "Restormer", {"LQ input": lq_input}, num_figures=0), slices)
    run_report(RestorationReport(tmp_path, "AMIR", {"LQ input": lq_input}, num_figures=0), slices)
    run_report(RestorationReport(tmp_path, "AMIR", {"LQ input": lq_input}, num_figures=0), slices)  # replaced
    methods = [line.split(" | ")[0][2:] for line in (tmp_path / "metrics.md").read_text().splitlines()[2:]]
    assert methods == ["LQ input", "Restormer", "AMIR"]
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * len(slices)
    assert not (tmp_path / "figures").exists()


def test_markdown_average_needs_every_task():
    rows = [{"method": "A", "task": "mri", "psnr": 30.0, "ssim": 0.9, "rmse": 20.0}]
    rows += [{"method": "B", "task": "ct", "psnr": 20.0, "ssim": 0.5, "rmse": 9.0}]
    lines = markdown_table(rows, ("mri", "ct")).splitlines()
    assert lines[2] == "| A | 30.0000 | 0.9000 | 20.0000 | - | - | - | - | - |"


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="also the name"):
        RestorationReport(tmp_path, "LQ input", {"LQ input": lq_input})
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")
    report = RestorationReport(tmp_path, "AMIR")
    with pytest.raises(ValueError, match="not a metrics file"):
        run_report(report, make_slices()[:1])
    with pytest.raises(RuntimeError, match="no slice"):
        RestorationReport(tmp_path / "new").write()


def test_table_header_names_each_networks_weights_and_sha256(tmp_path):
    import hashlib

    slices = make_slices()
    weights = {name: tmp_path / f"{name}.pt" for name in ("Restormer", "AMIR")}
    for name, path in weights.items():
        path.write_bytes(name.encode())
    out = tmp_path / "eval"
    for name in ("Restormer", "AMIR"):
        run_report(RestorationReport(out, name, {"LQ input": lq_input}, num_figures=0, weights=weights[name]), slices)
    lines = (out / "metrics.md").read_text().splitlines()
    for line, name in zip(lines[:2], ("Restormer", "AMIR"), strict=True):
        digest = hashlib.sha256(name.encode()).hexdigest()
        assert line.strip() == f"Weights of {name}: `{weights[name].resolve()}`, sha256 `{digest}`"
    assert lines[2] == "" and lines[3].startswith("| method |")


def test_a_training_runs_folder_is_refused(tmp_path):
    from scripts.errors import UserInputError
    from scripts.ownership import mark_folder

    mark_folder(tmp_path, "run")
    with pytest.raises(UserInputError, match="is a training run's folder"):
        RestorationReport(tmp_path, "AMIR")
    assert [p.name for p in tmp_path.iterdir()] == [".amir-bundle.json"]
