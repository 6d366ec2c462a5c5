"""The synthetic audio-visual demo set written by ``stica synth``.

Every clip shows one foreground object moving over a static scene, with a sound that follows
the motion. The class is the motion pattern and its synchronised sound, never the appearance:

* the object's colour, shape (disc / square / triangle), size, start position and phase, speed,
  the background (colour, gradient, faint texture), static distractor shapes and pixel noise are
  drawn at random per clip, independently of the class;
* the sound is a harmonic tone whose pitch follows the object's height and whose loudness follows
  its horizontal position (and its size), plus a click at every discrete event (bounce, turn,
  jump). Timbre, volume and background noise are random per clip, and so is the base pitch unless
  ``class_pitch_step`` gives classes registers: without them the class lives only in the temporal
  structure (sweep direction, rhythm, event timing).

The appearance nuisances are params (``synth.background``, ``object_radius``, ``distractors``,
``shapes``, ``pixel_noise``, ``colours``). The demo profile draws a plain scene and one disc of one
size, without grain, in isoluminant colours: every scene has one luminance and every object
another, and only their hue and saturation vary from clip to clip. Colour still tells the clips
apart to a random-init network, but the hue jitter and grayscale of pretraining hide it between
the two RGB crops of a clip, so the within-modal loss can only tell clips apart by their motion.
Every cue colour jitter keeps (the luminance, the grain, the size, a shape) was found to be one
the within-modal loss latched onto instead, and with it the cross-modal loss stayed at chance
(README "The demo"). With
``synth.class_pitch_step`` > 0 each class's sound source also has its own register (the base
pitch; neighbouring classes overlap through ``pitch_jitter`` and the motion-driven swing), as real
actions have their own sounds; the pitch contour, loudness and clicks still follow the motion.

Several classes differ only in temporal order (left->right vs right->left, up vs down, clockwise
vs counter-clockwise), so a time-averaged frame or spectrum cannot separate them.

Randomness comes from one ``numpy`` generator per clip, seeded from ``(seed, split, class,
index)``, so the result does not depend on the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from stica.config import SynthConfig
from stica.data.encode import write_mp4
from stica.errors import SticaError
from stica.logs import get_logger

log = get_logger("synth")

SPLITS = ("train", "test")
CLASSES_FILE = "classes.json"
LOG_FILE = "synth.log"  # written beside the clips by the stage command

# synth.colours isoluminant / fixed: the luma (ITU-R 601) of every scene and of every object;
# mid values leave room for saturated colours at both
SCENE_LUMA = 80.0
OBJECT_LUMA = 176.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
PULSE_DEPTH = 0.45  # relative size swing of the "pulse" class
# Audio.
BASE_PITCH_HZ = (180.0, 600.0)  # with synth.class_pitch_step = 0
CLASS_PITCH_BASE_HZ = 150.0  # class 0's register with synth.class_pitch_step > 0
CLICK_SECONDS = 0.012
CLICK_DECAY_SECONDS = 0.003


@dataclasses.dataclass(frozen=True)
class MotionClass:
    """One class of the demo set: a motion pattern and the sound that goes with it."""

    name: str
    motion: str
    sound: str


CLASSES: tuple[MotionClass, ...] = (
    MotionClass("move_right", "slides from the left edge to the right edge", "tone grows louder"),
    MotionClass("move_left", "slides from the right edge to the left edge", "tone grows quieter"),
    MotionClass("move_up", "rises from the bottom to the top", "pitch sweeps up"),
    MotionClass("move_down", "sinks from the top to the bottom", "pitch sweeps down"),
    MotionClass(
        "circle_cw",
        "circles clockwise",
        "pitch and loudness oscillate, loudness leading pitch by a quarter turn",
    ),
    MotionClass(
        "circle_ccw",
        "circles counter-clockwise",
        "pitch and loudness oscillate, loudness lagging pitch by a quarter turn",
    ),
    MotionClass(
        "bounce", "bounces on a floor (parabolic arcs)", "click at every floor hit, pitch arcs"
    ),
    MotionClass(
        "zigzag", "moves left and right at constant speed", "click at every turn, loudness ramps"
    ),
    MotionClass("pulse", "stays put and grows and shrinks", "loudness swells with the size"),
    MotionClass("jump", "jumps to a new place every half second or so", "click and pitch step"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Track:
    """The object's path: ``at(t)`` gives pixel centre x, y and a size factor for times ``t``.

    Shape:
        at: (N,) seconds -> three (N,) float arrays (x px, y px, scale)
        events: (E,) seconds of discrete events (bounce, turn, jump), each with a click
    """

    at: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    events: np.ndarray


@dataclasses.dataclass(frozen=True)
class Arena:
    """Where the object's centre may go: a box keeping the whole object inside the frame."""

    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, u: np.ndarray | float) -> np.ndarray:
        return self.x0 + np.asarray(u) * (self.x1 - self.x0)

    def y(self, v: np.ndarray | float) -> np.ndarray:
        return self.y0 + np.asarray(v) * (self.y1 - self.y0)


def _const(t: np.ndarray, value: float) -> np.ndarray:
    return np.full(t.shape, value, dtype=np.float64)


def _triangle(phase: np.ndarray) -> np.ndarray:
    """Triangle wave in [0, 1] with period 1, 0 at integer phases."""
    f = np.mod(phase, 1.0)
    return 1.0 - np.abs(2.0 * f - 1.0)


def _slide(rng: np.random.Generator, arena: Arena, duration: float, axis: str, sign: int) -> Track:
    start, end = rng.uniform(0.0, 0.15), rng.uniform(0.8, 1.0)  # speed jitter via the end point
    if sign < 0:
        start, end = 1.0 - start, 1.0 - end
    other = rng.uniform(0.05, 0.95)
    wobble = rng.uniform(0.0, 0.04)  # a slight drift across the path, so it is not a ruler line
    wobble_hz = rng.uniform(0.2, 0.6)

    def at(t: np.ndarray):
        along = start + (end - start) * t / duration
        across = other + wobble * np.sin(2 * np.pi * wobble_hz * t)
        if axis == "x":
            return arena.x(along), arena.y(across), _const(t, 1.0)
        return arena.x(across), arena.y(along), _const(t, 1.0)

    return Track(at, np.zeros(0))


def _circle(rng: np.random.Generator, arena: Arena, duration: float, sign: int) -> Track:
    half = min(arena.x1 - arena.x0, arena.y1 - arena.y0) / 2
    radius = rng.uniform(0.55, 1.0) * half
    cx = rng.uniform(arena.x0 + radius, arena.x1 - radius)
    cy = rng.uniform(arena.y0 + radius, arena.y1 - radius)
    period = rng.uniform(0.9, 1.5)
    phase0 = rng.uniform(0, 2 * np.pi)

    def at(t: np.ndarray):
        angle = phase0 + sign * 2 * np.pi * t / period
        # Image y points down: + sign is counter-clockwise on screen.
        return cx + radius * np.cos(angle), cy - radius * np.sin(angle), _const(t, 1.0)

    return Track(at, np.zeros(0))


def _bounce(rng: np.random.Generator, arena: Arena, duration: float) -> Track:
    period = rng.uniform(0.45, 0.75)
    height = rng.uniform(0.6, 1.0)
    u = rng.uniform(0.05, 0.95)
    phase0 = rng.uniform(0, 1)

    def at(t: np.ndarray):
        f = np.mod(t / period + phase0, 1.0)
        v = 1.0 - height * 4.0 * f * (1.0 - f)  # v = 1 is the floor (bottom of the arena)
        return arena.x(_const(t, u)), arena.y(v), _const(t, 1.0)

    events = (np.arange(1, duration / period + 2) - phase0) * period
    return Track(at, events[(events >= 0) & (events < duration)])


def _zigzag(rng: np.random.Generator, arena: Arena, duration: float) -> Track:
    period = rng.uniform(0.8, 1.3)  # a full left-right-left cycle
    lo, hi = rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)
    v = rng.uniform(0.05, 0.95)
    phase0 = rng.uniform(0, 1)

    def at(t: np.ndarray):
        u = lo + (hi - lo) * _triangle(t / period + phase0)
        return arena.x(u), arena.y(_const(t, v)), _const(t, 1.0)

    turns = (np.arange(0, 2 * duration / period + 2) / 2 - phase0) * period
    return Track(at, turns[(turns > 0) & (turns < duration)])


def _pulse(rng: np.random.Generator, arena: Arena, duration: float) -> Track:
    period = rng.uniform(0.5, 0.9)
    u, v = rng.uniform(0.05, 0.95, size=2)
    phase0 = rng.uniform(0, 2 * np.pi)

    def at(t: np.ndarray):
        scale = 1.0 + PULSE_DEPTH * np.sin(phase0 + 2 * np.pi * t / period)
        return arena.x(_const(t, u)), arena.y(_const(t, v)), scale

    return Track(at, np.zeros(0))


def _jump(rng: np.random.Generator, arena: Arena, duration: float) -> Track:
    mean_gap = rng.uniform(0.4, 0.65)
    first = rng.uniform(0.1, mean_gap)
    gaps = mean_gap * rng.uniform(0.8, 1.2, size=int(duration / (0.8 * mean_gap)) + 2)
    events = first + np.concatenate([[0.0], np.cumsum(gaps)])
    events = events[events < duration]
    # Each new place is far from the last one, so every jump is a visible event.
    places = [rng.uniform(0, 1, size=2)]
    for _ in events:
        while True:
            nxt = rng.uniform(0, 1, size=2)
            if np.hypot(*(nxt - places[-1])) > 0.4:
                break
        places.append(nxt)
    places_arr = np.asarray(places)  # (E + 1, 2)

    def at(t: np.ndarray):
        idx = np.searchsorted(events, t, side="right")
        return arena.x(places_arr[idx, 0]), arena.y(places_arr[idx, 1]), _const(t, 1.0)

    return Track(at, events)


TRACKS: dict[str, Callable[[np.random.Generator, Arena, float], Track]] = {
    "move_right": lambda r, a, d: _slide(r, a, d, "x", +1),
    "move_left": lambda r, a, d: _slide(r, a, d, "x", -1),
    "move_up": lambda r, a, d: _slide(r, a, d, "y", -1),
    "move_down": lambda r, a, d: _slide(r, a, d, "y", +1),
    "circle_cw": lambda r, a, d: _circle(r, a, d, -1),
    "circle_ccw": lambda r, a, d: _circle(r, a, d, +1),
    "bounce": _bounce,
    "zigzag": _zigzag,
    "pulse": _pulse,
    "jump": _jump,
}


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------

SHAPES = ("disc", "square", "triangle")


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at the origin (one pixel soft edge)."""
    if shape == "disc":
        sdf = np.sqrt(dx * dx + dy * dy) - radius
    elif shape == "square":
        sdf = np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * radius
    else:  # upward triangle: flat base below the centre, apex above
        base = dy - 0.6 * radius
        sides = (2.0 * np.abs(dx) - dy - radius) / np.sqrt(5.0)
        sdf = np.maximum(base, sides)
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _random_colour(rng: np.random.Generator, away_from: np.ndarray | None = None) -> np.ndarray:
    """An RGB colour in [0, 255], at least a clear distance from ``away_from`` when given."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        if away_from is None or np.linalg.norm(colour - away_from) > 120:
            return colour


def _at_luma(colour: np.ndarray, luma: float) -> np.ndarray:
    """``colour`` (..., 3) shifted along the grey axis to luma ``luma`` (hue kept; clipping to
    [0, 255] can move the luma of very saturated colours by a few levels)."""
    return np.clip(colour - (colour @ LUMA_WEIGHTS)[..., None] + luma, 0, 255)


def _background(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """Static scene, (H, W, 3) float: a colour, plus for ``textured`` a linear gradient and a
    faint grating."""
    base = rng.uniform(30, 225, size=3)
    if kind == "plain":
        return np.broadcast_to(base, (height, width, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[..., None]  # (H, W, 1)
    tilt = rng.uniform(-50, 50, size=3)
    freq = rng.uniform(1, 4, size=2) * 2 * np.pi
    grating = np.sin(freq[0] * xx / width + freq[1] * yy / height + rng.uniform(0, 2 * np.pi))
    return base + tilt * ramp + rng.uniform(0, 12) * grating[..., None]


def _draw_static(
    rng: np.random.Generator, scene: np.ndarray, count: int, radius_px: float
) -> np.ndarray:
    height, width = scene.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    for _ in range(count):
        r = radius_px * rng.uniform(0.5, 1.0)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        alpha = _coverage(SHAPES[rng.integers(len(SHAPES))], xx - cx, yy - cy, np.asarray(r))
        scene = scene * (1 - alpha[..., None]) + _random_colour(rng) * alpha[..., None]
    return scene


def render_frames(
    rng: np.random.Generator, track: Track, cfg: SynthConfig, radius_px: float
) -> np.ndarray:
    """Draw the clip's frames: the object on ``track`` over a random static scene.

    Shape:
        returns (T, H, W, 3) uint8 with T = round(duration * fps)
    """
    num = round(cfg.duration * cfg.fps)
    t = np.arange(num) / cfg.fps
    scene = _background(rng, cfg.height, cfg.width, cfg.background)
    low, high = cfg.distractors
    scene = _draw_static(rng, scene, int(rng.integers(low, high + 1)), radius_px)
    colour = _random_colour(rng, away_from=scene.mean(axis=(0, 1)))
    if cfg.colours == "isoluminant":
        scene = _at_luma(scene, SCENE_LUMA)
        colour = _at_luma(colour, OBJECT_LUMA)
    elif cfg.colours == "fixed":
        scene, colour = np.full_like(scene, SCENE_LUMA), np.full(3, OBJECT_LUMA)
    shape = cfg.shapes[rng.integers(len(cfg.shapes))]
    x, y, scale = track.at(t)  # (T,) each
    yy, xx = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float32)
    dx = xx[None] - x[:, None, None].astype(np.float32)  # (T, H, W)
    dy = yy[None] - y[:, None, None].astype(np.float32)
    radius = (radius_px * scale)[:, None, None].astype(np.float32)
    alpha = _coverage(shape, dx, dy, radius)[..., None]  # (T, H, W, 1)
    frames = scene[None].astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha
    noise_std = rng.uniform(*cfg.pixel_noise)
    frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise_std)
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Sound
# --------------------------------------------------------------------------------------------


def render_audio(
    rng: np.random.Generator, track: Track, cfg: SynthConfig, arena: Arena, label: int
) -> np.ndarray:
    """Synthesise the clip's sound, in sync with ``track``.

    Pitch follows the object's height (higher on screen = higher pitch), loudness its horizontal
    position and its size; each event of the track starts a click at its exact time.

    Shape:
        returns (S,) float32 in [-1, 1] with S = round(duration * sample_rate)
    """
    sr = cfg.sample_rate
    t = np.arange(round(cfg.duration * sr)) / sr
    x, y, scale = track.at(t)
    u = (x - arena.x0) / max(arena.x1 - arena.x0, 1e-9)  # 0 left .. 1 right
    v = (y - arena.y0) / max(arena.y1 - arena.y0, 1e-9)  # 0 top .. 1 bottom
    if cfg.class_pitch_step > 0:
        octaves = cfg.class_pitch_step * label + rng.uniform(-cfg.pitch_jitter, cfg.pitch_jitter)
        f0 = CLASS_PITCH_BASE_HZ * 2.0**octaves
    else:
        f0 = rng.uniform(*BASE_PITCH_HZ)
    pitch = f0 * 2.0 ** (rng.uniform(*cfg.pitch_swing) * (0.5 - v))  # (S,)
    pitch = np.minimum(pitch, 0.2 * sr)  # keep the fundamental well below Nyquist
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    harmonics = int(rng.integers(1, 5))
    decay = rng.uniform(0.3, 0.8)
    tone = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        # Harmonics above Nyquist would alias into an unrelated pitch.
        tone += np.where(k * pitch < 0.45 * sr, decay ** (k - 1), 0.0) * np.sin(k * phase)
    tone /= sum(decay ** (k - 1) for k in range(harmonics))
    loudness = (0.3 + 0.7 * u) * scale**2 / np.mean(scale**2)
    sound = 0.5 * loudness * tone

    click_len = round(CLICK_SECONDS * sr)
    envelope = np.exp(-np.arange(click_len) / (CLICK_DECAY_SECONDS * sr))
    for when in track.events:
        start = round(when * sr)
        stop = min(start + click_len, len(t))
        if start < len(t):
            burst = rng.standard_normal(click_len) * envelope * rng.uniform(0.6, 1.0)
            sound[start:stop] += burst[: stop - start]

    sound += rng.standard_normal(len(t)) * rng.uniform(0.003, 0.03)
    # Peak 0.25 .. 0.6: a random volume, with headroom because AAC overshoots sharp clicks.
    sound *= rng.uniform(0.25, 0.6) / max(np.max(np.abs(sound)), 1e-9)
    return sound.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Clips and the data set
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clip:
    """One rendered clip.

    Shape:
        frames: (T, H, W, 3) uint8; audio: (S,) float32 in [-1, 1]; events: (E,) seconds
    """

    label: int
    frames: np.ndarray
    audio: np.ndarray
    events: np.ndarray


# libx264's lossless mode (CRF 0, 8-bit). At CRF 18 the same rendered frames were encoded into
# different streams from run to run on the development machine (732 of 1700 demo videos differed
# between two runs, 460 of them in their decoded frames), which moved every downstream metric; a
# lossless stream decodes to exactly the encoder's input whatever choices it made (measured: two
# runs byte-identical), at 27 instead of 22 MB for the demo set.
LOSSLESS = 0


def clip_seed(seed: int, split: str, label: int, index: int) -> np.random.SeedSequence:
    """The seed of one clip: independent of generation order and of the number of workers."""
    return np.random.SeedSequence([seed, SPLITS.index(split), label, index])


def render_clip(cfg: SynthConfig, label: int, seed: np.random.SeedSequence) -> Clip:
    """Render clip frames and audio of class ``label`` (an index into ``CLASSES``)."""
    rng = np.random.default_rng(seed)
    side = min(cfg.height, cfg.width)
    radius_px = side * rng.uniform(*cfg.object_radius)
    # Leave room for the largest size the object takes (the pulse class grows).
    margin = radius_px * (1 + PULSE_DEPTH) + 1
    arena = Arena(margin, cfg.width - margin, margin, cfg.height - margin)
    track = TRACKS[CLASSES[label].name](rng, arena, cfg.duration)
    frames = render_frames(rng, track, cfg, radius_px)
    audio = render_audio(rng, track, cfg, arena, label)
    return Clip(label, frames, audio, track.events)


@dataclasses.dataclass(frozen=True)
class Job:
    split: str
    label: int
    index: int

    @property
    def relpath(self) -> str:
        name = CLASSES[self.label].name
        return f"{self.split}/{name}/{name}_{self.split}_{self.index:04d}.mp4"


def jobs(cfg: SynthConfig) -> list[Job]:
    """Every clip of the data set, in a fixed order."""
    counts = {"train": cfg.train_per_class, "test": cfg.test_per_class}
    return [
        Job(split, label, index)
        for split in SPLITS
        for label in range(cfg.classes)
        for index in range(counts[split])
    ]


def _write_one(args: tuple[SynthConfig, Path, Job]) -> str:
    cfg, out, job = args
    clip = render_clip(cfg, job.label, clip_seed(cfg.seed, job.split, job.label, job.index))
    path = out / job.relpath
    tmp = path.with_name(path.stem + ".partial.mp4")
    write_mp4(tmp, clip.frames, clip.audio, fps=cfg.fps, sample_rate=cfg.sample_rate, crf=LOSSLESS)
    tmp.replace(path)  # a killed run never leaves a truncated file under the final name
    return job.relpath


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    clips: int
    seconds: float
    out: Path


def prepare_out(out: Path) -> None:
    """Make ``out`` ready for a new demo set; an earlier demo set there is replaced, anything
    else is refused (the log file of an earlier run is kept and appended to)."""
    if out.exists() and not out.is_dir():
        raise SticaError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(p.name != LOG_FILE for p in out.iterdir()):
        if not (out / CLASSES_FILE).is_file():
            raise SticaError(
                f"--out {out}: directory is not empty and holds no {CLASSES_FILE} "
                "(refusing to overwrite something that is not a demo set)"
            )
        for split in SPLITS:  # an earlier demo set: replace it entirely
            shutil.rmtree(out / split, ignore_errors=True)
        (out / CLASSES_FILE).unlink()
    out.mkdir(parents=True, exist_ok=True)


def describe(cfg: SynthConfig) -> dict:
    """The content of ``classes.json``: the classes used, the generator params and the layout."""
    return {
        "layout": "DIR/{split}/{class}/{id}.mp4",
        "splits": list(SPLITS),
        "params": dataclasses.asdict(cfg),
        "classes": [
            {"index": i, **dataclasses.asdict(c)} for i, c in enumerate(CLASSES[: cfg.classes])
        ],
    }


def generate(
    cfg: SynthConfig,
    out: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> SynthSummary:
    """Write the demo set under ``out``: ``out/{train,test}/<class>/<id>.mp4`` + ``classes.json``.

    ``workers`` processes render and encode in parallel (0 = in this process); the files are the
    same for any number of workers.
    """
    from tqdm import tqdm

    if workers < 0:
        raise SticaError(f"--workers must be >= 0, got {workers}")
    out = Path(out)
    prepare_out(out)
    todo = jobs(cfg)
    for split in SPLITS:
        for c in CLASSES[: cfg.classes]:
            (out / split / c.name).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    args = [(cfg, out, job) for job in todo]
    bar = tqdm(total=len(todo), desc="synth", unit="clip", disable=not progress)
    with bar:
        for _ in _map(_write_one, args, workers):
            bar.update(1)
    (out / CLASSES_FILE).write_text(json.dumps(describe(cfg), indent=2) + "\n")
    seconds = time.perf_counter() - started
    log.info(
        "synth: wrote %d clips (%d classes, %d train + %d test per class) to %s in %.1f s",
        len(todo),
        cfg.classes,
        cfg.train_per_class,
        cfg.test_per_class,
        out,
        seconds,
    )
    return SynthSummary(len(todo), seconds, out)


def _map(fn: Callable, items: list, workers: int) -> Iterator:
    if workers == 0 or len(items) <= 1:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("spawn").Pool(min(workers, len(items))) as pool:
        yield from pool.imap_unordered(fn, items, chunksize=1)
