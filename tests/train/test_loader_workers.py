"""Pretraining's loader with worker processes (issue 9): one loader for the whole run whose workers
persist across epochs, and still the batches of the in-process loader, resumes included."""

from __future__ import annotations

import pytest
import torch

from stica import dist
from stica.config import load_section
from stica.train.checkpoint import load_checkpoint
from stica.train.pretrain import (
    TrainState,
    distribute,
    epoch_loader,
    pretrain,
    resume_path,
    setup,
    train_one_epoch,
)
from tests.conftest import tiny_params, write_params


@pytest.fixture(scope="module")
def worker_params(tmp_path_factory):
    params = tiny_params(pretrain={"workers": 1, "prefetch_factor": 3})
    return write_params(tmp_path_factory.mktemp("workers") / "params.yaml", params)


def _weights(path):
    return load_checkpoint(path, kind="pretrain")["model"]


def test_workers_persist_across_epochs(tiny_store, worker_params):
    run = setup(load_section("pretrain", worker_params), tiny_store)
    distribute(run)
    state, pids, iterators = TrainState(), [], []
    stop = dist.StopRequested()
    for _ in range(2):
        done = train_one_epoch(run, state, None, stop)
        assert done["steps"] == run.steps_per_epoch == 2
        assert done["samples"] == 16 and 0 < done["data_wait"] < done["seconds"]
        iterators.append(run.loader._iterator)
        pids.append(sorted(w.pid for w in run.loader._iterator._workers))
        assert all(w.is_alive() for w in run.loader._iterator._workers)
        state.epoch += 1
    assert iterators[0] is iterators[1] and pids[0] == pids[1] and len(pids[0]) == 1
    # the next epoch only moves the sampler of the same loader
    assert epoch_loader(run, state) is run.loader and run.sampler.epoch == 2
    assert run.throughput.steps == 4 and run.throughput.samples == 32


def test_workers_give_the_in_process_weights_and_resume_exactly(
    tiny_store, worker_params, tiny_checkpoint, tmp_path
):
    """The tiny checkpoint was trained in-process (workers: 0); with a persistent worker process, and
    with a stop after 3 of the 4 steps (mid second epoch) then a resume, the weights are the same
    bit for bit (every clip is drawn from (seed, epoch, index), the steps are deterministic)."""
    config = load_section("pretrain", worker_params)
    straight = tmp_path / "straight.pt"
    pretrain(config, tiny_store, straight)
    resumed = tmp_path / "resumed.pt"
    summary = pretrain(config, tiny_store, resumed, max_steps=3)
    assert summary["stopped_at_step"] == 3 and resume_path(resumed).exists()
    assert summary["throughput"]["steps"] == 3
    pretrain(config, tiny_store, resumed, resume=True)
    reference = _weights(tiny_checkpoint)
    for path in (straight, resumed):
        weights = _weights(path)
        differ = [k for k, v in reference.items() if not torch.equal(v, weights[k])]
        assert not differ, f"{path.name}: {differ[:3]}"


def test_frames_decoded_in_the_main_process_give_the_same_weights(
    tiny_store, tiny_params_file, tiny_checkpoint, tmp_path
):
    """``pretrain.jpeg_decode: device``: the worker ships each clip's JPEG files and train_step
    decodes them (torchvision, on the CPU here; libjpeg-turbo as PIL): the weights of the
    in-process PIL run, bit for bit."""
    params = tiny_params(pretrain={"workers": 1, "jpeg_decode": "device"})
    config = load_section("pretrain", write_params(tmp_path / "params.yaml", params))
    out = tmp_path / "device.pt"
    summary = pretrain(config, tiny_store, out)
    assert summary["throughput"]["jpeg_decode"] == "device"
    reference = _weights(tiny_checkpoint)
    weights = _weights(out)
    assert not [k for k, v in reference.items() if not torch.equal(v, weights[k])]
