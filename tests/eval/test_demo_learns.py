"""The demo profile learns: pretrained video features beat random init on kNN top-1.

A reduced demo (fewer clips and steps than ``dvc repro``, the committed demo profile otherwise)
pretrains with several seeds; for each seed, the frozen max-pooled features of the pretrained
trunk and of a randomly initialised one (the same seed) are scored by kNN top-1 on the test
videos (the nearest train video's class: the probe that moved most consistently in the demo).
Every seed's gain must exceed twice its standard error over the test videos, and the seeds'
scores must not overlap: the worst pretrained seed above the best random-init one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from stica.config import load_section
from tests.conftest import REPO_ROOT, write_params

SEEDS = (0, 1)
PROBE = "kNN-1 top-1"
# The committed demo profile on fewer clips; pretraining keeps its steps-per-second budget
# small by running fewer epochs over a smaller set (REDUCED_STEPS steps of the demo's batch).
# 240, not fewer: at 160 steps whether a seed had left chance by the end was a coin toss that
# float rounding decides. On another CPU (AMD EPYC, 2026-12-06) the same code gave seed 1 0.21
# (random init 0.16) where an earlier machine gave 0.86, and a float-equivalent augmentation
# 0.34; of six seed runs at 160 steps, four ended between 0.31 and 0.37. At 240 steps seeds 0-5
# (1 thread each) gave 0.43, 0.85, 0.90, 0.88, 0.83, 0.75 against random init 0.13-0.28; inside
# the full suite (2 threads) seeds 0, 1 gave 0.90 and 0.92 against 0.21 and 0.16.
REDUCED = {"synth": {"train_per_class": 40, "test_per_class": 10}}
REDUCED_STEPS = 240


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    from stica.data.preprocess import preprocess
    from stica.data.synth import generate

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["synth"].update(REDUCED["synth"])
    params["preprocess"]["workers"] = 0
    root = tmp_path_factory.mktemp("reduced_demo")
    path = write_params(root / "params.yaml", params)
    generate(load_section("synth", path), root / "demo", workers=2, progress=False)
    preprocess(root / "demo", root / "store", load_section("preprocess", path), progress=False)
    return root, path


# In the default suite since the demo videos are lossless (stica.data.synth.LOSSLESS): before,
# libx264 wrote other videos on every run. About 3.5 min on 2 cores.
@pytest.mark.slow
def test_pretrained_features_beat_random_init_beyond_the_seed_spread(reduced):
    from stica.eval.features import extract_features
    from stica.eval.features_io import read_features
    from stica.eval.probes import feature_probes
    from stica.train.pretrain import pretrain

    root, path = reduced
    pretrain_cfg = load_section("pretrain", path)
    train_videos = REDUCED["synth"]["train_per_class"] * load_section("synth", path).classes
    steps_per_epoch = train_videos // pretrain_cfg.batch_size
    epochs = max(1, round(REDUCED_STEPS / steps_per_epoch))
    features_cfg = dataclasses.replace(load_section("features", path), clips_per_video=2)
    scores_by_seed = {"pretrained": [], "random": []}
    for seed in SEEDS:
        config = dataclasses.replace(pretrain_cfg, seed=seed, epochs=epochs)
        ckpt = root / f"pretrain-{seed}.pt"
        pretrain(config, root / "store", ckpt)
        scores = {}
        for init, source in (("pretrained", str(ckpt)), ("random", "random")):
            out = root / f"features-{seed}-{init}.h5"
            extract_features(
                root / "store", source, dataclasses.replace(features_cfg, seed=seed), config, out
            )
            probes = feature_probes(read_features(out), (1,), 1.0)
            scores[init] = probes["video"][PROBE]
        print(
            f"seed {seed}: {PROBE} pretrained {scores['pretrained']:.3f}, "
            f"random init {scores['random']:.3f}"
        )
        for init in scores_by_seed:
            scores_by_seed[init].append(scores[init])
    test_videos = REDUCED["synth"]["test_per_class"] * load_section("synth", path).classes
    for pretrained, random_init in zip(
        scores_by_seed["pretrained"], scores_by_seed["random"], strict=True
    ):
        gain = pretrained - random_init
        # two accuracies on the same test videos, each binomial
        error = np.sqrt(
            (pretrained * (1 - pretrained) + random_init * (1 - random_init)) / test_videos
        )
        assert gain > 2 * error, (pretrained, random_init, error)
    assert min(scores_by_seed["pretrained"]) > max(scores_by_seed["random"]), scores_by_seed
