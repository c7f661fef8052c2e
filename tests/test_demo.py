"""The demo's evaluation path with the shipped weights: they must restore, i.e. beat the LQ input on every task."""

import csv
from collections import defaultdict

from _workflow_data import demo_dir
from scripts.demo import BUNDLE_ROOT, evaluate


def mean_metric(rows, method, task, name):
    values = [float(r[name]) for r in rows if r["method"] == method and r["task"] == task]
    assert values, (method, task)
    return sum(values) / len(values)


def test_shipped_weights_beat_lq_on_every_task(tmp_path):
    weights = BUNDLE_ROOT / "models" / "model.pt"
    assert weights.is_file() and weights.stat().st_size < 25 * 2**20  # the model zoo's limit
    table = evaluate(tmp_path, demo_dir(), [("AMIR", weights, None)], num_figures=0)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    counts = defaultdict(int)
    for row in rows:
        counts[row["method"], row["task"]] += 1
    for task in ("mri", "ct", "pet"):
        assert counts["AMIR", task] == counts["LQ input", task] == counts["Classical baseline", task] > 0
        assert mean_metric(rows, "AMIR", task, "psnr") > mean_metric(rows, "LQ input", task, "psnr"), task
        assert mean_metric(rows, "AMIR", task, "ssim") > mean_metric(rows, "LQ input", task, "ssim"), task
    assert table.splitlines()[-1].startswith("| AMIR |")
    assert not list(tmp_path.glob("figures/*.png"))
