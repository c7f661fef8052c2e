"""Evaluation as the model zoo runs it: ``multi_gpu_evaluate.json`` with torchrun (gloo on the CPU, two ranks each
evaluating a shard, rows gathered, rank 0 writing the report) and the ``[train.json, evaluate.json]`` stack."""

import csv
import os
import re
import subprocess
import sys

import pytest
import torch
from _workflow_data import BUNDLE, bundle_command, demo_dir, identity_weights, tiny_network_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> list[str]:
    """A tiny network (the identity) and the tests' demo set (a limited one would be rebuilt in full by the first
    run: evaluate.json asks for all of it)."""
    tmp = tmp_path_factory.mktemp("eval")
    identity_weights(tmp / "identity.pt")
    values = {
        "dataset_dir": str(demo_dir()),
        "network_def": tiny_network_config(tmp / "tiny.json"),
        "ckpt_path": str(tmp / "identity.pt"),
        "num_workers": "0",
        "num_figures": "1",
        "num_baseline_slices": "1",
    }
    return [text for key, value in values.items() for text in (f"--{key}", value)]


def rows(folder) -> list[dict]:
    with (folder / "metrics.csv").open(newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: (r["method"], r["task"], r["id"]))


@pytest.fixture(scope="module")
def single(options, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "report"
    command = bundle_command("--config_file", "configs/evaluate.json", *options, "--output_dir", str(out))
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_multi_gpu_evaluate_shards_the_data_and_rank_0_reports_all_of_it(options, single, tmp_path):
    out = tmp_path / "report"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/evaluate.json','configs/multi_gpu_evaluate.json']",
        *options, "--output_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    n = len(rows(single)) // 3  # test slices (a row per slice for each of LQ input, classical baseline, AMIR)
    # each rank's progress bar counts its own shard ("[k/total]"); the two bars share stderr and may interleave, so
    # the totals are read from every update rather than from one intact final line
    totals = {int(total) for total in re.findall(r"\[\d+/(\d+)\]", log)}
    assert n > 2 and n not in totals  # no rank evaluates all slices: ranks take every other one
    assert {(n + 1) // 2, n // 2} <= totals, sorted(totals)
    assert rows(out) == rows(single)  # every slice once, gathered: the single-process rows
    assert (out / "metrics.md").read_text() == (single / "metrics.md").read_text()
    assert log.count("Evaluation report in") == 1  # rank 0 alone writes it
    assert sorted(p.name for p in (out / "figures").iterdir())  # rank 0's figures, no clash between ranks


def test_train_and_evaluate_stack_evaluates(options, single, tmp_path):
    """The zoo's ``--config_file "['configs/train.json','configs/evaluate.json']"``: evaluate.json's run."""
    out = tmp_path / "report"
    stack = "['configs/train.json','configs/evaluate.json']"
    command = bundle_command("--config_file", stack, *options, "--output_dir", str(out))
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert rows(out) == rows(single)
