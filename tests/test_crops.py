"""Feature crops: geometry from the map and config, and batched == one crop at a time."""

import itertools

import pytest
import torch

from stica.config import ConfigError, FeatureCropConfig, ModelConfig
from stica.errors import SticaError
from stica.models.crops import (
    GROUPS,
    crop_sizes,
    crop_tokens,
    embed_crops,
    embed_crops_loop,
    sample_crops,
)
from stica.models.stica import SticaModel
from stica.perf import DeviceOpCounter

PAPER_CROPS = FeatureCropConfig(2, 6, 4, 4, 2, 3, 1, 2)  # space 2x6^2 + 4x4^2, time 2x3 + 1x2
CROPS_4x4x4 = FeatureCropConfig(2, 3, 4, 2, 2, 3, 1, 2)  # the same plan scaled to a 4x4x4 map


def test_sizes_come_from_config_and_map_shape():
    demo = crop_sizes(CROPS_4x4x4, (64, 4, 4, 4))
    assert demo == [
        ("space_medium", "medium", 2, (4, 3, 3)),
        ("space_small", "small", 4, (4, 2, 2)),
        ("time_medium", "medium", 2, (3, 4, 4)),
        ("time_small", "small", 1, (2, 4, 4)),
    ]
    paper = crop_sizes(PAPER_CROPS, (512, 4, 7, 7))
    assert [size for *_, size in paper] == [(4, 6, 6), (4, 4, 4), (3, 7, 7), (2, 7, 7)]
    # A group with count 0 is skipped, even if its size would not fit.
    none_small = FeatureCropConfig(space_small=0, space_small_size=9, time_medium=2, time_small=0)
    assert [name for name, *_ in crop_sizes(none_small, (4, 4, 4))] == [
        "space_medium",
        "time_medium",
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"space_medium_size": 8}, "'pretrain.crops.space_medium_size' = 8 is larger than the 7x7"),
        ({"space_small_size": 9}, "'pretrain.crops.space_small_size' = 9 is larger than the 7x7"),
        ({"time_medium_size": 5}, "'pretrain.crops.time_medium_size' = 5 is longer than the 4"),
    ],
)
def test_crop_larger_than_map_raises_with_param_name(override, message):
    config = FeatureCropConfig(**{**PAPER_CROPS.__dict__, **override})
    with pytest.raises(SticaError, match=message):
        config.validate((512, 4, 7, 7))
    with pytest.raises(ConfigError):
        sample_crops(config, (4, 7, 7), 2, torch.Generator())


def test_bad_counts_and_sizes_are_refused():
    with pytest.raises(ConfigError, match="pretrain.crops.time_small"):
        FeatureCropConfig(time_small=-1)
    with pytest.raises(ConfigError, match="pretrain.crops.space_small_size"):
        FeatureCropConfig(space_small_size=0)


def test_every_crop_inside_the_map_and_every_offset_reachable():
    map_shape, batch = (4, 7, 7), 16
    groups = sample_crops(PAPER_CROPS, map_shape, batch, torch.Generator().manual_seed(0))
    seen = {g.name: set() for g in groups}
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for g in sample_crops(PAPER_CROPS, map_shape, batch, gen):
            assert g.offsets.shape == (getattr(PAPER_CROPS, g.name), batch, 3)
            assert g.offsets.dtype == torch.long and (g.offsets >= 0).all()
            ends = g.offsets + torch.tensor(g.size)
            assert (ends <= torch.tensor(map_shape)).all()
            seen[g.name] |= {tuple(o) for o in g.offsets.view(-1, 3).tolist()}
    for g in groups:
        ranges = [range(m - s + 1) for m, s in zip(map_shape, g.size, strict=True)]
        assert seen[g.name] == set(itertools.product(*ranges)), g.name


def test_offsets_follow_the_generator_and_differ_per_crop_and_sample():
    a = sample_crops(PAPER_CROPS, (4, 7, 7), 8, torch.Generator().manual_seed(3))
    b = sample_crops(PAPER_CROPS, (4, 7, 7), 8, torch.Generator().manual_seed(3))
    c = sample_crops(PAPER_CROPS, (4, 7, 7), 8, torch.Generator().manual_seed(4))
    assert all(torch.equal(x.offsets, y.offsets) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x.offsets, y.offsets) for x, y in zip(a, c, strict=True))
    small = a[1].offsets[..., 1:]  # (4, 8, 2) spatial offsets of the small crops
    assert len({tuple(o) for o in small.reshape(-1, 2).tolist()}) > 4


def test_crop_tokens_are_the_spatial_means_of_the_sliced_crops():
    fmap = torch.randn(5, 6, 4, 7, 7, dtype=torch.float64)
    groups = sample_crops(PAPER_CROPS, fmap.shape, 3, torch.Generator().manual_seed(1))
    full, tokens = crop_tokens(fmap, groups, full=True)
    # every sample of the map, not only the 3 that were cropped
    torch.testing.assert_close(full, fmap.mean(dim=(3, 4)).transpose(1, 2).float())
    assert tokens.keys() == {g.name for g in groups}
    for group in groups:
        k, b = group.count, 3
        t, h, w = group.size
        assert tokens[group.name].shape == (k * b, t, 6)
        for kk, i in itertools.product(range(k), range(b)):
            t0, y0, x0 = group.offsets[kk, i].tolist()
            crop = fmap[i, :, t0 : t0 + t, y0 : y0 + h, x0 : x0 + w]  # (D, t, h, w)
            expected = crop.mean(dim=(2, 3)).T.float()  # (t, D)
            torch.testing.assert_close(tokens[group.name][kk * b + i], expected)


def test_crop_tokens_are_float32_under_autocast_and_without_groups():
    fmap = torch.randn(2, 4, 4, 7, 7).to(torch.bfloat16)
    groups = sample_crops(PAPER_CROPS, fmap.shape, 2, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, tokens = crop_tokens(fmap, groups, full=True)
    assert full.dtype == torch.float32 and all(v.dtype == torch.float32 for v in tokens.values())
    full_only, none = crop_tokens(fmap, [], full=True)
    assert none == {}
    torch.testing.assert_close(full_only, full)


POOLINGS = [("avg", "official"), ("transformer", "official"), ("transformer", "ours")]


def _model(pooling: str, style: str) -> SticaModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        width=8, pooling=pooling, transformer_style=style, head_hidden=32, embed_dim=16
    )
    return SticaModel(cfg)


@pytest.mark.parametrize("pooling, style", POOLINGS)
def test_batched_crops_equal_one_crop_at_a_time(pooling, style):
    # eval mode: the heads' BatchNorm then uses running statistics, so an embedding does not
    # depend on its batch and the two paths must agree exactly
    model = _model(pooling, style).eval()
    fmap = torch.randn(3, 64, 4, 4, 4, requires_grad=True)
    config = CROPS_4x4x4

    def embed_tokens(sets):  # as in training: temporal crops pooled over the map's T1 tokens
        return model.embed_video_tokens(sets, tokens=4)

    def embed_map(x, time_offset):
        return model.embed_video_map(x, time_offset, tokens=4)

    groups = sample_crops(config, fmap.shape, 3, torch.Generator().manual_seed(7))
    _, batched = embed_crops(embed_tokens, fmap, groups)
    groups_again = sample_crops(config, fmap.shape, 3, torch.Generator().manual_seed(7))
    looped = embed_crops_loop(embed_map, fmap, groups_again)

    assert batched.keys() == looped.keys() == {g for g, _, _ in GROUPS}
    counts = {g: batched[g].shape[0] for g in batched}
    assert counts == {"space_medium": 2, "space_small": 4, "time_medium": 2, "time_small": 1}
    for group in batched:
        torch.testing.assert_close(batched[group], looped[group], atol=1e-5, rtol=1e-5)
    # Same gradients back into the trunk's map, too.
    (g_batched,) = torch.autograd.grad(sum(v.pow(3).sum() for v in batched.values()), fmap)
    (g_looped,) = torch.autograd.grad(sum(v.pow(3).sum() for v in looped.values()), fmap)
    torch.testing.assert_close(g_batched, g_looped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling, style", POOLINGS)
def test_training_mode_heads_normalise_each_crop_shape_and_the_whole_maps_apart(pooling, style):
    # one pooling call for everything, but one head call per crop shape: each shape's BatchNorm
    # statistics are its own, as when every shape was cut out and embedded by itself
    model = _model(pooling, style).train()
    fmap = torch.randn(5, 64, 4, 4, 4)
    groups = sample_crops(CROPS_4x4x4, fmap.shape, 3, torch.Generator().manual_seed(2))

    def embed_tokens(sets):
        return model.embed_video_tokens(sets, tokens=4)

    z_full, views = embed_crops(embed_tokens, fmap, groups, full=True)
    torch.testing.assert_close(z_full, model.embed_video_map(fmap), atol=1e-5, rtol=1e-5)
    for group in groups:
        t, h, w = group.size
        cut = [
            fmap[i, :, t0 : t0 + t, y0 : y0 + h, x0 : x0 + w]
            for per_sample in group.offsets.tolist()
            for i, (t0, y0, x0) in enumerate(per_sample)
        ]
        time_offset = group.offsets[..., 0].reshape(-1)
        alone = model.embed_video_map(torch.stack(cut), time_offset, tokens=4)
        expected = alone.view(group.count, 3, -1)
        torch.testing.assert_close(views[group.name], expected, atol=1e-5, rtol=1e-5)


def test_the_batched_crop_path_launches_as_many_kernels_for_many_crops_as_for_one_and_never_syncs():
    # launch-bound on a GPU at small batches: the kernel count must not grow with the crops
    def device_ops(per_group: int) -> int:
        model = _model("transformer", "official").to("meta")
        fmap = torch.empty(4, 64, 4, 4, 4, device="meta", requires_grad=True)
        crops = FeatureCropConfig(per_group, 3, per_group, 2, per_group, 3, per_group, 2)
        groups = sample_crops(crops, fmap.shape, 4, torch.Generator().manual_seed(0))
        embed_crops(model.embed_video_tokens, fmap, groups, full=True)  # constants built once
        with DeviceOpCounter("meta") as counter:  # a step's kernels from then on
            _, views = embed_crops(model.embed_video_tokens, fmap, groups, full=True)
            sum(v.sum() for v in views.values()).backward()
        # the CPU-side offsets reach the device without a stream sync
        assert counter.blocking_copies == 0
        return counter.count

    assert device_ops(1) == device_ops(6) > 0
