"""``stica bench demo``: does pretraining help, beyond the seed-to-seed spread?

For each seed, the demo's pretraining and every evaluation run on one store, for the pretrained
model and the random-init model of the same architecture:

- retrieval R@k and the class probes of the frozen video features (kNN-1/20, linear; per video
  and per clip), the audio linear probe, finetuning top-1;
- two diagnostics: the pretext accuracy (held-out audio->video matching: is the pretext task
  learned?) and a supervised upper bound (the same trunk trained with labels on the same number of
  steps and batch as pretraining: can this budget separate the classes at all?).

The summary is the mean and standard deviation over seeds of every metric, for both inits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stica.config import (
    AudioEvalConfig,
    FeaturesConfig,
    FinetuneConfig,
    PretrainConfig,
    RetrieveConfig,
    to_dict,
)
from stica.logs import get_logger

log = get_logger("bench.demo")

INITS = ("pretrained", "random_init")


def supervised_upper_bound(
    pretrain_config: PretrainConfig,
    finetune_config: FinetuneConfig,
    store_dir: str | Path,
    ckpt: str | Path,
    work: Path,
) -> dict[str, Any]:
    """Train the randomly initialised video trunk + pooling + a linear classifier with labels on
    pretraining's budget (its epochs and batch; finetuning's lr schedule stretched to it) and
    score it as finetuning does (split 1)."""
    from stica import dist
    from stica.eval.finetune import evaluate_test
    from stica.train.finetune import prepare, train_split

    epochs = pretrain_config.epochs
    config = dataclasses.replace(
        finetune_config,
        epochs=epochs,
        batch_size=pretrain_config.batch_size,
        backbone_lr_scale=1.0,  # from scratch: every layer at the classifier's lr
        labelled_per_class=0,  # every pretraining video, labelled
        train_clips_per_video=1,  # one clip per video per epoch, as pretraining
        warmup_epochs=min(finetune_config.warmup_epochs, epochs / 6),
        milestones=tuple(sorted({max(1, round(epochs * f)) for f in (0.5, 5 / 6)})),
        test_from_epoch=0,
        baseline=True,
        splits=(1,),
    )
    plan = prepare(config, store_dir, ckpt)
    init = next(i for i in plan.inits if i.name == "random_init")
    data = plan.splits[0]
    model, _ = train_split(
        plan,
        data,
        init,
        work / "supervised.state",
        {"seed": config.seed},
        dist.device(),
        dist.StopRequested(),
    )
    result = evaluate_test(model, plan, data.test, config)
    (work / "supervised.state").unlink(missing_ok=True)
    return result["metrics"]


def run_seed(
    seed: int,
    store_dir: str | Path,
    configs: dict[str, Any],
    work: Path,
    supervised: bool = True,
) -> dict[str, dict[str, float]]:
    """Every metric of one seed: ``{metric name: {"pretrained": x, "random_init": y}}``; the
    diagnostics that have no random-init counterpart carry only ``pretrained``.

    The metrics are kept in ``work/metrics.json`` with the params that made them, and a rerun with
    the same params returns them: seeds can run as separate processes (``--first-seed K --seeds
    1`` each, one thread each) and a last ``--seeds N`` over the same work folder only gathers.
    """
    from stica.eval.audio_eval import audio_eval
    from stica.eval.features import extract_features
    from stica.eval.features_io import read_features
    from stica.eval.finetune import run_finetune
    from stica.eval.pretext import pretext_report
    from stica.eval.probes import feature_probes
    from stica.eval.retrieval import evaluate_retrieval
    from stica.train.finetune import prepare
    from stica.train.pretrain import pretrain

    work.mkdir(parents=True, exist_ok=True)
    pre: PretrainConfig = dataclasses.replace(configs["pretrain"], seed=seed)
    feats_cfg: FeaturesConfig = dataclasses.replace(configs["features"], seed=seed)
    ret: RetrieveConfig = configs["retrieve"]
    audio_cfg: AudioEvalConfig = dataclasses.replace(configs["audio_eval"], seed=seed)
    ft_cfg: FinetuneConfig = dataclasses.replace(configs["finetune"], seed=seed, baseline=True)
    ckpt = work / "pretrain.pt"
    record = work / "metrics.json"
    made_with = json.loads(
        json.dumps(
            {
                "sections": {k: to_dict(v) for k, v in sorted(configs.items())},
                "seed": seed,
                "store": str(Path(store_dir).resolve()),
                "supervised": supervised,
            }
        )
    )
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("made_with") == made_with:
            return saved["metrics"]
    out: dict[str, dict[str, float]] = {}

    started = time.time()
    if not ckpt.exists():
        pretrain(pre, store_dir, ckpt)
    out["pretrain seconds"] = {"pretrained": time.time() - started}
    pretext = pretext_report(store_dir, ckpt)
    for key in ("audio_to_video_top1", "video_to_audio_top1", "audio_to_video_class_top1"):
        if key in pretext:
            out[f"pretext {key}"] = {
                "pretrained": pretext[key]["pretrained"],
                "random_init": pretext[key]["random_init"],
            }

    features = {}
    for init, source in (("pretrained", str(ckpt)), ("random_init", "random")):
        path = work / f"features-{init}.h5"
        if not path.exists():
            extract_features(store_dir, source, feats_cfg, pre, path)
        features[init] = read_features(path)
    for init, fs in features.items():
        for k, v in evaluate_retrieval(fs, ret.k).recall.items():
            out.setdefault(f"retrieval R@{k}", {})[init] = v
        for level, values in feature_probes(fs, ret.knn_k, ret.linear_c).items():
            for name, v in values.items():
                out.setdefault(f"{level} {name}", {})[init] = v

    audio = audio_eval(store_dir, str(ckpt), audio_cfg, pre, baseline=True)
    out["audio linear top-1"] = {i: audio[i]["top1"] for i in INITS}

    plan = prepare(ft_cfg, store_dir, ckpt, (1,))
    finetuned = run_finetune(plan, work / "finetune")
    for key in ("video_top1", "clip_top1"):
        block = finetuned["mean"][key]
        out[f"finetune {key}"] = {i: block[i] for i in INITS}

    if supervised:
        sup = supervised_upper_bound(pre, ft_cfg, store_dir, ckpt, work)
        out["supervised upper bound video_top1"] = {"pretrained": sup["video_top1"]}
    record.write_text(json.dumps({"made_with": made_with, "metrics": out}, indent=2) + "\n")
    return out


def summarise(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Mean and (sample) standard deviation over seeds of every metric and init."""
    summary: dict[str, dict[str, Any]] = {}
    for metric in per_seed[0]:
        summary[metric] = {}
        for init in INITS:
            values = [s[metric][init] for s in per_seed if init in s.get(metric, {})]
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
                summary[metric][init] = {
                    "mean": float(np.mean(values)),
                    "std": std,
                    "n": len(values),
                }
    return summary


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """A plain table: metric | pretrained mean ± std | random init mean ± std | difference."""

    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "-"
        std = "" if math.isnan(entry["std"]) else f" ± {entry['std']:.3f}"
        return f"{entry['mean']:.3f}{std}"

    rows = [("metric", "pretrained", "random init", "difference")]
    for metric, entry in summary.items():
        p, r = entry.get("pretrained"), entry.get("random_init")
        diff = f"{p['mean'] - r['mean']:+.3f}" if p and r else "-"
        rows.append((metric, cell(p), cell(r), diff))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
