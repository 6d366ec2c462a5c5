"""A store of videos with several aspect ratios (landscape 4:3 and 16:9, portrait, square), as a
user's own folder is: batches pad the clips to one size and every crop stays inside its own clip,
so pretraining, feature extraction and finetuning run on it (they stopped with a collate error)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stica.config import load_section
from stica.data.augment import EvalTransform, VideoAugment
from stica.data.datasets import pad_frames
from stica.data.preprocess import preprocess
from stica.eval.features import extract_features
from stica.eval.features_io import read_features
from stica.train.checkpoint import load_checkpoint
from stica.train.pretrain import pretrain
from tests import fixtures as fx

SIZES = [(48, 64), (48, 86), (64, 48), (48, 48)]  # (H, W) before preprocessing


def _clip(h, w, seed, t=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def test_pad_frames_repeats_edges_and_records_sizes():
    a, b = _clip(4, 5, 0), _clip(6, 3, 1)
    frames, sizes = pad_frames([a, b])
    assert frames.shape == (2, 3, 6, 5, 3) and sizes.tolist() == [[4, 5], [6, 3]]
    torch.testing.assert_close(frames[0, :, :4, :5], a)
    torch.testing.assert_close(frames[0, :, 4:, :5], a[:, 3:4].expand(3, 2, 5, 3))  # last row
    torch.testing.assert_close(frames[1, :, :6, 3:], b[:, :, 2:3].expand(3, 6, 2, 3))  # last col
    same, sizes = pad_frames([a, a])
    assert torch.equal(same, torch.stack([a, a])) and sizes.tolist() == [[4, 5], [4, 5]]


def test_crops_of_a_padded_clip_equal_those_of_the_clip_alone():
    small, wide = _clip(24, 32, 2), _clip(24, 43, 3)
    padded, sizes = pad_frames([small, wide])
    alone = torch.stack([small, small])  # same batch size: clip 0 gets the same random draws
    cfg = load_section("pretrain").augment
    cfg = dataclasses.replace(cfg, crop_size=16, eval_short_side=24, blur_p=0.5)
    got = VideoAugment(cfg)(padded, torch.Generator().manual_seed(4), sizes=sizes)
    want = VideoAugment(cfg)(alone, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
    evaluate = EvalTransform(16, 24)
    torch.testing.assert_close(
        evaluate.three_crop(padded, sizes)[1], evaluate.three_crop(wide[None])[0]
    )
    torch.testing.assert_close(evaluate(padded, sizes)[0], evaluate(small[None])[0])


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory, tiny_params_file):
    root = tmp_path_factory.mktemp("mixed")
    for c in range(2):
        for i, size in enumerate(SIZES * 2):
            fx.write_video(root / "in" / f"c{c}" / f"v{i}.mp4", 1.0, size, seed=10 * c + i)
    preprocess(root / "in", root / "store", load_section("preprocess", tiny_params_file))
    return root


@pytest.fixture(scope="module")
def mixed_ckpt(mixed_store, tiny_params_file):
    ckpt = mixed_store / "pretrain.pt"
    pretrain(load_section("pretrain", tiny_params_file, ("epochs=1",)), mixed_store / "store", ckpt)
    return ckpt


def test_pretrain_and_extract_features_on_a_mixed_aspect_store(
    mixed_store, mixed_ckpt, tiny_params_file
):
    out = mixed_store / "features.h5"
    features = load_section("features", tiny_params_file)
    pretrain_config = load_section("pretrain", tiny_params_file)
    extract_features(mixed_store / "store", str(mixed_ckpt), features, pretrain_config, out)
    got = read_features(out)
    assert got.features.shape[0] == 16 and np.isfinite(got.features).all()
    # the frames decoded in the main process are padded as the workers pad them
    on_device = dataclasses.replace(features, jpeg_decode="device", batch_size=5)
    summary = extract_features(
        mixed_store / "store", str(mixed_ckpt), on_device, pretrain_config, out
    )
    assert summary["jpeg_decode"] == "device"
    np.testing.assert_allclose(read_features(out).features, got.features, atol=1e-4)


def test_pretraining_frames_decoded_on_the_device_are_padded_as_the_workers_pad_them(
    mixed_store, mixed_ckpt, tiny_params_file, tmp_path
):
    """``pretrain.jpeg_decode: device`` on clips of two sizes: the step pads the decoded frames
    as collate_clips pads PIL's, so the weights are those of the PIL run, bit for bit."""
    config = load_section("pretrain", tiny_params_file, ("epochs=1", "jpeg_decode=device"))
    pretrain(config, mixed_store / "store", tmp_path / "device.pt")
    want = load_checkpoint(mixed_ckpt, kind="pretrain")["model"]
    got = load_checkpoint(tmp_path / "device.pt", kind="pretrain")["model"]
    assert not [k for k, v in want.items() if not torch.equal(v, got[k])]


def test_finetune_on_a_mixed_aspect_store(mixed_store, mixed_ckpt, tiny_params_file):
    from stica.eval.finetune import run_finetune
    from stica.train.finetune import prepare

    config = load_section("finetune", tiny_params_file, ("epochs=1",))
    result = run_finetune(
        prepare(config, mixed_store / "store", mixed_ckpt, (1,)), mixed_store / "ft"
    )
    for init in ("pretrained", "random_init"):
        assert 0.0 <= result["mean"]["video_top1"][init] <= 1.0
