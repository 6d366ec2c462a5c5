"""``stica synth``: real mp4 files, determinism, classes carried by motion, audio/video sync."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from stica.config import SynthConfig
from stica.data.synth import (
    CLASS_NAMES,
    CLASSES_FILE,
    SPLITS,
    clip_seed,
    generate,
    jobs,
    render_clip,
)

TINY = {"classes": 3, "train_per_class": 2, "test_per_class": 1, "duration": 1.0}
TINY.update({"width": 64, "height": 48, "fps": 30})
# The generator's hardest setting (the demo profile makes it easier: plain scenes, big objects).
TEXTURED = {"background": "textured", "object_radius": (0.08, 0.13), "distractors": (0, 3)}
TEXTURED["shapes"] = ("disc", "square", "triangle")
# Enough clips of every class for a nearest-centroid classifier to mean something.
MOTION = {"classes": len(CLASS_NAMES), "train_per_class": 4, "test_per_class": 3}
MOTION.update({"duration": 1.5, "width": 64, "height": 48, "seed": 3, "fps": 30, **TEXTURED})


def run_stica(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "stica", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def overrides(params: dict) -> list[str]:
    return [arg for key, value in params.items() for arg in ("--set", f"{key}={value}")]


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decoded frames (T, H, W, 3) uint8 and mono audio (S,) float32 of one mp4."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    return frames, audio


def clips(root: Path, split: str) -> list[tuple[int, Path]]:
    return [
        (label, path)
        for label, name in enumerate(CLASS_NAMES)
        for path in sorted((root / split / name).glob("*.mp4"))
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny set written through the CLI with two worker processes."""
    out = tmp_path_factory.mktemp("synth") / "demo"
    result = run_stica(
        "synth", "--out", str(out), "--workers", "2", *overrides(TINY), cwd=out.parent
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def motion_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "motion"
    generate(SynthConfig(**MOTION), out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def demo_motion_set(tmp_path_factory) -> Path:
    """The committed demo profile's generator settings (plain scenes, 10 fps), fewer clips."""
    out = tmp_path_factory.mktemp("synth") / "demo_motion"
    counts = {k: MOTION[k] for k in ("classes", "train_per_class", "test_per_class", "seed")}
    generate(SynthConfig(**counts), out, workers=2, progress=False)
    return out


def test_layout_and_real_h264_aac_files(tiny):
    meta = json.loads((tiny / CLASSES_FILE).read_text())
    names = [c["name"] for c in meta["classes"]]
    assert names == list(CLASS_NAMES[:3])
    for split, count in (("train", 2), ("test", 1)):
        assert sorted(p.name for p in (tiny / split).iterdir()) == sorted(names)
        for name in names:
            assert len(list((tiny / split / name).glob("*.mp4"))) == count
    assert not list(tiny.rglob("*.partial.mp4"))
    assert (tiny / "synth.log").read_text().count("wrote 9 clips") == 1

    for _, path in clips(tiny, "train") + clips(tiny, "test"):
        with av.open(str(path)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264"
            assert (video.width, video.height) == (64, 48)
            assert audio.codec_context.name == "aac"
            assert audio.rate == 24000 and audio.channels == 1
        frames, samples = decode(path)
        assert frames.shape == (30, 48, 64, 3)  # 1 s at 30 fps
        # AAC pads the last frame of 1024 samples; the audio covers the clip and no more.
        assert 24000 <= len(samples) < 24000 + 1024
        assert 0.05 < np.abs(samples).max() <= 1.0


def test_same_seed_same_content_for_any_worker_count_and_new_seed_differs(tiny, tmp_path):
    cfg = SynthConfig(**TINY)
    for job in jobs(cfg):  # rendering is exactly reproducible from the per-clip seed
        seed = clip_seed(cfg.seed, job.split, job.label, job.index)
        first, second = render_clip(cfg, job.label, seed), render_clip(cfg, job.label, seed)
        assert np.array_equal(first.frames, second.frames)
        assert np.array_equal(first.audio, second.audio)

    again = tmp_path / "again"
    generate(cfg, again, workers=0, progress=False)
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*.mp4"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.mp4"))
    other = tmp_path / "other"
    generate(SynthConfig(**{**TINY, "seed": 1}), other, workers=0, progress=False)
    for rel in files:
        (frames_a, audio_a), (frames_b, audio_b) = decode(tiny / rel), decode(again / rel)
        assert np.array_equal(audio_a, audio_b), rel
        # libx264's macroblock-tree lookahead is not bit-reproducible at these tiny sizes (see
        # the report): the decoded frames agree up to codec noise, not always bit for bit.
        assert np.abs(frames_a.astype(int) - frames_b).mean() < 3, rel
        frames_c, audio_c = decode(other / rel)
        assert np.abs(frames_a.astype(int) - frames_c).mean() > 10, rel
        assert not np.allclose(audio_a[: len(audio_c)], audio_c[: len(audio_a)], atol=1e-2)


def test_rerun_replaces_an_earlier_demo_set(tiny, tmp_path):
    out = tmp_path / "demo"
    generate(SynthConfig(**TINY), out, workers=0, progress=False)
    generate(SynthConfig(**{**TINY, "classes": 2}), out, workers=0, progress=False)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(CLASS_NAMES[:2])


# --- classes are carried by motion, not by static appearance ---------------------------------


def foreground(frames: np.ndarray) -> np.ndarray:
    """Pixels that differ from the clip's temporal median: the moving object, not the scene.

    Shape:
        frames (T, H, W, 3) uint8 -> (T, H, W) bool
    """
    f = frames.astype(np.float32)
    return np.abs(f - np.median(f, axis=0)).sum(-1) > 60


def centroid_track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object centre x, y (fractions of width/height) and area (pixels) per frame, each (T,)."""
    mask = foreground(frames)
    _, height, width = mask.shape
    yy, xx = np.mgrid[0:height, 0:width]
    area = mask.sum((1, 2)) + 1e-6
    return (mask * xx).sum((1, 2)) / area / width, (mask * yy).sum((1, 2)) / area / height, area


def motion_feature(frames: np.ndarray) -> np.ndarray:
    """A hand-made descriptor of the object's trajectory: net displacement, turning direction,
    reversals, size change, jumpiness."""
    x, y, area = centroid_track(frames)
    vx, vy = np.diff(x), np.diff(y)
    rx, ry = x[:-1] - x.mean(), y[:-1] - y.mean()
    spin = np.mean(rx * vy - ry * vx) / (np.mean(np.hypot(rx, ry)) * np.mean(np.hypot(vx, vy)))
    step = np.hypot(vx, vy)

    def reversals(v: np.ndarray) -> float:
        signs = np.sign(v[np.abs(v) > 0.003])
        return float(np.sum(signs[1:] != signs[:-1])) / len(v)

    return np.array(
        [
            x[-1] - x[0],
            y[-1] - y[0],
            spin,
            reversals(vx),
            reversals(vy),
            area.std() / area.mean(),
            step.max() / (np.median(step) + 0.01),
            np.abs(vx).mean(),
            np.abs(vy).mean(),
        ]
    )


def static_feature(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32).mean(0).ravel()  # the time-averaged frame


def nearest_centroid_accuracy(train, test, standardize: bool) -> float:
    (x_train, y_train), (x_test, y_test) = train, test
    if standardize:
        mean, std = x_train.mean(0), x_train.std(0) + 1e-9
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    labels = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in labels])  # (C, D)
    dist = ((x_test[:, None] - centroids[None]) ** 2).sum(-1)  # (N, C)
    return float((labels[dist.argmin(1)] == y_test).mean())


@pytest.mark.parametrize(
    ("generated", "motion_floor"), [("motion_set", 0.7), ("demo_motion_set", 0.5)]
)
def test_class_is_in_the_motion_not_in_the_static_appearance(generated, motion_floor, request):
    generated_set = request.getfixturevalue(generated)
    features = {}
    for split in SPLITS:
        rows = [(label, decode(path)[0]) for label, path in clips(generated_set, split)]
        labels = np.array([label for label, _ in rows])
        features[split] = {
            "static": (np.stack([static_feature(f) for _, f in rows]), labels),
            "motion": (np.stack([motion_feature(f) for _, f in rows]), labels),
        }
    chance = 1 / len(CLASS_NAMES)
    static = nearest_centroid_accuracy(
        features["train"]["static"], features["test"]["static"], standardize=False
    )
    motion = nearest_centroid_accuracy(
        features["train"]["motion"], features["test"]["motion"], standardize=True
    )
    print(f"nearest centroid: static {static:.2f}, motion {motion:.2f}, chance {chance:.2f}")
    assert static <= chance + 0.2
    assert motion >= motion_floor  # 10 fps (the demo's) shows less of each path than 30


# --- sound events coincide with visual events --------------------------------------------------


def click_onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Times (s) where a click starts: broadband bursts stand out above the tone's harmonics."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    high = np.fft.irfft(np.where(freqs > 6000, spectrum, 0), n=len(audio))
    block = sample_rate // 1000  # 1 ms energy blocks
    energy = (high[: len(high) // block * block].reshape(-1, block) ** 2).mean(1)
    # Relative to the peak and to the noise floor: AAC smears and attenuates some clicks.
    loud = energy > max(0.05 * energy.max(), 20 * np.median(energy))
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    onsets, last = [], -1e9
    for s in starts:  # one onset per click even if its decay dips below the threshold
        if s - last > 50:
            onsets.append(s)
        last = s
    return np.array(onsets) / 1000


def visual_events(coord: np.ndarray, prominence: float) -> np.ndarray:
    """Frame indices of sharp maxima (floor hits, turns) of a per-frame coordinate."""
    window = 4
    found = []
    for i in range(window, len(coord) - window):
        around = coord[i - window : i + window + 1]
        if coord[i] == around.max() and coord[i] - around.min() > prominence:
            found.append(i)
    return np.array(found, dtype=int)


@pytest.mark.parametrize("name", ["bounce", "zigzag"])
def test_sound_events_coincide_with_visual_events(motion_set, name):
    fps, sample_rate = 30, 24000
    checked = 0
    for path in sorted((motion_set / "train" / name).glob("*.mp4")):
        frames, audio = decode(path)
        x, y, _ = centroid_track(frames)
        if name == "bounce":  # floor hits are maxima of y (image y points down)
            events = visual_events(y, prominence=0.05)
        else:  # turns are maxima of x and of -x
            events = np.sort(np.concatenate([visual_events(x, 0.05), visual_events(-x, 0.05)]))
        onsets = click_onsets(audio, sample_rate)
        assert len(events) >= 1, path
        for frame in events:  # every visual event has a click within one frame ...
            assert np.abs(onsets - frame / fps).min() <= 1 / fps, (path, frame, onsets)
        interior = onsets[(onsets > 5 / fps) & (onsets < len(frames) / fps - 5 / fps)]
        for onset in interior:  # ... and every click away from the edges has a visual event
            assert np.abs(events / fps - onset).min() <= 1 / fps, (path, onset, events)
        checked += len(events)
    assert checked >= 4


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "classes=99"], "synth.classes"),
        (["--set", "colour=red"], "unknown param 'synth.colour'"),
        (["--set", "width=65"], "even"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_bad_params_give_one_line_and_exit_2(tmp_path, args, needle):
    result = run_stica("synth", "--out", str(tmp_path / "demo"), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_to_overwrite_a_folder_that_is_not_a_demo_set(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    result = run_stica("synth", "--out", str(out), *overrides(TINY), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not empty" in result.stderr
    assert (out / "thesis.txt").read_text() == "precious"


# --- the demo's levers: plain scenes, object size, class registers ---------------------------


def test_plain_background_is_one_colour_and_object_size_follows_the_param():
    cfg = SynthConfig(
        **{**TINY, "classes": 10},
        background="plain",
        object_radius=(0.25, 0.25),
        distractors=(0, 0),
    )
    clip = render_clip(cfg, CLASS_NAMES.index("pulse"), clip_seed(0, "train", 0, 0))
    first = clip.frames[0].astype(np.float64)  # (H, W, 3)
    corners = np.concatenate([first[:4, :4].reshape(-1, 3), first[-4:, -4:].reshape(-1, 3)])
    # Pixel noise (std <= 6) is all that varies over a plain scene; a textured one also ramps.
    assert corners.std(0).max() < 10
    textured = SynthConfig(**{**TINY, "classes": 10, **TEXTURED, "distractors": (0, 0)})
    ramps = []
    for index in range(6):
        f = render_clip(textured, 0, clip_seed(0, "train", 0, index)).frames[0].astype(float)
        ramps.append(np.abs(f[:4, :4].mean((0, 1)) - f[-4:, -4:].mean((0, 1))).max())
    assert max(ramps) > 15
    # A pulsing object of radius 0.25 * 48 px covers ~ pi r^2 (scaled by the pulse) pixels.
    moved = np.abs(clip.frames.astype(float) - first[None]).max(-1) > 40  # (T, H, W)
    assert moved.any(axis=0).sum() > 0.5 * np.pi * (0.25 * 48) ** 2


def dominant_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sample_rate)[spectrum.argmax()])


def test_class_pitch_step_gives_each_class_its_register():
    cfg = SynthConfig(**{**TINY, "classes": 10}, class_pitch_step=0.4, pitch_jitter=0.05)
    # No vertical motion: the pitch stays at the base moved by the object's (random) height, a
    # zero-mean offset of up to +-0.65 octaves, so the mean over 16 clips is the register.
    names = ("pulse", "move_right")
    pitch = {}
    for name in names:
        label = CLASS_NAMES.index(name)
        clips = [render_clip(cfg, label, clip_seed(0, "train", label, i)) for i in range(16)]
        pitch[name] = np.mean([np.log2(dominant_hz(c.audio, 24000)) for c in clips])
    steps = CLASS_NAMES.index("pulse") - CLASS_NAMES.index("move_right")
    assert pitch["pulse"] - pitch["move_right"] == pytest.approx(0.4 * steps, abs=0.3)
    # Without the step, the base pitch is drawn whatever the class.
    free = SynthConfig(**{**TINY, "classes": 10}, class_pitch_step=0.0)
    label = CLASS_NAMES.index("pulse")
    clips = [render_clip(free, label, clip_seed(0, "train", label, i)) for i in range(8)]
    assert np.ptp([np.log2(dominant_hz(c.audio, 24000)) for c in clips]) > 1.0


def test_fixed_and_isoluminant_colours_keep_the_tracks_and_sounds():
    base = {**TINY, "classes": 10, "background": "plain", "distractors": (0, 0)}
    random_look = SynthConfig(**base)
    fixed_look = SynthConfig(**base, colours="fixed", pixel_noise=(0.0, 0.0))
    label = CLASS_NAMES.index("move_right")
    firsts, scenes = [], []
    for index in range(4):
        seed = clip_seed(0, "train", label, index)
        fixed, coloured = (
            render_clip(fixed_look, label, seed),
            render_clip(random_look, label, seed),
        )
        frames = fixed.frames.astype(np.float64)  # (T, H, W, 3)
        # grey scene and light object, no grain: two pixel values (and the antialiased edge)
        assert np.abs(frames[..., 0] - frames[..., 1]).max() <= 1
        iso = render_clip(dataclasses.replace(fixed_look, colours="isoluminant"), label, seed)
        luma = iso.frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (T, H, W)
        # the same luminance picture as the grey one, in colour
        assert np.abs(luma - frames[..., 0]).mean() < 4
        scenes.append(iso.frames[0, :3, :3].reshape(-1, 3).mean(0))
        firsts.append(frames[0, :3, :3].mean())
        # the same draws: the object moves along the same track whatever its colours (up to
        # the grain, the antialiased edge and the contrast of the coloured clip)
        track, coloured_track = centroid_track(fixed.frames), centroid_track(coloured.frames)
        np.testing.assert_allclose(track[:2], coloured_track[:2], atol=0.05)
        assert np.array_equal(fixed.audio, coloured.audio)
    assert np.ptp(firsts) < 1  # every clip's scene corner is the same grey
    assert np.ptp(np.array(scenes), axis=0).max() > 30  # isoluminant scenes differ in colour
