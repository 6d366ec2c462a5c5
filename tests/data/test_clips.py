"""The clip reader on real stores: alignment, short-video rule, audio-only, DataLoader workers."""

import pickle

import numpy as np
import pytest

from stica.config import PreprocessConfig
from stica.data.clips import ClipReader
from stica.data.preprocess import preprocess
from stica.errors import SticaError
from tests import fixtures as fx

FLASHES = [10, 37, 64, 80]  # frame indices (30 fps) with a white flash + an audio click


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clips")
    fx.write_flash_video(tmp / "in" / "flash" / "f.mp4", FLASHES, seconds=3.0)
    fx.write_video(tmp / "in" / "flash" / "short.mp4", seconds=0.5, seed=5)
    fx.write_video(tmp / "in" / "other" / "mute.mp4", seconds=1.0, seed=6, audio=False)
    cfg = PreprocessConfig(fps=30.0, short_side=48, workers=0)
    preprocess(tmp / "in", tmp / "store", cfg, progress=False)
    return tmp / "store"


def _flash_frames(frames):
    return [i for i, f in enumerate(frames) if f.mean() > 128]


def _click_frames(audio, fps, sr):
    """Frame index of each click: local maxima of |audio| envelope above half the peak."""
    env = np.abs(audio.astype(np.float32))
    peaks, i = [], 0
    hop = sr // fps
    thresh = env.max() / 2
    while i < env.size:
        if env[i] > thresh:
            window = env[i : i + hop]
            centre = i + int(window.argmax())
            peaks.append(centre)
            i += hop
        else:
            i += 1
    return [p / sr * fps for p in peaks]


@pytest.mark.parametrize("start", [0.0, 0.5, 1.0])
def test_flashes_and_clicks_line_up(store, start):
    reader = ClipReader(store)
    clip = reader.read("flash/f", start, 60)
    assert clip.frames.shape == (60, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (48000,) and clip.audio.dtype == np.int16
    first = round(clip.start * 30)
    flashes = _flash_frames(clip.frames)
    assert flashes == [f - first for f in FLASHES if first <= f < first + 60]
    clicks = _click_frames(clip.audio, 30, 24000)
    assert len(clicks) == len(flashes) >= 1
    # the click is centred ~32 samples after the flash frame starts: within one frame
    for flash, click in zip(flashes, clicks, strict=True):
        assert abs(click - flash) < 1.0, (flash, click)


def test_short_video_rule(store):
    reader = ClipReader(store)
    rec = reader.store.get("flash/short")
    assert rec.num_frames == 15
    clip = reader.read("flash/short", 5.0, 30)
    assert clip.start == 0.0 and clip.frames.shape[0] == 30
    assert np.array_equal(clip.frames[15], clip.frames[14])  # last frame repeated
    assert np.array_equal(clip.frames[29], clip.frames[14])
    assert clip.audio.shape == (24000,)
    assert np.all(clip.audio[12000 + 10 :] == 0) and np.abs(clip.audio[:12000]).max() > 1000
    # clamped start: the clip ends at the end of the video
    long_clip = reader.read("flash/f", 10.0, 30)
    assert long_clip.start == pytest.approx(2.0)


def test_audio_reads_and_muted_videos(store):
    reader = ClipReader(store)
    mute = reader.read("other/mute", 0.2, 10)
    assert mute.audio.shape == (8000,) and not mute.audio.any()
    a = reader.read_audio("flash/f", 0.0, 1.0)
    b = reader.read("flash/f", 0.0, 30).audio
    assert np.array_equal(a, b)
    tail = reader.read_audio("flash/f", 2.9, 1.0)  # clamped to [0, duration - 1 s]
    assert np.array_equal(tail, reader.read_audio("flash/f", 2.0, 1.0))
    with pytest.raises(SticaError, match="not in store"):
        reader.read("nope", 0, 1)


def test_audio_only_store(tmp_path):
    fx.make_esc50(tmp_path / "esc", folds=2)
    preprocess(
        tmp_path / "esc", tmp_path / "s", PreprocessConfig(fps=30.0, workers=0), progress=False
    )
    reader = ClipReader(tmp_path / "s")
    rec = reader.store.records[0]
    audio = reader.read_audio(rec.id, 0.1, 0.25)
    assert audio.shape == (6000,) and np.abs(audio).max() > 1000
    with pytest.raises(SticaError, match="audio-only"):
        reader.read(rec.id, 0, 4)


class _Clips:
    def __init__(self, reader, ids):
        self.reader, self.ids = reader, ids

    def __len__(self):
        return len(self.ids) * 3

    def __getitem__(self, i):
        clip = self.reader.read(self.ids[i % len(self.ids)], 0.1 * i, 8)
        return clip.frames, clip.audio


def test_reader_in_dataloader_workers(store):
    import torch

    reader = ClipReader(store)
    reader.read("flash/f", 0, 2)  # a handle opened in the parent must not leak into workers
    reader2 = pickle.loads(pickle.dumps(reader))
    assert reader2.store.manifest_hash() == reader.store.manifest_hash()
    ds = _Clips(reader, ["flash/f", "flash/short", "other/mute"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    frames = torch.cat([b[0] for b in batches])
    assert frames.shape == (9, 8, 48, 64, 3)
    expected = np.stack([ds[i][0] for i in range(9)])
    assert np.array_equal(frames.numpy(), expected)


@pytest.mark.parametrize("video", ["flash/f", "flash/short", "other/mute"])
def test_read_many_equals_separate_reads_and_decodes_each_frame_once(store, video, monkeypatch):
    import stica.data.clips as clips_module
    from stica.data.datasets import UniformClips, uniform_starts

    reader = ClipReader(store)
    record = reader.store.get(video)
    starts = uniform_starts(record.duration, 30 / 30.0, 10)  # 10 overlapping 1 s clips
    separate = [reader.read(video, s, 30) for s in starts]

    opened = []
    real_open = clips_module.Image.open
    monkeypatch.setattr(
        clips_module.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    together = reader.read_many(video, starts, 30)
    assert len(opened) == record.num_frames  # the clips cover the video: every frame, once
    for one, many in zip(separate, together, strict=True):
        np.testing.assert_array_equal(one.frames, many.frames)
        np.testing.assert_array_equal(one.audio, many.audio)
        assert one.start == many.start

    dataset = UniformClips(reader.store, [record], num_frames=30, clips_per_video=10)
    for i, clip in enumerate(separate):
        item = dataset[i]
        np.testing.assert_array_equal(item["frames"].numpy(), clip.frames)
        np.testing.assert_array_equal(item["audio"].numpy(), clip.audio / 32768.0)
