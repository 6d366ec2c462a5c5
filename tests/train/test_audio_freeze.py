"""``pretrain.audio_freeze_epochs``: the audio branch holds still for its epochs while the video
branch trains, then trains too (the MoCo-style check that frozen weights really stayed frozen)."""

from __future__ import annotations

import pytest
import torch

from stica import dist
from stica.config import ConfigError, load_section
from stica.train.pretrain import TrainState, distribute, setup, train_one_epoch
from tests.conftest import tiny_params, write_params


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, p in module.named_parameters() if not torch.equal(p, before[k])}


def test_audio_branch_frozen_for_its_epochs_then_trains(tiny_store, tmp_path):
    params = tiny_params(pretrain={"audio_freeze_epochs": 1.0, "weight_decay": 0.01})
    run = setup(load_section("pretrain", write_params(tmp_path / "p.yaml", params)), tiny_store)
    distribute(run)
    model, state, stop = run.model, TrainState(), dist.StopRequested()
    branches = {
        name: getattr(model, name)
        for name in ("audio_trunk", "audio_head", "video_trunk", "video_head")
    }
    start = {name: _snapshot(m) for name, m in branches.items()}
    bn_mean = model.audio_trunk.stem[1].running_mean.clone()

    train_one_epoch(run, state, None, stop)  # the frozen epoch
    assert not _changed(model.audio_trunk, start["audio_trunk"])
    assert not _changed(model.audio_head, start["audio_head"])  # weight decay included
    # the video branch did learn, and the audio BatchNorm statistics followed the data
    assert _changed(model.video_trunk, start["video_trunk"])
    assert _changed(model.video_head, start["video_head"])
    assert not torch.equal(model.audio_trunk.stem[1].running_mean, bn_mean)
    assert run.optimizer.param_groups[1]["lr"] > 0  # the next step's lr: the audio thaws

    state.epoch += 1
    frozen_end = _snapshot(model.audio_trunk)
    train_one_epoch(run, state, None, stop)
    assert _changed(model.audio_trunk, frozen_end)


def test_freezing_the_audio_for_the_whole_run_is_refused(tmp_path):
    params = tiny_params(pretrain={"audio_freeze_epochs": 2.0})  # = epochs
    with pytest.raises(ConfigError, match="pretrain.audio_freeze_epochs"):
        load_section("pretrain", write_params(tmp_path / "p.yaml", params))
