"""Audio classification with a linear probe on the frozen audio trunk (paper appendix 6.2).

ESC-50: 10 equally spaced 2 s sub-clips per sample, 5 official folds (mean top-1 over folds).
DCASE2014: 60 one-second sub-clips, the official train/test split. Any other store (the demo set,
UCF-101, ...): ``other_subclips`` equally spaced sub-clips of ``other_subclip_seconds``, first split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stica import dist
from stica.config import AudioEvalConfig, PretrainConfig
from stica.data.audio import build_frontend
from stica.data.clips import ClipReader
from stica.data.datasets import uniform_starts
from stica.data.store import Store, VideoRecord
from stica.errors import SticaError
from stica.eval.audio_linear import evaluate_folds, pool_activations
from stica.logs import get_logger
from stica.train.checkpoint import Pretrained, load_encoder, random_init

log = get_logger("audio_eval")


@dataclass(frozen=True)
class Protocol:
    name: str
    subclips: int
    seconds: float
    test_folds: tuple[str, ...] | None  # None: every fold in turn (cross-validation)


def protocol_for(store: Store, config: AudioEvalConfig) -> Protocol:
    layout = store.meta.layout
    if layout == "esc50":
        return Protocol("esc50", config.esc50_subclips, config.esc50_subclip_seconds, None)
    if layout == "dcase2014":
        return Protocol("dcase2014", config.dcase_subclips, config.dcase_subclip_seconds, ("test",))
    return Protocol(
        f"{layout} (equally spaced sub-clips, split 1)",
        config.other_subclips,
        config.other_subclip_seconds,
        ("test",),
    )


def sample_fold(record: VideoRecord, protocol: Protocol) -> str:
    """ESC-50: the fold in which the sample is the test set; else its split-1 role."""
    if protocol.test_folds is None:
        return str(record.splits.index("test") + 1) if "test" in record.splits else ""
    return record.split


@torch.no_grad()
def audio_activations(
    model: torch.nn.Module,
    logmel: torch.nn.Module,
    reader: ClipReader,
    records: list[VideoRecord],
    protocol: Protocol,
) -> torch.Tensor:
    """Pooled last-conv activations of every sub-clip, record-major.

    Shape: -> (len(records) * subclips, C * F' * T')
    """
    device = next(model.parameters()).device
    rows = []
    for record in records:
        starts = uniform_starts(record.duration, protocol.seconds, protocol.subclips)
        waves = np.stack([reader.read_audio(record.id, s, protocol.seconds) for s in starts])
        wave = torch.from_numpy(waves.astype(np.float32) / 32768.0).to(device)  # (n, S)
        rows.append(pool_activations(model.audio_map(logmel(wave)).float()).cpu())
    return torch.cat(rows)


def audio_eval(
    store_dir: str | Path,
    ckpt: str,
    config: AudioEvalConfig,
    random_config: PretrainConfig,
    baseline: bool = True,
) -> dict[str, Any]:
    """Linear-probe accuracy of the checkpoint's audio trunk and, with ``baseline``, of a randomly
    initialised one of the same architecture."""
    store = Store(store_dir)
    protocol = protocol_for(store, config)
    records = [r for r in store.records if r.has_audio and r.label >= 0]
    records = [r for r in records if sample_fold(r, protocol)]
    if not records:
        raise SticaError(f"{store.root}: no labelled samples with audio for audio-eval")
    pretrained = load_encoder(ckpt, random_config, seed=config.seed)
    pretrained.check_store(store, video=False)
    reader = ClipReader(store)
    results = {"pretrained": _probe(pretrained, reader, records, protocol, config)}
    if baseline:
        # the same architecture and front end as the checkpoint's
        random_model = random_init(pretrained.config, seed=config.seed)
        results["random_init"] = _probe(random_model, reader, records, protocol, config)
    reader.close()
    return {
        "protocol": {
            "name": protocol.name,
            "subclips": protocol.subclips,
            "subclip_seconds": protocol.seconds,
        },
        "samples": len(records),
        "checkpoint": pretrained.provenance.checkpoint,
        "manifest_hash": store.manifest_hash(),
        **results,
    }


def _probe(
    pretrained: Pretrained, reader, records, protocol, config: AudioEvalConfig
) -> dict[str, Any]:
    model = pretrained.model.eval().to(dist.device())
    logmel = build_frontend(pretrained.config.audio).to(dist.device())
    before = {k: v.detach().clone() for k, v in model.audio_trunk.state_dict().items()}
    features = audio_activations(model, logmel, reader, records, protocol)
    n = protocol.subclips
    labels = np.repeat([r.label for r in records], n)
    sample_ids = np.repeat(np.arange(len(records)), n)
    folds = np.repeat([sample_fold(r, protocol) for r in records], n)
    result = evaluate_folds(
        features,
        labels,
        sample_ids,
        folds,
        test_folds=protocol.test_folds,
        epochs=config.epochs,
        seed=config.seed,
        standardize=config.standardize,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    after = model.audio_trunk.state_dict()
    # MoCo's sanity check: the probe must not have touched the frozen trunk
    changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach())]
    if changed:
        raise RuntimeError(f"audio trunk weights changed during the linear probe: {changed[0]}")
    log.info(
        f"{pretrained.provenance.checkpoint}: top-1 {result.mean:.4f} over folds {list(result.per_fold)}"
    )
    return {
        "top1": result.mean,
        "per_fold": result.per_fold,
        "num_train_samples": result.num_train_samples,
        "num_test_samples": result.num_test_samples,
        "feature_dim": int(features.shape[1]),
        "trunk_unchanged": True,
    }
