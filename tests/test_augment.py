import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from stica.config import AugmentConfig
from stica.data.augment import EvalTransform, VideoAugment, crop_resize

CFG = AugmentConfig(crop_size=16, small_crop_size=8, eval_short_side=16)
MEAN = torch.tensor(CFG.mean).view(1, 3, 1, 1, 1)
STD = torch.tensor(CFG.std).view(1, 3, 1, 1, 1)
# only geometry: no colour, grey or blur
PLAIN = dataclasses.replace(CFG, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_clips(b=3, t=4, h=20, w=26, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, h, w, 3), dtype=torch.uint8, generator=g).to(device)


def unnormalise(x):
    return x * STD.to(x.device) + MEAN.to(x.device)


def as_float(clips):
    """uint8 (B, T, H, W, 3) -> [0, 1] float (B, 3, T, H, W)."""
    return clips.permute(0, 4, 1, 2, 3).float() / 255


@pytest.mark.parametrize("device", DEVICES)
def test_shape_dtype_range_device(device):
    clips = random_clips(device=device)
    out = VideoAugment(CFG)(clips, torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 4, 16, 16) and out.dtype == torch.float32
    assert out.device == clips.device
    raw = unnormalise(out)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_clip_consistency_identical_frames_stay_identical():
    frame = random_clips(b=4, t=1, seed=2)
    clips = frame.expand(4, 5, *frame.shape[2:]).contiguous()
    full = dataclasses.replace(CFG, jitter_p=1.0, grayscale_p=0.5, blur_p=1.0)
    out = VideoAugment(full)(clips, torch.Generator().manual_seed(3))  # (B, 3, T, S, S)
    for t in range(1, 5):
        torch.testing.assert_close(out[:, :, t], out[:, :, 0], atol=1e-5, rtol=0)
    # but different clips got different parameters
    assert not torch.allclose(out[0], out[1])


def test_determinism_for_a_seed():
    clips = random_clips()
    aug = VideoAugment(CFG)
    a = aug.two_views(clips, torch.Generator().manual_seed(7))
    b = aug.two_views(clips, torch.Generator().manual_seed(7))
    c = aug.two_views(clips, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # the two views have independent parameters
    assert not torch.equal(a[0], c[0])


def test_full_frame_crop_is_the_frame_and_flip_mirrors():
    clips = random_clips(t=2, h=16, w=16, seed=4)
    keep = dataclasses.replace(PLAIN, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    out = unnormalise(VideoAugment(keep)(clips, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out, as_float(clips), atol=1e-5, rtol=0)
    flip = dataclasses.replace(keep, flip_p=1.0)
    out = unnormalise(VideoAugment(flip)(clips, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out, as_float(clips).flip(-1), atol=1e-5, rtol=0)


def test_crop_resize_integer_box_is_a_slice():
    clips = random_clips(b=2, t=2, h=12, w=15, seed=5)
    x = clips.permute(0, 1, 4, 2, 3).reshape(2, 6, 12, 15).float()
    boxes = torch.tensor([[2.0, 1.0, 8.0, 8.0], [7.0, 4.0, 8.0, 8.0]])
    out = crop_resize(x, boxes, 8)
    torch.testing.assert_close(out[0], x[0, :, 1:9, 2:10], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], x[1, :, 4:12, 7:15], atol=1e-3, rtol=0)


def test_grayscale_makes_channels_equal():
    grey = dataclasses.replace(PLAIN, grayscale_p=1.0)
    out = unnormalise(VideoAugment(grey)(random_clips(), torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=1e-5, rtol=0)


def test_jitter_and_blur_change_pixels():
    clips = random_clips(seed=6)
    base = VideoAugment(PLAIN)(clips, torch.Generator().manual_seed(9))
    for extra in ({"jitter_p": 1.0}, {"blur_p": 1.0, "blur_sigma": (1.0, 2.0)}):
        cfg = dataclasses.replace(PLAIN, **extra)
        out = VideoAugment(cfg)(clips, torch.Generator().manual_seed(9))
        assert (out - base).abs().mean() > 0.05, extra
    # blur smooths: neighbouring pixels get closer
    blurred = VideoAugment(dataclasses.replace(PLAIN, blur_p=1.0, blur_sigma=(1.5, 2.0)))
    out = blurred(clips, torch.Generator().manual_seed(9))
    assert out.diff(dim=-1).abs().mean() < 0.7 * base.diff(dim=-1).abs().mean()


def test_multi_crop_sizes():
    views = VideoAugment(CFG).multi_crop(random_clips(), torch.Generator().manual_seed(0), 2)
    assert [tuple(v.shape[-2:]) for v in views] == [(16, 16), (16, 16), (8, 8), (8, 8)]
    assert all(v.shape[:3] == (3, 3, 4) for v in views)


def test_bad_clips_refused():
    aug, g = VideoAugment(CFG), torch.Generator()
    with pytest.raises(ValueError, match="uint8"):
        aug(random_clips().float(), g)
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        aug(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), g)


def test_eval_centre_and_three_crops():
    # landscape frames already at the short side: crops are exact pixel slices
    clips = random_clips(b=2, t=3, h=16, w=28, seed=10)
    ev = EvalTransform.from_config(CFG)
    ref = as_float(clips)
    centre = unnormalise(ev(clips))
    torch.testing.assert_close(centre, ref[..., 6:22], atol=1e-5, rtol=0)
    three = ev.three_crop(clips)  # (B, 3 crops, 3, T, S, S)
    assert three.shape == (2, 3, 3, 3, 16, 16)
    for i, x0 in enumerate((0, 6, 12)):
        torch.testing.assert_close(
            unnormalise(three[:, i]), ref[..., x0 : x0 + 16], atol=1e-5, rtol=0
        )
    # portrait frames crop along the height; a larger frame is resized down first
    tall = random_clips(b=1, t=1, h=64, w=32, seed=11)
    three = EvalTransform(16, 16).three_crop(tall)
    assert three.shape == (1, 3, 3, 1, 16, 16)
    small = torch.nn.functional.interpolate(as_float(tall)[:, :, 0], scale_factor=0.5, mode="area")
    torch.testing.assert_close(
        unnormalise(three[:, 0])[:, :, 0], small[..., :16, :], atol=0.15, rtol=0
    )
    with pytest.raises(ValueError, match="short_side"):
        EvalTransform(crop_size=32, short_side=16)


def _released_test_crop(frames, short_side, size, position):
    """The released code's test crop (GDT ``datasets/video_transforms.py``) written out for frames
    stored at the short side (its resize is then a no-op): ``uniform_crop``'s whole-pixel offsets,
    the centre rounded up. frames (T, C, H, W) -> (T, C, size, size)."""
    height, width = frames.shape[2:]
    assert min(height, width) == short_side
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        y_offset = {0: 0, 1: y_offset, 2: height - size}[position]
    else:
        x_offset = {0: 0, 1: x_offset, 2: width - size}[position]
    return frames[:, :, y_offset : y_offset + size, x_offset : x_offset + size]


@pytest.mark.parametrize(("h", "w"), [(16, 27), (29, 16), (16, 16)])
def test_eval_crops_are_the_released_codes_whole_pixel_crops(h, w):
    # odd margins (27 - 12 = 15): a sub-pixel centre box would blend two columns of every pixel
    clips = random_clips(b=2, t=3, h=h, w=w, seed=13)
    ev = EvalTransform(crop_size=12, short_side=16)
    three = unnormalise(ev.three_crop(clips).flatten(0, 1)).view(2, 3, 3, 3, 12, 12)
    for k in range(2):
        frames = as_float(clips)[k].transpose(0, 1)  # (T, 3, H, W)
        for position in range(3):
            want = _released_test_crop(frames, 16, 12, position).transpose(0, 1)
            torch.testing.assert_close(three[k, position], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(unnormalise(ev(clips)), three[:, 1], atol=1e-6, rtol=0)


def test_eval_boxes_of_larger_frames_sit_on_pixels_of_the_resized_frame():
    # 240 x 320 -> 128 x 170 (long side floored, as the released code's resize), centre 29 px
    ev = EvalTransform(crop_size=112, short_side=128)
    f = 240 / 128  # input pixels per resized pixel
    assert ev.boxes(240, 320, 1) == [(29 * f, 8 * f, 112 * f, 112 * f)]
    assert [box[0] for box in ev.boxes(240, 320, 3)] == [0.0, 29 * f, 58 * f]
    assert [box[1] for box in ev.boxes(320, 240, 3)] == [0.0, 29 * f, 58 * f]
    # stored at the short side: whole input pixels, the centre rounded up (171 - 112 = 59)
    assert ev.boxes(128, 171, 3) == [
        (0.0, 8.0, 112.0, 112.0),
        (30.0, 8.0, 112.0, 112.0),
        (59.0, 8.0, 112.0, 112.0),
    ]


LUMA = torch.tensor([0.299, 0.587, 0.114])
YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _reference_colour(op, x, f):
    """One jitter op on one clip as its definition reads. x: (T, 3, H, W) in [0, 1]."""
    luma = torch.einsum("c,tchw->thw", LUMA, x)[:, None]  # (T, 1, H, W)
    if op == "brightness":
        y = x * f
    elif op == "contrast":
        y = f * x + (1 - f) * luma.mean()
    elif op == "saturation":
        y = f * x + (1 - f) * luma
    else:  # hue: rotate the YIQ chroma plane by f turns
        a = 2 * math.pi * f
        rot = torch.tensor(
            [[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]]
        )
        y = torch.einsum("ij,tjhw->tihw", torch.linalg.inv(YIQ) @ rot @ YIQ, x)
    return y.clamp(0, 1)


def _reference_blur(x, sigma, size):
    """Separable Gaussian blur of every plane, reflect padding. x: (T, 3, S, S)."""
    k = max(3, int(0.1 * size) | 1)
    d = torch.arange(k, dtype=torch.float32) - k // 2
    kernel = torch.exp(-(d**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    planes = x.reshape(-1, 1, size, size)
    planes = F.conv2d(
        F.pad(planes, (0, 0, k // 2, k // 2), mode="reflect"), kernel.view(1, 1, k, 1)
    )
    planes = F.conv2d(
        F.pad(planes, (k // 2, k // 2, 0, 0), mode="reflect"), kernel.view(1, 1, 1, k)
    )
    return planes.view_as(x)


def _reference_view(cfg, clips, seed):
    """The augmentation as its definition reads, one clip at a time: the same draws in the same
    order, then each jittered clip's four ops in its own order (clamped after each), grey, blur,
    normalise."""
    from stica.data import augment as aug

    gen = torch.Generator().manual_seed(seed)
    b, t, h, w, _ = clips.shape
    boxes = aug.sample_boxes(gen, b, h, w, cfg.scale, cfg.ratio)
    flip = aug._bernoulli(gen, b, cfg.flip_p)
    jitter = aug._bernoulli(gen, b, cfg.jitter_p)
    factors = {
        "brightness": aug._uniform(gen, (b,), 1 - cfg.brightness, 1 + cfg.brightness),
        "contrast": aug._uniform(gen, (b,), 1 - cfg.contrast, 1 + cfg.contrast),
        "saturation": aug._uniform(gen, (b,), 1 - cfg.saturation, 1 + cfg.saturation),
        "hue": aug._uniform(gen, (b,), -cfg.hue, cfg.hue),
    }
    grey = aug._bernoulli(gen, b, cfg.grayscale_p)
    blur = aug._bernoulli(gen, b, cfg.blur_p)
    sigma = aug._uniform(gen, (b,), *cfg.blur_sigma)
    order = torch.rand(b, 4, generator=gen).argsort(1)
    s = cfg.crop_size
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    out = []
    for i in range(b):
        frames = clips[i].permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
        x = crop_resize(frames.reshape(1, t * 3, h, w), boxes[i : i + 1], s, flip[i : i + 1])
        x = x.view(t, 3, s, s)
        if jitter[i]:
            for k in order[i].tolist():
                op = ("brightness", "contrast", "saturation", "hue")[k]
                x = _reference_colour(op, x, factors[op][i].item())
        if grey[i]:
            x = torch.einsum("c,tchw->thw", LUMA, x)[:, None].expand(t, 3, s, s)
        if blur[i]:
            x = _reference_blur(x, sigma[i].item(), s)
        out.append(((x - mean) / std).permute(1, 0, 2, 3))  # (3, T, S, S)
    return torch.stack(out)


def test_jitter_in_random_order_matches_the_per_clip_reference():
    cfg = dataclasses.replace(
        CFG, jitter_p=0.7, hue=0.3, grayscale_p=0.4, blur_p=0.5, jitter_order="random"
    )
    clips = random_clips(b=12, seed=3)
    got = VideoAugment(cfg)(clips, torch.Generator().manual_seed(5))
    want = _reference_view(cfg, clips, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


def test_colour_maps_stay_float32_under_autocast():
    # bf16 autocast (as in the training step on a GPU) must not round the colour maps to bf16
    cfg = dataclasses.replace(CFG, jitter_p=1.0, hue=0.2, grayscale_p=0.5)
    clips = random_clips(b=6, seed=12)
    plain = VideoAugment(cfg)(clips, torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = VideoAugment(cfg)(clips, torch.Generator().manual_seed(2))
        evaluated = EvalTransform.from_config(cfg).three_crop(clips)
    assert cast.dtype == evaluated.dtype == torch.float32
    assert torch.equal(cast, plain)
    assert torch.equal(evaluated, EvalTransform.from_config(cfg).three_crop(clips))


def _cost_on_meta(cfg, b=8, t=4):
    """(kernels, tensor bytes) of one view, counted on the meta device."""
    from stica.perf import DeviceOpCounter

    clips = torch.empty(b, t, 40, 52, 3, dtype=torch.uint8, device="meta")
    with DeviceOpCounter("meta") as counter:
        VideoAugment(cfg)(clips, torch.Generator().manual_seed(0))
    return counter.count, counter.tensor_bytes


def test_colour_jitter_is_a_few_passes_per_position_whatever_the_batch():
    # every clip jittered, each of the four positions a different op per clip: the jitter must
    # cost one map (read + write), one in-place clamp (read + write) and, for contrast, one
    # mean (read) of the view per position, not a pass per op or per clip
    plain = dataclasses.replace(PLAIN, crop_size=32, eval_short_side=32)
    jittered = dataclasses.replace(plain, jitter_p=1.0, hue=0.2, jitter_order="random")
    b, t = 8, 4
    view_bytes = b * 3 * t * 32 * 32 * 4
    (jit_kernels, jit_bytes), (kernels, traffic) = _cost_on_meta(jittered), _cost_on_meta(plain)
    kernels, traffic = jit_kernels - kernels, jit_bytes - traffic
    assert traffic <= 4 * 5 * view_bytes * 1.02, traffic / view_bytes
    assert kernels == _cost_on_meta(jittered, 4 * b, t)[0] - _cost_on_meta(plain, 4 * b, t)[0]
    assert kernels <= 4 * 8
