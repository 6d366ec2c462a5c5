"""Per-video features for retrieval (paper sec. 4.3): 10 uniformly spaced clips per video, the last
residual block's map max-pooled, averaged over the clips, L2-normalised; audio likewise from the
audio trunk where the video has audio. Clip length, crop, normalisation and audio front end are the
checkpoint's own (:func:`~stica.train.checkpoint.load_pretrained`), and the store must match its
fps, frame size and sample rate.

Resumable: each finished chunk of videos is written once, atomically, as its own small file in a
partial folder beside the output (:func:`partial_path`, with a fingerprint of the inputs written
when the run starts), so a killed run continues after its last finished chunk; the cost of saving
stays one chunk's features however many chunks came before. The folder goes once the output is
written.

Speed: one DataLoader for the whole run (its workers persist across chunks, batches never straddle
two chunks, the overlapping clips of a video decoded once), pinned batches and asynchronous copies
on CUDA, bf16 autocast (``features.autocast``) and a channels_last_3d trunk on CUDA by default;
optionally a compiled trunk (``features.compile``; batches padded to one shape) and cuDNN
autotuning (``features.deterministic: false``). On a GPU the stored JPEG frames are decoded there
in batches (``features.jpeg_decode``): the workers only read the files. The summary says how much
of the wall time the loop waited for the loader.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from stica import dist, perf
from stica.config import FeaturesConfig, PretrainConfig, to_dict
from stica.data.audio import build_frontend
from stica.data.augment import EvalTransform
from stica.data.datasets import UniformClips
from stica.data.jpeg import batch_frames, clip_collate, decode_on_device
from stica.data.store import Store
from stica.determinism import run_mode
from stica.errors import SticaError
from stica.eval.features_io import write_features
from stica.logs import get_logger
from stica.train.checkpoint import library_versions, load_encoder

log = get_logger("features")


def partial_path(out: Path) -> Path:
    """The folder of a run's finished chunks, beside ``out`` (hidden; git ignores ``.*.partial``)."""
    return out.with_name(f".{out.name}.partial")


@torch.no_grad()
def extract_features(
    store_dir: str | Path,
    ckpt: str,
    config: FeaturesConfig,
    random_config: PretrainConfig,
    out: str | Path,
    compile_backend: str = "inductor",
) -> dict[str, Any]:
    """Write the features file ``out`` for every video of the store; returns a summary.

    Deterministic by default (``features.deterministic``): forward only, it costs nothing on CPU,
    and on GPU the per-video sums (``index_add_``) and cuDNN need torch's deterministic mode.
    ``compile_backend`` is torch.compile's when ``features.compile`` is on (tests: "aot_eager").
    """
    device = dist.device()
    with run_mode(config.deterministic, device):
        return _extract_features(store_dir, ckpt, config, random_config, out, compile_backend)


def _extract_features(
    store_dir: str | Path,
    ckpt: str,
    config: FeaturesConfig,
    random_config: PretrainConfig,
    out: str | Path,
    compile_backend: str,
) -> dict[str, Any]:
    out = Path(out)
    store = Store(store_dir)
    records = [r for r in store.records if r.num_frames > 0]
    if not records:
        raise SticaError(f"{store.root}: no videos with frames to extract features from")
    encoder = load_encoder(ckpt, random_config, seed=config.seed)
    encoder.check_store(store)
    model, made_with, provenance = encoder  # made_with: the params of the model's clips
    num_frames = made_with.num_frames
    device = dist.device()
    model.eval().to(device)
    switches = perf.configure_trunk(
        model.video_trunk, device, config.compile, "auto", backend=compile_backend
    )
    # a compiled trunk sees one batch shape: the last, smaller batch is padded up to it
    pad_to = config.batch_size if switches["compile"] else None
    amp = perf.resolve(config.autocast, device)
    transform = EvalTransform.from_config(made_with.augment)
    logmel = build_frontend(made_with.audio).to(device)

    fingerprint = {
        "checkpoint": provenance.checkpoint,
        "model": _state_digest(model),
        "manifest_hash": store.manifest_hash(),
        "config": to_dict(config),
    }
    partial = partial_path(out)
    done = _resume_partial(
        partial, fingerprint, len(records), config.chunk_videos, config.store_clips
    )
    video_feats: list[np.ndarray] = [d["video"] for d in done]
    audio_feats: list[np.ndarray] = [d["audio"] for d in done]
    clip_feats: list[np.ndarray] = [d["clips"] for d in done if "clips" in d]
    start = sum(len(v) for v in video_feats)
    if start:
        log.info(f"resuming feature extraction at video {start}/{len(records)}")

    bar = tqdm(total=len(records), initial=start, desc="extract-features", unit="video")
    todo = records[start:]
    clips = config.clips_per_video
    sampler = ChunkBatches(len(todo), clips, config.chunk_videos, config.batch_size)
    on_device = decode_on_device(config.jpeg_decode, device)
    loader = torch.utils.data.DataLoader(
        UniformClips(store, todo, num_frames, clips, encoded=on_device),
        batch_sampler=sampler,
        collate_fn=clip_collate(on_device),
        **perf.loader_options(config.workers, device),
    )
    meter = perf.Throughput(device, count_key="video")
    batches = meter.batches(loader)
    started = time.perf_counter()
    # (time, videos done, data wait so far) when the first chunk ended
    warm: tuple[float, int, float] | None = None
    for first in range(0, len(todo), config.chunk_videos):
        chunk = todo[first : first + config.chunk_videos]
        chunk_batches = (next(batches) for _ in range(sampler.batches_in(len(chunk))))
        with perf.autocast(device, amp):
            v, a, c = _chunk_features(
                model, transform, logmel, chunk_batches, first, len(chunk), clips, device, pad_to
            )
        video_feats.append(v)
        audio_feats.append(a)
        if config.store_clips:
            clip_feats.append(c)
        _save_chunk(partial, start + first, v, a, c if config.store_clips else None)
        bar.update(len(chunk))
        if warm is None:
            warm = (time.perf_counter(), first + len(chunk), meter.wait_s)
        bar.set_postfix_str(
            f"{(first + len(chunk)) * clips / (time.perf_counter() - started):.0f} clips/s"
        )
    seconds = time.perf_counter() - started
    batches.close()  # the meter's wall clock stops
    bar.close()
    steady = warm is not None and len(todo) > warm[1]
    steady_seconds = started + seconds - warm[0] if steady else 0.0
    rates = {
        "clips_per_s": len(todo) * clips / seconds if todo and seconds > 0 else None,
        # after the first chunk, which pays for starting the workers, compiling and autotuning
        "steady_clips_per_s": (len(todo) - warm[1]) * clips / steady_seconds if steady else None,
        # the share of the loop's wall time spent waiting for the loader's next batch
        "data_wait_fraction": meter.data_wait_fraction,
        "steady_data_wait_fraction": (meter.wait_s - warm[2]) / steady_seconds if steady else None,
        "peak_gpu_memory_mb": meter.peak_memory_mb(),
    }
    if todo:
        log.info(
            f"{len(todo)} videos x {clips} clips, JPEG frames decoded "
            f"{'in batches on ' + device.type if on_device else 'in the loader workers (PIL)'}: "
            + ", ".join(f"{k} {v:.3g}" for k, v in rates.items() if v is not None)
        )

    has_audio = np.array([r.has_audio for r in records], dtype=bool)
    audio = np.concatenate(audio_feats)
    audio[~has_audio] = 0.0
    write_features(
        out,
        np.concatenate(video_feats),
        np.array([r.label for r in records], dtype=np.int64),
        [r.split for r in records],
        [r.id for r in records],
        manifest_hash=store.manifest_hash(),
        store=store.root,
        checkpoint=provenance.checkpoint,
        model_config=to_dict(made_with.model),
        versions=library_versions(),
        class_names=list(store.meta.classes),
        audio_features=audio,
        has_audio=has_audio,
        clip_features=np.concatenate(clip_feats) if config.store_clips else None,
    )
    _remove_partial(partial)
    return {
        "videos": len(records),
        "with_audio": int(has_audio.sum()),
        "checkpoint": provenance.checkpoint,
        **rates,
        "jpeg_decode": "device" if on_device else "cpu",
        "workers": config.workers,
        "batch_size": config.batch_size,
        "autocast": amp,
        **switches,
        "deterministic": config.deterministic,
    }


class ChunkBatches(torch.utils.data.Sampler):
    """Batches of clip indices, in order, that never straddle two chunks of ``chunk_videos``
    videos (item ``i`` is clip ``i % clips`` of video ``i // clips``, as in
    :class:`~stica.data.datasets.UniformClips`): one loader serves every chunk.

    Shape:
        yields lists of at most ``batch_size`` indices
    """

    def __init__(self, videos: int, clips: int, chunk_videos: int, batch_size: int) -> None:
        self.videos, self.clips = videos, clips
        self.chunk_videos, self.batch_size = chunk_videos, batch_size

    def batches_in(self, chunk_len: int) -> int:
        return math.ceil(chunk_len * self.clips / self.batch_size)

    def __len__(self) -> int:
        full, last = divmod(self.videos, self.chunk_videos)
        return full * self.batches_in(self.chunk_videos) + (self.batches_in(last) if last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        for first in range(0, self.videos, self.chunk_videos):
            lo = first * self.clips
            hi = min(first + self.chunk_videos, self.videos) * self.clips
            for b in range(lo, hi, self.batch_size):
                yield list(range(b, min(b + self.batch_size, hi)))


def _chunk_features(model, transform, logmel, batches, offset, n, clips, device, pad_to=None):
    """Features of the ``n`` videos from ``offset`` (indices of the loader's dataset), whose
    clips come in ``batches`` in order; a batch smaller than ``pad_to`` goes through the video
    trunk padded with copies of its last clip (a compiled trunk's one shape).

    Shape: -> video (n, D), audio (n, Da), each row L2-normalised (audio rows may be zero),
    and every clip's own video feature (n, C, D), L2-normalised, as float16."""
    video_sum = audio_sum = per_clip = None
    first = 0
    for batch in batches:
        frames, sizes = batch_frames(batch, device)  # (B, T, H, W, 3) uint8, (B, 2)
        b = len(frames)
        if pad_to is not None and b < pad_to:
            frames = torch.cat([frames, frames[-1:].expand(pad_to - b, *frames.shape[1:])])
            sizes = torch.cat([sizes, sizes[-1:].expand(pad_to - b, 2)])
        fmap = model.video_map(transform(frames, sizes))[:b]  # (B, D, T1, H1, W1)
        v = fmap.amax(dim=(2, 3, 4)).float()  # (B, D): max-pool of the last block's map
        spec = logmel(batch["audio"].to(device, non_blocking=True))
        a = model.audio_features(spec).float()  # (B, Da)
        index = batch["video"].to(device, non_blocking=True) - offset
        if video_sum is None:
            video_sum = v.new_zeros(n, v.shape[1])
            audio_sum = a.new_zeros(n, a.shape[1])
            per_clip = v.new_zeros(n * clips, v.shape[1])
        video_sum.index_add_(0, index, v)
        audio_sum.index_add_(0, index, a)
        per_clip[first : first + len(v)] = F.normalize(v, dim=1)  # items are video-major
        first += len(v)
    # the mean over clips has the direction of the sum, so normalising the sum is enough
    return (
        F.normalize(video_sum, dim=1).cpu().numpy(),
        F.normalize(audio_sum, dim=1).cpu().numpy(),
        per_clip.view(n, clips, -1).cpu().numpy().astype(np.float16),
    )


def _state_digest(model: torch.nn.Module) -> float:
    """A cheap fingerprint of the weights (sum of |w|), enough to tell two models apart."""
    return float(sum(p.detach().abs().sum().item() for p in model.state_dict().values()))


FINGERPRINT = "fingerprint.json"


def _chunk_path(folder: Path, first: int) -> Path:
    """The file of the chunk whose first video is the store's ``first``-th (with frames)."""
    return folder / f"chunk-{first:09d}.pt"


def _resume_partial(
    folder: Path, fingerprint: dict[str, Any], total: int, chunk_videos: int, with_clips: bool
) -> list[dict[str, np.ndarray]]:
    """The finished chunks of a killed run with the same ``fingerprint``, in order from the
    first video; leaves ``folder`` holding exactly them and the fingerprint (a new folder with
    the fingerprint alone when nothing can be resumed).

    Shape: -> each chunk's video (n, D), audio (n, Da) and, ``with_clips``, clips (n, C, D)."""
    if folder.is_file() or folder.is_symlink():  # earlier stica: one file rewritten every chunk
        log.info(f"{folder}: partial features in an older layout, starting over")
        folder.unlink()
    folder.with_name(folder.name + ".tmp").unlink(missing_ok=True)  # that layout's temp file
    chunks: list[dict[str, np.ndarray]] = []
    if folder.is_dir():
        try:
            saved = json.loads((folder / FINGERPRINT).read_text())
        except (OSError, ValueError):
            log.warning(f"{folder}: unreadable fingerprint of the partial run, starting over")
            saved = None
        # through JSON, as written: tuples become lists
        if saved == json.loads(json.dumps(fingerprint)):
            chunks = _finished_chunks(folder, total, chunk_videos, with_clips)
        else:
            if saved is not None:
                log.info(f"{folder}: inputs changed since the partial run, starting over")
            shutil.rmtree(folder)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        _write_atomic(folder / FINGERPRINT, lambda tmp: tmp.write_text(json.dumps(fingerprint)))
    return chunks


def _finished_chunks(
    folder: Path, total: int, chunk_videos: int, with_clips: bool
) -> list[dict[str, np.ndarray]]:
    """The contiguous chunks from video 0 in ``folder``, each checked to start where the one
    before ended and to hold as many videos as its place in the run; every other file (a chunk
    from a crash mid-write, a temp file) is deleted, so its chunk is computed again."""
    chunks: list[dict[str, np.ndarray]] = []
    first = 0
    while first < total:
        path = _chunk_path(folder, first)
        n = min(chunk_videos, total - first)
        if not path.exists():
            break
        try:
            data = {
                k: v.numpy() if torch.is_tensor(v) else v
                for k, v in torch.load(path, weights_only=True).items()
            }
            rows = {len(data[k]) for k in ("video", "audio", "clips") if k in data}
            fits = data["first"] == first and rows == {n} and ("clips" in data) == with_clips
        except Exception:  # a chunk file from a crash mid-write is only a lost chunk
            fits = False
        if not fits:
            log.warning(f"{path}: unreadable or mismatched chunk, computing it again")
            break
        chunks.append(data)
        first += n
    keep = {_chunk_path(folder, d["first"]) for d in chunks} | {folder / FINGERPRINT}
    for path in folder.iterdir():
        if path not in keep:
            path.unlink()
    return chunks


def _save_chunk(
    folder: Path, first: int, video: np.ndarray, audio: np.ndarray, clips: np.ndarray | None
) -> None:
    """Write one finished chunk (its first video's index ``first``) as its own file, once."""
    data = {"first": first, "video": torch.from_numpy(video), "audio": torch.from_numpy(audio)}
    if clips is not None:
        data["clips"] = torch.from_numpy(clips)
    _write_atomic(_chunk_path(folder, first), lambda tmp: torch.save(data, tmp))


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``: a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def _remove_partial(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    else:
        folder.unlink(missing_ok=True)
