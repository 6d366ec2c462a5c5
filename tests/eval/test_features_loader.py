"""extract-features' loader and precision switches (issue 9): one persistent loader over every
chunk gives the features of the in-process one; bf16 autocast is off on the CPU unless asked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stica.config import load_section
from stica.eval.features import ChunkBatches, extract_features
from stica.eval.features_io import read_features


def test_chunk_batches_never_straddle_chunks():
    sampler = ChunkBatches(videos=7, clips=2, chunk_videos=3, batch_size=4)
    batches = list(sampler)
    # chunks of 3, 3, 1 videos = 6, 6, 2 clips -> batches of 4+2, 4+2, 2
    assert batches == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11], [12, 13]]
    assert len(sampler) == len(batches) == 2 * sampler.batches_in(3) + sampler.batches_in(1)


@pytest.fixture(scope="module")
def configs(tiny_params_file):
    return load_section("features", tiny_params_file), load_section("pretrain", tiny_params_file)


@pytest.fixture(scope="module")
def reference(tiny_store, tiny_checkpoint, configs, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "ref.h5"
    summary = extract_features(tiny_store, str(tiny_checkpoint), *configs, out)
    assert summary["autocast"] is False and summary["compile"] is False  # auto on the CPU
    assert summary["clips_per_s"] > 0
    return read_features(out)


def test_workers_and_uneven_chunks_give_the_same_features(
    tiny_store, tiny_checkpoint, configs, reference, tmp_path
):
    features, pretrain = configs
    # 24 videos in chunks of 5 with batches of 3 clips: every chunk ends on a partial batch
    config = dataclasses.replace(features, workers=2, chunk_videos=5, batch_size=3)
    out = tmp_path / "workers.h5"
    summary = extract_features(tiny_store, str(tiny_checkpoint), config, pretrain, out)
    assert summary["steady_clips_per_s"] > 0  # 5 chunks: a rate after the first
    got = read_features(out)
    assert list(got.video_ids) == list(reference.video_ids)
    np.testing.assert_allclose(got.features, reference.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.audio_features, reference.audio_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.clip_features, reference.clip_features, rtol=2e-3, atol=1e-3)


def test_bf16_autocast_when_asked(tiny_store, tiny_checkpoint, configs, reference, tmp_path):
    features, pretrain = configs
    out = tmp_path / "bf16.h5"
    config = dataclasses.replace(features, autocast="on")
    assert extract_features(tiny_store, str(tiny_checkpoint), config, pretrain, out)["autocast"]
    got = read_features(out)
    assert not np.array_equal(got.features, reference.features)  # really another precision
    cosine = np.sum(got.features * reference.features, axis=1)  # rows are unit vectors
    assert cosine.min() > 0.99


def test_compiled_trunk_with_padded_last_batches_gives_the_same_features(
    tiny_store, tiny_checkpoint, configs, reference, tmp_path
):
    """features.compile traces the trunk (aot_eager: dynamo + AOT autograd as inductor, without
    generating C++) for one batch shape; every chunk's last batch is padded to it, and the
    padding's features must not leak into any video's."""
    features, pretrain = configs
    config = dataclasses.replace(features, compile="on", chunk_videos=5, batch_size=4)
    out = tmp_path / "compiled.h5"
    summary = extract_features(
        tiny_store, str(tiny_checkpoint), config, pretrain, out, compile_backend="aot_eager"
    )
    assert summary["compile"] is True
    got = read_features(out)
    np.testing.assert_allclose(got.features, reference.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.clip_features, reference.clip_features, rtol=2e-3, atol=1e-3)
