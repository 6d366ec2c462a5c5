"""Pretext accuracy: is the pretraining task itself learned, on clips the model never saw?

For every held-out (test split) video with audio, the clip in its middle is embedded twice, by the
video branch (centre crop, pooling, head) and by the audio branch (log-mel of the same span, head),
in eval mode. Audio-to-video top-1 is the fraction of audio clips whose most similar video clip is
their own, among all N held-out clips (chance: 1/N); video-to-audio likewise. This is the
cross-modal instance discrimination the NCE loss trains, measured without augmentation.

Audio-to-video class top-1 relaxes the match to the class: the most similar video clip shows the
same class as the audio's own (chance: about 1 / number of classes). It tells whether the
correspondence learned is the one that carries the class, even while instances are not told apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stica.config import PretrainConfig
from stica.data.audio import build_frontend
from stica.data.augment import EvalTransform
from stica.data.clips import ClipReader
from stica.data.datasets import pad_frames
from stica.data.store import Store, VideoRecord
from stica.eval.metrics import baseline_block
from stica.logs import get_logger
from stica.train.checkpoint import load_pretrained, random_init

log = get_logger("pretext")

BATCH = 32
# at most this many held-out clips (evenly spaced in store order): chance stays 1/N and the
# N x N similarity stays small on Kinetics-size test splits
MAX_CLIPS = 1000


def held_out_records(store: Store) -> list[VideoRecord]:
    """The test split's videos with frames and audio (at most ``MAX_CLIPS``, evenly spaced)."""
    held = [r for r in store.records if r.split == "test" and r.has_audio and r.num_frames > 0]
    if len(held) <= MAX_CLIPS:
        return held
    step = len(held) / MAX_CLIPS
    return [held[int(i * step)] for i in range(MAX_CLIPS)]


@torch.no_grad()
def pretext_accuracy(
    model: torch.nn.Module,
    store: Store,
    records: list[VideoRecord],
    config: PretrainConfig,
) -> dict[str, Any]:
    """Cross-modal instance matching top-1 of ``model`` on the middle clip of each record.

    Returns ``{"audio_to_video_top1", "video_to_audio_top1", "audio_to_video_class_top1",
    "clips", "chance"}``.
    """
    if len(records) < 2:
        return {"clips": len(records)}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    transform = EvalTransform.from_config(config.augment)
    logmel = build_frontend(config.audio).to(device)
    reader = ClipReader(store)
    seconds = config.num_frames / store.meta.fps
    zv, za = [], []
    for first in range(0, len(records), BATCH):
        clips = [
            reader.read(r.id, max(0.0, (r.duration - seconds) / 2), config.num_frames)
            for r in records[first : first + BATCH]
        ]
        frames, sizes = pad_frames([torch.from_numpy(c.frames.copy()) for c in clips])
        audio = torch.stack([torch.from_numpy(c.audio.astype("float32") / 32768.0) for c in clips])
        zv.append(model.embed_video(transform(frames.to(device), sizes)).float())  # (b, E)
        za.append(model.embed_audio(logmel(audio.to(device))).float())  # (b, E)
    model.train(was_training)
    za, zv = F.normalize(torch.cat(za), dim=1), F.normalize(torch.cat(zv), dim=1)  # (N, E)
    sim = za @ zv.t()  # (N, N)
    own = torch.arange(len(records), device=sim.device)
    labels = torch.tensor([r.label for r in records], device=sim.device)
    return {
        "audio_to_video_top1": float((sim.argmax(dim=1) == own).float().mean()),
        "audio_to_video_class_top1": float((labels[sim.argmax(dim=1)] == labels).float().mean()),
        "video_to_audio_top1": float((sim.argmax(dim=0) == own).float().mean()),
        "audio_mean_cosine": mean_pairwise_cosine(za),
        "video_mean_cosine": mean_pairwise_cosine(zv),
        "clips": len(records),
        "chance": 1.0 / len(records),
    }


def mean_pairwise_cosine(z: torch.Tensor) -> float:
    """Mean cosine between the rows of ``z`` (unit rows), the diagonal left out: near 1 when
    every clip gets the same embedding (a collapsed encoder), near 0 for spread-out ones.

    Shape: z (N, E), N >= 2
    """
    n = len(z)
    total = (z.sum(dim=0) ** 2).sum() - (z**2).sum()  # sum over i != j of <z_i, z_j>
    return float(total / (n * (n - 1)))


COLLAPSED = 0.95  # mean pairwise cosine above which an encoder's embeddings count as collapsed


def pretext_report(store_dir: str | Path, ckpt: str | Path) -> dict:
    """Held-out audio-video instance matching of checkpoint ``ckpt`` next to its initial weights
    (the random init its pretraining started from: its params' seed), for the metrics file."""
    store = Store(store_dir)
    records = held_out_records(store)
    if len(records) < 2:
        return {"clips": len(records)}
    trained = load_pretrained(ckpt)
    trained.check_store(store)
    config = trained.config
    initial = random_init(config, seed=config.seed)
    keys = (
        "audio_to_video_top1",
        "video_to_audio_top1",
        "audio_to_video_class_top1",
        "audio_mean_cosine",
        "video_mean_cosine",
    )
    got = [pretext_accuracy(m.model, store, records, config) for m in (trained, initial)]
    block = baseline_block({k: got[0][k] for k in keys}, {k: got[1][k] for k in keys})
    log.info(
        f"pretext (held-out audio->video top-1 of {len(records)} clips): "
        f"{got[0]['audio_to_video_top1']:.3f} (random init {got[1]['audio_to_video_top1']:.3f}, "
        f"chance {1 / len(records):.3f})"
    )
    for modality in ("audio", "video"):
        if got[0][f"{modality}_mean_cosine"] > COLLAPSED:
            log.warning(
                f"the {modality} embeddings of the held-out clips are nearly collapsed (mean "
                f"pairwise cosine {got[0][f'{modality}_mean_cosine']:.3f}): clips get about the "
                "same embedding, which leaves the cross-modal loss little to match (check that "
                "it fell below ln(batch))"
            )
    return {**block, "clips": len(records), "chance": 1.0 / len(records)}
