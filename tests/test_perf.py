"""The speed switches of stica.perf on the CPU: a compiled trunk, channels_last_3d and activation
checkpointing give the losses and gradients of the plain eager trunk; cuDNN autotuning yields to
determinism; the loader options and the throughput meter fall back cleanly without CUDA."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from stica import perf
from stica.config import ConfigError, ModelConfig, PretrainConfig
from stica.determinism import deterministic_mode
from stica.models.stica import build_model
from stica.train.pretrain import StepComputer

CPU = torch.device("cpu")
# the tiny profile's model and crops (tests/conftest.py): a real STiCA step in well under a second
TINY = PretrainConfig(
    batch_size=4,
    num_frames=8,
    model=ModelConfig(width=4, head_hidden=16, embed_dim=8, transformer_heads=2),
    crops=dataclasses.replace(PretrainConfig().crops, space_medium_size=1, time_medium=0),
    augment=dataclasses.replace(
        PretrainConfig().augment, crop_size=32, small_crop_size=16, eval_short_side=32
    ),
)


def _batch(config: PretrainConfig, batch: int = 4):
    gen = torch.Generator().manual_seed(0)
    side = config.augment.eval_short_side
    frames = torch.randint(
        0, 256, (batch, config.num_frames, side, side * 4 // 3, 3), generator=gen
    )
    samples = round(config.num_frames / 10 * config.audio.sample_rate)
    return frames.to(torch.uint8), torch.randn(batch, samples, generator=gen) * 0.1


def _step(config: PretrainConfig, **switches):
    """Losses, parameter gradients and BatchNorm buffers of one training step of a fresh model
    (same init) with the trunk configured by ``switches`` (stica.perf.configure_trunk)."""
    torch.manual_seed(0)
    model = build_model(config.model)
    perf.configure_trunk(model.video_trunk, CPU, **switches)
    model.train()
    frames, audio = _batch(config)
    losses = StepComputer(config, model, CPU)(frames, audio, torch.Generator().manual_seed(1))
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    scalars = {k: float(losses[k].detach()) for k in ("loss", "loss_va", "loss_vv")}
    return scalars, grads, buffers, model


def _assert_close(a, b, rel=1e-3):
    """Equal up to float32 rounding of reordered sums (another conv kernel or a fused graph
    sums in another order, and BatchNorm's statistics amplify it): every loss to 1e-4 relative,
    every gradient and buffer to ``rel`` of its norm."""
    losses_a, grads_a, buffers_a, _ = a
    losses_b, grads_b, buffers_b, _ = b
    assert losses_b == pytest.approx(losses_a, rel=1e-4)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 20
    for name, g in [*grads_a.items(), *buffers_a.items()]:
        other = grads_b.get(name, buffers_b.get(name))
        error = (other.double() - g.double()).norm()
        # (a few gradients are zero in exact arithmetic, e.g. the attention keys' bias: noise)
        assert error <= rel * g.double().norm() + 1e-6, f"{name}: {error} vs {g.norm()}"


@pytest.fixture(scope="module")
def eager():
    return _step(TINY)


def test_channels_last_gives_the_contiguous_losses_and_gradients(eager):
    got = _step(TINY, channels_last="on")
    model = got[3]
    conv = next(m for m in model.video_trunk.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not conv.weight.is_contiguous()  # really the other layout
    assert model.video_trunk.channels_last
    _assert_close(eager, got)
    # the map leaves the trunk in the default layout, whatever the trunk's
    fmap = model.video_map(torch.randn(2, 3, 8, 32, 32))
    assert fmap.is_contiguous()


def test_compiled_trunk_gives_the_eager_losses_and_gradients(eager):
    """aot_eager traces the trunk with dynamo and AOT autograd as inductor does (graph capture,
    functionalised forward and backward) without generating C++ kernels (see the inductor test)."""
    torch._dynamo.reset()
    got = _step(TINY, compile="on", backend="aot_eager")
    trunk = got[3].video_trunk
    assert trunk._compiled_call_impl is not None  # compiled in place ...
    assert "_orig_mod" not in "".join(got[3].state_dict())  # ... with the checkpoint's keys
    _assert_close(eager, got)


def test_activation_checkpointing_runs_the_trunk_eager():
    model = build_model(TINY.model)
    applied = perf.configure_trunk(model.video_trunk, "cuda", "auto", activation_checkpointing=True)
    assert applied["activation_checkpointing"] and not applied["compile"]
    assert model.video_trunk._compiled_call_impl is None
    with pytest.raises(ConfigError, match="pretrain.compile.*activation_checkpointing"):
        dataclasses.replace(TINY, compile="on", activation_checkpointing=True)


@pytest.mark.skipif(
    not os.environ.get("STICA_TEST_INDUCTOR"),
    reason="inductor compiles the trunk's forward and backward in about a minute on a 2-core "
    "CPU (C++ codegen): set STICA_TEST_INDUCTOR=1 to run it; the aot_eager tests cover the "
    "compiled code path",
)
def test_inductor_compiled_trunk_gives_the_eager_losses_and_gradients(eager):
    torch._dynamo.reset()
    _assert_close(eager, _step(TINY, compile="on"))


def test_activation_checkpointing_gives_the_same_gradients_and_batchnorm_stats(eager):
    """Recomputing each stage in the backward changes neither the gradients nor BatchNorm's
    running statistics and batch counter (the recomputation does not update them again)."""
    got = _step(TINY, activation_checkpointing=True)
    assert got[0] == eager[0]
    for name, g in eager[1].items():
        assert torch.equal(got[1][name], g), name
    for name, buf in eager[2].items():
        assert torch.equal(got[2][name], buf), name
    assert any("num_batches_tracked" in n for n in eager[2])


def test_activation_checkpointing_frees_the_trunk_activations():
    """What the switch is for: the autograd graph keeps each stage's input only."""
    torch.manual_seed(0)
    model = build_model(TINY.model).train()
    clip = torch.randn(4, 3, 8, 32, 32)

    def saved_bytes(enabled: bool) -> int:
        model.video_trunk.activation_checkpointing = enabled
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.video_map(clip).sum()
        return total

    assert saved_bytes(True) < saved_bytes(False) / 3


def test_auto_means_cuda_only():
    assert perf.resolve("auto", "cpu") is False and perf.resolve("auto", "cuda") is True
    assert perf.resolve("on", "cpu") is True and perf.resolve("off", "cuda") is False
    model = build_model(TINY.model)
    applied = perf.configure_trunk(model.video_trunk, CPU, "auto", "auto")
    assert applied == {"compile": False, "channels_last": False, "activation_checkpointing": False}
    assert model.video_trunk._compiled_call_impl is None


def test_cudnn_autotuning_only_on_cuda_and_never_when_deterministic():
    before = torch.backends.cudnn.benchmark
    with perf.cudnn_autotune("cpu", deterministic=False) as on:
        assert not on and torch.backends.cudnn.benchmark == before
    # the flag is torch's; setting it needs no GPU
    with perf.cudnn_autotune("cuda", deterministic=False) as on:
        assert on and torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    # pretraining's order: deterministic mode, then autotuning for a deterministic run: off
    with deterministic_mode(True, "cpu"), perf.cudnn_autotune("cuda", deterministic=True) as on:
        assert not on and not torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before


def test_loader_options_fall_back_without_cuda():
    assert perf.loader_options(0, CPU) == {"num_workers": 0, "pin_memory": False}
    assert perf.loader_options(3, CPU, prefetch_factor=4) == {
        "num_workers": 3,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": 4,
    }
    assert perf.loader_options(2, torch.device("cuda", 0))["pin_memory"] is True
    # and a CPU loader with them runs
    data = [{"frames": torch.zeros(2, 3)} for _ in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=None, **perf.loader_options(0, CPU))
    assert len(list(loader)) == 4


def test_throughput_meter_counts_samples_and_waits():
    def slow_loader():
        for _ in range(3):
            time.sleep(0.02)  # the loader's work: waiting, for the consumer
            yield {"audio": torch.zeros(5, 1)}

    meter = perf.Throughput(CPU)
    for _ in meter.batches(slow_loader()):
        time.sleep(0.01)  # the step
    assert meter.steps == 3 and meter.samples == 15
    assert meter.wait_s >= 0.06 and meter.wall_s >= meter.wait_s + 0.03
    summary = meter.summary()
    assert 0 < summary["data_wait_fraction"] < 1
    assert summary["samples_per_s"] == pytest.approx(15 / meter.wall_s)
    assert summary["peak_gpu_memory_mb"] is None
    # leaving the loop early still ends the wall time there
    batches = meter.batches(slow_loader())
    for _ in batches:
        break
    batches.close()
    assert meter.steps == 4 and meter.samples == 20


def test_device_op_counter_counts_kernels_not_views_or_cpu_ops():
    x = torch.ones(4, 3, device="meta")
    index = torch.arange(3)
    with perf.DeviceOpCounter("meta") as counter:
        (x.view(12).t() * 2).sum()  # view and t are views: mul and sum launch kernels
        index * 2  # CPU arithmetic: no kernel on the device
    assert counter.count == 2 and counter.blocking_copies == 0
    with perf.DeviceOpCounter("meta") as counter:
        index.to("meta")  # a stream sync on a GPU
        index.to("meta", non_blocking=True)
    assert counter.blocking_copies == 1


@pytest.mark.parametrize("pooling", ["avg", "transformer"])
def test_a_training_step_never_waits_for_the_device(pooling):
    # on the meta device (shapes only) a value read back (.item(), nonzero) fails and a blocking
    # copy to the device is counted: on a GPU each is a stream sync that stops the CPU queueing
    # kernels ahead; the step (augmentation, feature crops, losses, backward) has none
    config = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, pooling=pooling))
    meta = torch.device("meta")
    model = build_model(config.model).to(meta).train()
    step = StepComputer(config, model, meta)  # setup moves the front end's buffers: not counted
    frames, audio = _batch(config)
    with perf.DeviceOpCounter("meta") as counter:
        losses = step(frames, audio, torch.Generator().manual_seed(1))
        losses["loss"].backward()
    assert losses["loss"].device == meta and counter.count > 100
    assert counter.blocking_copies == 0
