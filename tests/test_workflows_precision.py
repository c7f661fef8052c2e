"""Mixed precision (both autocast dtypes on the CPU), the float16 overflow of MDTA, and compiled == eager."""

import pytest
import torch
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from scripts.errors import UserInputError
from scripts.networks import AMIR
from scripts.networks.blocks import MDTA
from scripts.workflows import (
    AmpTrainer,
    AutocastInferer,
    BalancedL1Loss,
    PlainBatch,
    grad_scaler,
    maybe_compile,
    resolve_amp_dtype,
)

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "num_atoms": 4, "atom_dim": 16}


def test_amp_dtype_names_and_defaults():
    assert resolve_amp_dtype(None, "cpu") == torch.bfloat16  # bf16 autocast runs on a CPU
    assert resolve_amp_dtype("float16", "cpu") == torch.float16
    assert resolve_amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserInputError, match="amp_dtype"):
        resolve_amp_dtype("float32", "cpu")
    assert not grad_scaler("cpu", amp=True, amp_dtype="bfloat16").is_enabled()
    assert grad_scaler("cpu", amp=True, amp_dtype="float16").is_enabled()
    assert not grad_scaler("cpu", amp=False, amp_dtype="float16").is_enabled()


class Recorder(torch.nn.Module):
    """A conv whose forward records the type of its input and the dtype it computed in."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.seen: list[tuple[type, torch.dtype]] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append((type(x), y.dtype))
        return y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_inferer_runs_the_network_in_low_precision_and_returns_float32(dtype):
    net = Recorder()
    out = AutocastInferer(amp=True, dtype=dtype)(torch.rand(2, 1, 16, 16), net)
    assert net.seen[-1][1] == dtype and out.dtype == torch.float32
    out = AutocastInferer(amp=False, dtype=dtype)(torch.rand(2, 1, 16, 16), net)
    assert net.seen[-1][1] == torch.float32


def test_mdta_float16_neither_overflows_nor_divides_zero_by_zero():
    # The un-normalised (d x d) product sums H*W terms: a flat 256x256 map overflowed float16's 65504 (inf, then
    # NaN), and an all-zero slice's zero norms, clamped at 1e-12 (0 in float16), gave 0/0. Both were NaN with
    # --amp true on a GPU; CPU autocast reproduces them.
    torch.manual_seed(0)
    block = MDTA(16, 2, bias=False).eval()
    for x in (torch.full((1, 16, 256, 256), 8.0), torch.zeros(1, 16, 64, 64)):
        with torch.no_grad():
            reference = block(x)
            with torch.autocast("cpu", dtype=torch.float16):
                low = block(x).float()
        assert torch.isfinite(low).all()
        torch.testing.assert_close(low, reference, atol=2e-3 * (1 + reference.abs().max().item()), rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amir_restores_an_all_zero_mri_slice_in_both_amp_dtypes(dtype):
    torch.manual_seed(0)
    net = AMIR(**TINY).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = net(torch.zeros(1, 1, 96, 80))
    assert torch.isfinite(out).all()


def one_batch(n=2, size=32):
    image = MetaTensor(torch.rand(n, 1, size, size), meta={"filename_or_obj": "x.nii.gz"})
    label = MetaTensor(torch.rand(n, 1, size, size))
    return {"image": image, "label": label, "task": ["mri"] * n, "id": [f"s#{i}" for i in range(n)]}


@pytest.mark.parametrize("amp_dtype", [None, "bfloat16", "float16"])
def test_amp_trainer_step_plain_tensors_float32_loss_scaler_for_float16_only(amp_dtype):
    torch.manual_seed(0)
    net = Recorder()
    before = net.conv.weight.detach().clone()
    trainer = AmpTrainer(
        device="cpu", max_epochs=1, train_data_loader=[one_batch(), one_batch()], network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2), loss_function=BalancedL1Loss(net),
        amp=amp_dtype is not None, amp_dtype=amp_dtype,
    )  # fmt: skip
    dtypes = {}

    def record(engine):
        dtypes.update({k: engine.state.output[k].dtype for k in ("pred", "loss")})
        dtypes["batch image"] = type(engine.state.batch["image"])  # the metadata stays beside, in the batch

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, record)
    trainer.run()
    assert trainer.grad_scaler.is_enabled() == (amp_dtype == "float16")
    assert [kind for kind, _ in net.seen] == [torch.Tensor, torch.Tensor]  # never a MetaTensor
    expected = {None: torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[amp_dtype]
    assert net.seen[-1][1] == expected
    assert dtypes == {"pred": torch.float32, "loss": torch.float32, "batch image": MetaTensor}
    assert not torch.equal(net.conv.weight, before)  # the optimizer stepped


def test_compiled_and_eager_outputs_agree():
    # "aot_eager" traces the network with TorchDynamo and AOTAutograd as inductor does, without generating C++:
    # inductor compiles this tiny AMIR in about 3 minutes on a 2-core CPU, too long for the suite.
    torch.manual_seed(0)
    net = AMIR(**TINY, moe_dispatch="dense").eval()
    x = torch.rand(2, 1, 32, 32)
    compiled = maybe_compile(net, True, backend="aot_eager")
    assert maybe_compile(net, False) is net
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), atol=1e-5, rtol=1e-5)


def test_evaluator_with_autocast_inferer_gives_float32_predictions():
    net = Recorder()
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=[one_batch()], network=net,
        inferer=AutocastInferer(amp=True, dtype="bfloat16"),
        prepare_batch=PlainBatch(),
    )  # fmt: skip
    evaluator.run()
    assert net.seen[-1] == (torch.Tensor, torch.bfloat16)
    assert evaluator.state.output[0]["pred"].dtype == torch.float32


@pytest.mark.parametrize("name", ["train.json", "evaluate.json", "inference.json"])
def test_the_configs_expose_amp_amp_dtype_and_compile(name):
    from _workflow_data import BUNDLE
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / name))
    assert (parser["amp"], parser["amp_dtype"], parser["compile"]) == (False, None, False)  # off by default
    parser["amp"], parser["amp_dtype"] = True, "float16"
    inferer = parser.get_parsed_content("evaluator#inferer" if name == "inference.json" else "validate#inferer")
    assert isinstance(inferer, AutocastInferer) and inferer.autocast_dtype(torch.device("cpu")) == torch.float16
    if name == "train.json":
        assert parser["ema_decay"] is None and parser["max_nonfinite_steps"] == 10
        assert parser.get_parsed_content("train#grad_scaler").is_enabled()  # float16 gets a gradient scaler
