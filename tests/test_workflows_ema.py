"""EMA of the weights: the average, off by default, saved and resumed, validated by the config, equal across ranks."""

import logging
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _workflow_data import BUNDLE, bundle_command, demo_dir, tiny_network_config
from monai.data import MetaTensor
from scripts.workflows import AmpTrainer, NonFiniteGuard, ResumableCheckpoint, WeightEMA


def test_the_average_is_exponential_and_buffers_are_copied():
    net = torch.nn.BatchNorm1d(2)
    ema = WeightEMA(net, decay=0.75)
    with torch.no_grad():
        net.weight.fill_(3.0)  # the average starts at 1.0 (a copy of the weights)
        net.running_mean.fill_(5.0)
    ema.update()
    torch.testing.assert_close(ema.model.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    torch.testing.assert_close(ema.model.running_mean, torch.full((2,), 5.0))
    assert ema.model is not net and not any(p.requires_grad for p in ema.model.parameters())
    assert ema.num_updates == 1


def test_off_by_default_the_network_is_the_model():
    net = torch.nn.Linear(2, 2)
    wrapped = torch.nn.Module()
    wrapped.module = net  # as DistributedDataParallel holds it
    ema = WeightEMA(wrapped)
    assert not ema.enabled and ema.model is net and ema.state_dict() == {}
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(net, decay=1.0)


def batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": MetaTensor(torch.rand(2, 1, 8, 8, generator=g)), "label": torch.rand(2, 1, 8, 8, generator=g)}
            for _ in range(n)]  # fmt: skip


def run_training(tmp_path, epochs, resume):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    ema = WeightEMA(net, decay=0.9)
    checkpoint = ResumableCheckpoint(tmp_path, {"model": net, "optimizer": optimizer, "ema": ema}, resume=resume)
    trainer = AmpTrainer(
        device="cpu", max_epochs=epochs, epoch_length=3, train_data_loader=batches(), network=net,
        optimizer=optimizer, loss_function=torch.nn.L1Loss(), train_handlers=[ema, checkpoint],
    )  # fmt: skip
    trainer.run()
    return net, ema


def test_saved_with_the_training_state_and_resumed(tmp_path):
    _, saved = run_training(tmp_path, epochs=1, resume=False)
    stored = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["ema"]
    assert stored["num_updates"] == 3 and stored["decay"] == 0.9
    torch.testing.assert_close(stored["weights"]["weight"], saved.model.weight)
    net, resumed = run_training(tmp_path, epochs=2, resume=True)
    assert resumed.num_updates == 6  # continued from 3, not restarted
    _, straight = run_training(tmp_path / "straight", epochs=2, resume=False)
    torch.testing.assert_close(resumed.model.weight, straight.model.weight)  # as if never stopped
    assert not torch.equal(resumed.model.weight, net.weight)


def test_a_checkpoint_without_average_restarts_it_from_the_weights(caplog):
    net = torch.nn.Linear(2, 2)
    ema = WeightEMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.add_(1.0)
    with caplog.at_level(logging.WARNING):
        ema.load_state_dict({})
    assert "no EMA weights" in caplog.text
    ema.update()
    torch.testing.assert_close(ema.model.weight, net.weight)  # a copy, not an average with the stale start


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = torch.nn.parallel.DistributedDataParallel(torch.nn.Conv2d(1, 1, 3, padding=1))
        ema = WeightEMA(net, decay=0.8)
        data = batches(3, seed=rank)  # each rank its own data, as the sampler gives
        if rank == 1:
            data[1]["image"][0, 0, 0, 0] = float("nan")  # one rank's NaN: every rank must skip that step
        guard = NonFiniteGuard(max_nonfinite_steps=5)
        trainer = AmpTrainer(
            device="cpu", max_epochs=1, epoch_length=3, train_data_loader=data, network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.L1Loss(),
            train_handlers=[ema, guard],
        )  # fmt: skip
        trainer.run()
        flat = torch.cat([p.detach().flatten() for p in ema.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        torch.save({"ema": gathered, "count": guard.count}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_hold_the_same_average_and_skip_the_same_steps(tmp_path):
    # fork: the workers need not import torch and MONAI again
    args = (2, str(tmp_path / "init"), str(tmp_path / "out"))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        result = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert result["count"] == 1  # rank 0's loss was finite, yet its gradients held rank 1's NaN
        torch.testing.assert_close(result["ema"][0], result["ema"][1], rtol=0, atol=0)
        assert torch.isfinite(result["ema"][0]).all()


def test_the_training_config_validates_and_saves_the_average(tmp_path):
    network = tiny_network_config(tmp_path / "tiny.json")
    out = tmp_path / "run"
    options = [
        "--config_file", "configs/train.json", "--dataset_dir", str(demo_dir()), "--network_def", network,
        "--batch_size", "2", "--patch_size", "[32,32]", "--val_interval", "2", "--num_val_slices", "1",
        "--num_workers", "0", "--output_dir", str(out), "--ema_decay", "0.9", "--amp", "true",
        "--vary_degradations", "False",  # the average is tested, not the drawn degradations (their noise banks)
    ]  # fmt: skip
    result = subprocess.run(
        bundle_command("training", *options, "--num_iterations", "2"),
        cwd=BUNDLE, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "val_psnr_mri" in result.stdout and "non-finite" not in result.stdout
    checkpoint = torch.load(out / "models" / "checkpoint_last.pt", weights_only=True)
    assert checkpoint["ema"]["num_updates"] == 2 and checkpoint["grad_scaler"] == {}  # bf16: no scaler
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    averaged, trained = checkpoint["ema"]["weights"], checkpoint["model"]
    assert all(torch.equal(best[k], averaged[k]) for k in best)  # validated and saved: the average
    assert any(not torch.equal(best[k], trained[k]) for k in best)
