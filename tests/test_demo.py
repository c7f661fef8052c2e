"""The demo's evaluation path with the shipped weights, on the test split of the real-image corpus.

Asserted (issue 11's first target): AMIR beats the LQ input and the classical baseline (tuned on the validation split)
in PSNR and SSIM on each task, and its average PSNR is at least 1 dB above the classical baseline's. Evaluated as the
demo does, after the same-size Restormer, whose run alone computes the reference rows.
"""

import csv
from collections import defaultdict

from _workflow_data import demo_dir
from scripts.demo import BUNDLE_ROOT, RESTORMER_DEMO, evaluate
from scripts.workflows import ClassicalBaseline

TASKS = ("mri", "ct", "pet")


def mean_metric(rows, method, task, name):
    values = [float(r[name]) for r in rows if r["method"] == method and r["task"] == task]
    assert values, (method, task)
    return sum(values) / len(values)


def test_shipped_weights_beat_lq_and_the_classical_baseline_on_every_task_and_by_1_db_on_average(tmp_path, monkeypatch):
    weights = BUNDLE_ROOT / "models" / "model.pt"
    restormer = RESTORMER_DEMO[1]
    for path in (weights, restormer):
        assert path.is_file() and path.stat().st_size < 25 * 2**20  # the model zoo's limit
    built = []
    init = ClassicalBaseline.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(ClassicalBaseline, "__init__", counting_init)
    models = [RESTORMER_DEMO, ("AMIR", weights, None)]
    table = evaluate(tmp_path, demo_dir(), models, num_figures=0)
    assert len(built) == 1  # the classical baseline is tuned once, in the first run
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    counts = defaultdict(int)
    for row in rows:
        counts[row["method"], row["task"]] += 1
    for task in TASKS:
        assert counts["AMIR", task] == counts["LQ input", task] == counts["Classical baseline", task] > 0
        assert counts[RESTORMER_DEMO[0], task] == counts["AMIR", task]
        for reference in ("LQ input", "Classical baseline"):
            for metric in ("psnr", "ssim"):
                amir, other = mean_metric(rows, "AMIR", task, metric), mean_metric(rows, reference, task, metric)
                assert amir > other, (task, reference, metric, amir, other)
    average = {m: sum(mean_metric(rows, m, t, "psnr") for t in TASKS) / 3 for m in ("AMIR", "Classical baseline")}
    assert average["AMIR"] >= average["Classical baseline"] + 1.0, average
    assert table.splitlines()[-1].startswith("| AMIR |")
    assert not list(tmp_path.glob("figures/*.png"))
