"""Per-video features for retrieval (paper sec. 4.3): 10 uniformly spaced clips per video, the last
residual block's map max-pooled, averaged over the clips, L2-normalised; audio likewise from the
audio trunk where the video has audio. Clip length, crop, normalisation and audio front end are the
checkpoint's own (:func:`~stica.train.checkpoint.load_pretrained`), and the store must match its
fps, frame size and sample rate.

Resumable: the features of finished chunks of videos are kept in a partial file beside the output
(with a fingerprint of the inputs), so a killed run continues from its last finished chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from stica import dist
from stica.config import FeaturesConfig, PretrainConfig, to_dict
from stica.data.audio import build_frontend
from stica.data.augment import EvalTransform
from stica.data.datasets import UniformClips
from stica.data.store import Store
from stica.determinism import deterministic_mode
from stica.errors import SticaError
from stica.eval.features_io import write_features
from stica.logs import get_logger
from stica.train.checkpoint import library_versions, load_encoder

log = get_logger("features")


def partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


@torch.no_grad()
def extract_features(
    store_dir: str | Path,
    ckpt: str,
    config: FeaturesConfig,
    random_config: PretrainConfig,
    out: str | Path,
) -> dict[str, Any]:
    """Write the features file ``out`` for every video of the store; returns a summary.

    Always deterministic: forward only, it costs nothing on CPU, and on GPU the per-video sums
    (``index_add_``) and cuDNN need torch's deterministic mode.
    """
    with deterministic_mode(True, dist.device()):
        return _extract_features(store_dir, ckpt, config, random_config, out)


def _extract_features(
    store_dir: str | Path,
    ckpt: str,
    config: FeaturesConfig,
    random_config: PretrainConfig,
    out: str | Path,
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
    transform = EvalTransform.from_config(made_with.augment)
    logmel = build_frontend(made_with.audio).to(device)

    fingerprint = {
        "checkpoint": provenance.checkpoint,
        "model": _state_digest(model),
        "manifest_hash": store.manifest_hash(),
        "config": to_dict(config),
    }
    done = _load_partial(partial_path(out), fingerprint)
    video_feats: list[np.ndarray] = done.get("video", [])
    audio_feats: list[np.ndarray] = done.get("audio", [])
    clip_feats: list[np.ndarray] = done.get("clips", [])
    start = sum(len(v) for v in video_feats)
    if start:
        log.info(f"resuming feature extraction at video {start}/{len(records)}")

    bar = tqdm(total=len(records), initial=start, desc="extract-features", unit="video")
    for first in range(start, len(records), config.chunk_videos):
        chunk = records[first : first + config.chunk_videos]
        v, a, c = _chunk_features(
            model, transform, logmel, store, chunk, num_frames, config, device
        )
        video_feats.append(v)
        audio_feats.append(a)
        clip_feats.append(c)
        _save_partial(partial_path(out), fingerprint, video_feats, audio_feats, clip_feats)
        bar.update(len(chunk))
    bar.close()

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
    partial_path(out).unlink(missing_ok=True)
    return {
        "videos": len(records),
        "with_audio": int(has_audio.sum()),
        "checkpoint": provenance.checkpoint,
    }


def _chunk_features(model, transform, logmel, store, chunk, num_frames, config, device):
    """Shape: -> video (n, D), audio (n, Da), each row L2-normalised (audio rows may be zero),
    and every clip's own video feature (n, C, D), L2-normalised, as float16."""
    clips = config.clips_per_video
    dataset = UniformClips(store, chunk, num_frames, clips)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, num_workers=config.workers
    )
    video_sum = audio_sum = per_clip = None
    first = 0
    for batch in loader:
        frames = batch["frames"].to(device)  # (B, T, H, W, 3) uint8
        fmap = model.video_map(transform(frames))  # (B, D, T1, H1, W1)
        v = fmap.amax(dim=(2, 3, 4)).float()  # (B, D): max-pool of the last block's map
        a = model.audio_features(logmel(batch["audio"].to(device))).float()  # (B, Da)
        index = batch["video"].to(device)
        if video_sum is None:
            video_sum = v.new_zeros(len(chunk), v.shape[1])
            audio_sum = a.new_zeros(len(chunk), a.shape[1])
            per_clip = v.new_zeros(len(chunk) * clips, v.shape[1])
        video_sum.index_add_(0, index, v)
        audio_sum.index_add_(0, index, a)
        per_clip[first : first + len(v)] = F.normalize(v, dim=1)  # items are video-major
        first += len(v)
    # the mean over clips has the direction of the sum, so normalising the sum is enough
    return (
        F.normalize(video_sum, dim=1).cpu().numpy(),
        F.normalize(audio_sum, dim=1).cpu().numpy(),
        per_clip.view(len(chunk), clips, -1).cpu().numpy().astype(np.float16),
    )


def _state_digest(model: torch.nn.Module) -> float:
    """A cheap fingerprint of the weights (sum of |w|), enough to tell two models apart."""
    return float(sum(p.detach().abs().sum().item() for p in model.state_dict().values()))


def _load_partial(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = torch.load(path, weights_only=True)
    except Exception:  # a partial file from a crash mid-write is only a lost chunk
        log.warning(f"{path}: unreadable partial features, starting over")
        return {}
    if data.get("fingerprint") != fingerprint:
        log.info(f"{path}: inputs changed since the partial run, starting over")
        return {}
    return {k: [t.numpy() for t in data[k]] for k in ("video", "audio", "clips")}


def _save_partial(path: Path, fingerprint, video_feats, audio_feats, clip_feats) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "fingerprint": fingerprint,
            "video": [torch.from_numpy(v) for v in video_feats],
            "audio": [torch.from_numpy(a) for a in audio_feats],
            "clips": [torch.from_numpy(c) for c in clip_feats],
        },
        tmp,
    )
    tmp.replace(path)
