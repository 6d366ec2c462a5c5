"""extract-features' JPEG decoding in the main process (``features.jpeg_decode: device``, issue 9):
the workers ship the stored JPEG files, ``torchvision.io.decode_jpeg`` decodes them in batches on
the model's device (here the CPU) and the clips are assembled as the PIL path assembles them."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from stica.config import ConfigError, load_section
from stica.data.clips import ClipReader
from stica.data.datasets import (
    RandomClips,
    UniformClips,
    collate_clips,
    pad_frames,
    uniform_starts,
)
from stica.data.jpeg import batch_frames, collate_encoded_clips, decode_clips, decode_on_device
from stica.data.store import Store
from stica.errors import SticaError
from stica.eval.features import extract_features
from stica.eval.features_io import read_features


def _jpeg(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _pil(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB")))


def test_auto_decodes_in_the_workers_without_cuda():
    assert decode_on_device("auto", "cpu") is False
    assert decode_on_device("auto", "cuda") is True
    assert decode_on_device("device", "cpu") is True
    assert decode_on_device("cpu", "cuda") is False
    for section in ("features", "pretrain", "finetune"):
        with pytest.raises(ConfigError, match=f"{section}.jpeg_decode"):
            load_section(section, overrides=("jpeg_decode=gpu",))


def test_decoded_clips_of_a_batch_equal_the_pil_clips(tiny_store):
    """Two videos' overlapping clips, batched both ways: same frames to the decoders' rounding,
    each video's files shipped once."""
    store = Store(tiny_store)
    records = [r for r in store.records if r.num_frames > 0][:2]
    num_frames, clips = 8, 3
    pil = UniformClips(store, records, num_frames, clips)
    encoded = UniformClips(store, records, num_frames, clips, encoded=True)
    items = range(len(pil))
    want = collate_clips([pil[i] for i in items])
    batch = collate_encoded_clips([encoded[i] for i in items])
    union = sum(len(encoded.clips_of(v).jpeg) for v in range(2))
    assert len(batch["jpeg_offsets"]) == union + 1  # each frame's file once per batch
    assert union < len(items) * num_frames  # the clips overlap
    frames, sizes = decode_clips(batch, "cpu")
    assert frames.shape == want["frames"].shape and frames.dtype == torch.uint8
    assert torch.equal(sizes, want["sizes"])
    diff = (frames.int() - want["frames"].int()).abs().float()
    assert diff.mean() < 1.0 and diff.max() <= 16  # libjpeg-turbo both ways, any rounding
    for key in ("audio", "video", "label"):
        assert torch.equal(batch[key], want[key])


def test_mixed_sizes_are_padded_as_pad_frames_pads_them():
    g = np.random.default_rng(0)
    videos = [g.integers(0, 256, (4, h, w, 3), dtype=np.uint8) for h, w in [(24, 32), (32, 20)]]
    files = [[_jpeg(frame) for frame in video] for video in videos]
    rows = [torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 3]), torch.tensor([0, 0, 1, 2])]
    owner = [0, 0, 1]  # clip -> video
    samples = [
        {"jpeg": files[v], "rows": r, "video": torch.tensor(v), "audio": torch.zeros(5)}
        for v, r in zip(owner, rows, strict=True)
    ]
    frames, sizes = decode_clips(collate_encoded_clips(samples), "cpu")
    pil_clips = [
        torch.stack([_pil(files[v][k]) for k in r.tolist()])
        for v, r in zip(owner, rows, strict=True)
    ]
    want, want_sizes = pad_frames(pil_clips)
    assert frames.shape == want.shape == (3, 4, 32, 32, 3)
    assert sizes.tolist() == want_sizes.tolist() == [[24, 32], [24, 32], [32, 20]]
    diff = (frames.int() - want.int()).abs().float()
    assert diff.mean() < 1.0 and diff.max() <= 16
    # the padding repeats the clip's own last row / column, not a neighbour's pixels
    assert torch.equal(frames[0, :, 24:], frames[0, :, 23:24].expand(4, 8, 32, 3))
    assert torch.equal(frames[2, :, :, 20:], frames[2, :, :, 19:20].expand(4, 32, 12, 3))


def test_a_corrupt_jpeg_names_the_videos():
    bad = {"jpeg": [np.arange(50, dtype=np.uint8)], "rows": torch.tensor([0, 0])}
    batch = collate_encoded_clips([{**bad, "video": torch.tensor(7)}])
    with pytest.raises(SticaError, match=r"videos \[7\]"):
        decode_clips(batch, "cpu")


def test_random_training_clips_ship_their_own_files(tiny_store):
    """Training's random clips (one per record, no ``video`` key) encoded and decoded are the PIL
    clips, bit for bit on the CPU; a batch whose files do not decode names its dataset items."""
    store = Store(tiny_store)
    records = [r for r in store.records if r.num_frames > 0][:3]
    records = records + records[:1]  # a record twice (finetuning's clips per video): own files
    pil = RandomClips(store, records, 8, seed=5, with_labels=True)
    encoded = RandomClips(store, records, 8, seed=5, with_labels=True, encoded=True)
    items = [(2, i) for i in range(len(records))]
    want = collate_clips([pil[i] for i in items])
    batch = collate_encoded_clips([encoded[i] for i in items])
    assert len(batch["jpeg_offsets"]) == 8 * len(records) + 1
    frames, sizes = batch_frames(batch, "cpu")
    assert torch.equal(frames, want["frames"]) and torch.equal(sizes, want["sizes"])
    assert batch_frames(want, "cpu")[0] is want["frames"]  # decoded batches pass through
    for key in ("audio", "index", "label"):
        assert torch.equal(batch[key], want[key])
    broken = {**batch, "jpeg": torch.zeros_like(batch["jpeg"])}
    with pytest.raises(SticaError, match=r"dataset items \[0, 1, 2, 3\]"):
        batch_frames(broken, "cpu")


def test_read_many_encoded_covers_read_many(tiny_store):
    reader = ClipReader(tiny_store)
    rec = next(r for r in Store(tiny_store).records if r.num_frames > 0)
    starts = uniform_starts(rec.duration, 10 / reader.fps, 4)
    decoded = reader.read_many(rec.id, starts, 10)
    encoded = reader.read_many_encoded(rec.id, starts, 10)
    for clip, rows, enc in zip(decoded, encoded.rows, encoded.clips, strict=True):
        assert enc.start == clip.start and np.array_equal(enc.audio, clip.audio)
        pil = torch.stack([_pil(encoded.jpeg[r]) for r in rows.tolist()])
        assert torch.equal(pil, torch.from_numpy(np.asarray(clip.frames)))


@pytest.fixture(scope="module")
def configs(tiny_params_file):
    return load_section("features", tiny_params_file), load_section("pretrain", tiny_params_file)


def test_device_decoding_gives_the_features_of_worker_decoding(
    tiny_store, tiny_checkpoint, configs, tmp_path
):
    features, pretrain = configs
    # 24 videos in chunks of 5 with batches of 4 clips: videos straddle batches and chunks
    config = dataclasses.replace(features, workers=1, chunk_videos=5, batch_size=4)
    runs = {}
    for decode in ("auto", "device"):
        out = tmp_path / f"{decode}.h5"
        cfg = dataclasses.replace(config, jpeg_decode=decode)
        runs[decode] = extract_features(tiny_store, str(tiny_checkpoint), cfg, pretrain, out)
        runs[decode]["features"] = read_features(out)
    assert runs["auto"]["jpeg_decode"] == "cpu" and runs["device"]["jpeg_decode"] == "device"
    for run in runs.values():
        assert 0.0 <= run["data_wait_fraction"] <= 1.0
        assert 0.0 <= run["steady_data_wait_fraction"] <= 1.0
        assert run["steady_clips_per_s"] > 0 and run["peak_gpu_memory_mb"] is None
    want, got = runs["auto"]["features"], runs["device"]["features"]
    assert list(got.video_ids) == list(want.video_ids)
    cosine = np.sum(got.features * want.features, axis=1)  # rows are unit vectors
    assert cosine.min() > 0.999
    np.testing.assert_allclose(got.features, want.features, atol=2e-3)
    np.testing.assert_allclose(got.audio_features, want.audio_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.clip_features, want.clip_features, atol=5e-3)
