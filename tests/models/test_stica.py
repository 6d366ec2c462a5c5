"""SticaModel: rebuilt from its config dict, training-step outputs, gradients everywhere."""

import dataclasses

import pytest
import torch

from stica.config import ConfigError, FeatureCropConfig, ModelConfig
from stica.models.crops import embed_crops, sample_crops
from stica.models.stica import SticaModel, build_model, model_config_dict

TINY = ModelConfig(width=8, head_hidden=32, embed_dim=16, pooling="transformer")


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _embed_with_tokens(model, fmap):
    """The model's crop embedding: temporal crops resampled to the full map's T1 tokens."""
    return lambda sets: model.embed_video_tokens(sets, tokens=fmap.shape[2])


def test_rebuilt_from_config_dict_has_identical_state_dict():
    model = SticaModel(TINY)
    saved = dataclasses.asdict(model.config)
    assert saved == model_config_dict(model)
    rebuilt = build_model(saved)
    assert rebuilt.config == model.config
    assert _shapes(rebuilt) == _shapes(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize(
    "change",
    [{"pooling": "avg"}, {"width": 16}, {"embed_dim": 8}, {"transformer_layers": 1}],
)
def test_a_different_config_gives_a_different_state_dict(change):
    other = build_model({**dataclasses.asdict(TINY), **change})
    assert _shapes(other) != _shapes(SticaModel(TINY))
    with pytest.raises(RuntimeError):
        other.load_state_dict(SticaModel(TINY).state_dict(), strict=True)


def test_bad_model_config_is_refused_with_param_name():
    with pytest.raises(ConfigError, match="unknown param 'pretrain.model.depth'"):
        build_model({**dataclasses.asdict(TINY), "depth": 3})
    with pytest.raises(ConfigError, match="pretrain.model.transformer_heads"):
        ModelConfig(width=8, transformer_heads=5)
    with pytest.raises(ConfigError, match="pretrain.model.pooling"):
        build_model({"pooling": "max"})


def test_training_step_outputs_and_gradients():
    torch.manual_seed(0)
    model = SticaModel(TINY).train()
    l1, l2 = torch.randn(2, 2, 3, 16, 32, 32).unbind(0)
    spec = torch.randn(2, 1, 257, 40)
    crops = FeatureCropConfig(space_medium_size=2, space_small_size=1, time_medium=2, time_small=0)
    out = model([l1, l2], spec, crops, torch.Generator().manual_seed(0))

    assert model.video_map_shape(16, 32, 32) == (64, 4, 2, 2)
    assert [tuple(z.shape) for z in out["video"]] == [(2, 16), (2, 16)]
    assert out["audio"].shape == (2, 16)
    for views in out["crops"]:
        assert views.keys() == {"space_medium", "space_small", "time_medium"}  # no time_small
        assert views["space_medium"].shape == (2, 2, 16)
        assert views["space_small"].shape == (4, 2, 16)
        assert views["time_medium"].shape == (2, 2, 16)
    every = [*out["video"], out["audio"], *(v for c in out["crops"] for v in c.values())]
    for z in every:
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(z.shape[:-1]))

    loss = sum((z.sum(-1) ** 2).sum() for z in every)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_concatenated_trunk_call_matches_separate_calls_in_eval_mode():
    torch.manual_seed(0)
    model = SticaModel(TINY).eval()
    l1, l2 = torch.randn(2, 3, 3, 16, 32, 32).unbind(0)
    small = torch.randn(3, 3, 16, 16, 16)  # a multi-crop small RGB crop: its own trunk call
    crops = FeatureCropConfig(space_medium_size=2, space_small_size=1, time_medium=2, time_small=0)
    with torch.no_grad():
        out = model([l1, l2, small], None, crops, torch.Generator().manual_seed(5), crop_views=2)
        for z, v in zip(out["video"], [l1, l2, small], strict=True):
            torch.testing.assert_close(z, model.embed_video(v), atol=1e-5, rtol=1e-5)
        # Crops of L1 and L2 were drawn for the concatenated (L1, L2) map of 2 x 3 samples.
        fmap = model.video_map(torch.cat([l1, l2]))
        groups = sample_crops(crops, fmap.shape, 6, torch.Generator().manual_seed(5))
        _, views = embed_crops(_embed_with_tokens(model, fmap), fmap, groups)
    assert out["crops"][0].keys() == views.keys()
    for group in views:
        torch.testing.assert_close(
            out["crops"][0][group], views[group][:, :3], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            out["crops"][1][group], views[group][:, 3:], atol=1e-5, rtol=1e-5
        )
    assert len(out["crops"]) == 2 and "audio" not in out


def test_groups_without_crops_are_absent_and_crops_need_a_generator():
    model = SticaModel(TINY)
    video = torch.randn(2, 3, 16, 32, 32)
    only_medium = FeatureCropConfig(space_medium_size=2, space_small=0, time_medium=2, time_small=0)
    out = model([video], crops=only_medium, generator=torch.Generator())
    assert out["crops"][0].keys() == {"space_medium", "time_medium"}
    with pytest.raises(ValueError, match="Generator"):
        model([video], crops=only_medium)


def test_audio_map_and_video_features_for_evaluation():
    model = SticaModel(TINY).eval()
    with torch.no_grad():
        amap = model.audio_map(torch.randn(2, 1, 257, 100))
        feats = model.video_features(torch.randn(2, 3, 16, 32, 32))
    assert amap.shape[:2] == (2, 64) and amap.dim() == 4
    assert feats.shape == (2, 64)


def test_crop_views_crops_only_the_first_videos_of_a_shared_trunk_call():
    torch.manual_seed(0)
    model = SticaModel(TINY).eval()
    l1, l2 = torch.randn(2, 2, 3, 16, 32, 32).unbind(0)
    crops = FeatureCropConfig(space_medium_size=2, space_small_size=1, time_medium=2)
    with torch.no_grad():
        out = model([l1, l2], crops=crops, generator=torch.Generator().manual_seed(2), crop_views=1)
        fmap = model.video_map(l1)
        groups = sample_crops(crops, fmap.shape, 2, torch.Generator().manual_seed(2))
        _, views = embed_crops(_embed_with_tokens(model, fmap), fmap, groups)
    assert len(out["crops"]) == 1 and out["crops"][0].keys() == views.keys()
    for group in views:
        torch.testing.assert_close(out["crops"][0][group], views[group], atol=1e-5, rtol=1e-5)
