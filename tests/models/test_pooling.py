"""Average pooling ignores time order; transformer pooling does not and keeps absolute time."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from stica.errors import SticaError
from stica.models.pooling import (
    AvgPool,
    OfficialTransformerPool,
    TransformerPool,
    _resampling,
    build_pooling,
    parameter_count,
    spatial_tokens,
)

D, T = 32, 4


@pytest.fixture
def fmap():
    return torch.randn(3, D, T, 3, 3, generator=torch.Generator().manual_seed(1))


def _transformer():
    torch.manual_seed(0)
    return TransformerPool(dim=D, layers=2, heads=4, max_time=8).train()


def test_avg_pooling_is_invariant_to_reversing_time(fmap):
    pool = AvgPool()
    out = pool(fmap)
    assert out.shape == (3, D)
    torch.testing.assert_close(out, pool(fmap.flip(2)))
    torch.testing.assert_close(out, fmap.mean(dim=(2, 3, 4)))


def test_transformer_pooling_is_not_invariant_to_reversing_time(fmap):
    pool = _transformer()
    out = pool(fmap)
    assert out.shape == (3, D)
    assert (out - pool(fmap.flip(2))).abs().max() > 1e-3
    # Without the position embedding it would be (mean of a permutation-equivariant map).
    with torch.no_grad():
        pool.position.zero_()
    torch.testing.assert_close(pool(fmap), pool(fmap.flip(2)), atol=1e-5, rtol=1e-5)


def test_temporal_crop_equals_full_map_with_masked_attention(fmap):
    """Paper 3.3: a temporal feature crop with absolute positions == masking the attention."""
    pool = _transformer()
    start, length = 1, 2
    crop = fmap[:, :, start : start + length]
    offsets = torch.full((3,), start)
    cropped = pool(crop, offsets)

    tokens = fmap.mean(dim=(3, 4)).transpose(1, 2) + pool.position[:T]  # (N, T, D)
    outside = torch.ones(3, T, dtype=torch.bool)
    outside[:, start : start + length] = False
    full = pool.encoder(tokens, src_key_padding_mask=outside)  # (N, T, D)
    masked = full[:, start : start + length].mean(dim=1)
    torch.testing.assert_close(cropped, masked, atol=1e-5, rtol=1e-5)
    # The offset matters: the same steps read as time 0..1 give another vector.
    assert (cropped - pool(crop)).abs().max() > 1e-3


def test_per_sample_time_offsets_gather_their_own_positions(fmap):
    pool = _transformer()
    crop = fmap[:, :, :2]
    mixed = pool(crop, torch.tensor([0, 1, 2]))
    for i, off in enumerate([0, 1, 2]):
        alone = pool(crop[i : i + 1], torch.tensor([off]))
        torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_map_longer_than_max_time_names_the_param():
    pool = TransformerPool(dim=D, layers=1, heads=4, max_time=2)
    with pytest.raises(SticaError, match=r"pretrain\.model\.max_time"):
        pool(torch.randn(1, D, 3, 2, 2))


# ---- the released code's transformer ("official" style) ------------------------------------------


def reference_official_encoder(pool, tokens: torch.Tensor) -> torch.Tensor:
    """The released code's Transformer layers written out with plain tensor ops.

    Attention has Q/K projections only (values are the tokens, no output projection), post-LN
    with eps 1e-12, FFN 2048 with exact GELU. Shape: (N, t, D) -> (N, t, D)
    """
    x = tokens
    n, t, d = x.shape
    h = pool.layers[0].attention.heads

    def heads(y):
        return y.view(n, t, h, d // h).transpose(1, 2)  # (N, h, t, d/h)

    for layer in pool.layers:
        att = layer.attention
        q = heads(x @ att.q.weight.t() + att.q.bias) / (d // h) ** 0.5
        k = heads(x @ att.k.weight.t() + att.k.bias)
        weights = torch.softmax(q @ k.transpose(2, 3), dim=-1)  # (N, h, t, t)
        context = (weights @ heads(x)).transpose(1, 2).reshape(n, t, d)
        x = torch.nn.functional.layer_norm(
            x + context, (d,), layer.norm1.weight, layer.norm1.bias, eps=1e-12
        )
        lin1, lin2 = layer.ffn[0], layer.ffn[2]
        hidden = torch.nn.functional.gelu(x @ lin1.weight.t() + lin1.bias)
        x = torch.nn.functional.layer_norm(
            x + hidden @ lin2.weight.t() + lin2.bias,
            (d,),
            layer.norm2.weight,
            layer.norm2.bias,
            eps=1e-12,
        )
    return x


def _official(dim=D, layers=2, heads=4):
    torch.manual_seed(0)
    return OfficialTransformerPool(dim, layers, heads).eval()


def test_official_transformer_has_the_papers_parameter_count():
    """Table 1d: the 2-layer transformer adds 5.2 M parameters at D = 512, 4 heads."""
    count = parameter_count(_official(512, 2, 4))
    assert abs(count - 5.25e6) <= 0.01 * 5.25e6
    # per layer: Q and K (2 x (512^2 + 512)), FFN 512-2048-512, two LayerNorms; no V, no output
    assert count == 2 * (
        2 * (512 * 512 + 512) + (512 * 2048 + 2048) + (2048 * 512 + 512) + 2 * 1024
    )


def test_official_output_is_token_0_of_the_encoded_sequence(fmap):
    pool = _official()
    tokens = fmap.mean(dim=(3, 4)).transpose(1, 2)  # (N, T, D), no position embedding added
    encoded = reference_official_encoder(pool, tokens)
    with torch.no_grad():
        out = pool(fmap)
    torch.testing.assert_close(out, encoded[:, 0], atol=1e-5, rtol=1e-5)
    assert (out - encoded.mean(dim=1)).abs().max() > 1e-3  # not the mean of the tokens


def test_official_has_no_position_embeddings(fmap):
    """Token 0 is the output; the other steps are attended to as a set, in any order."""
    pool = _official()
    shuffled = fmap[:, :, [0, 3, 1, 2]]
    with torch.no_grad():
        torch.testing.assert_close(pool(fmap), pool(shuffled), atol=1e-5, rtol=1e-5)
        assert (pool(fmap) - pool(fmap.flip(2))).abs().max() > 1e-3  # another first step


def test_official_resamples_a_3_step_crop_to_4_tokens(fmap):
    pool = _official()
    crop = fmap[:, :, 1:4]  # a 3-step temporal crop of the 4-step map
    steps = crop.mean(dim=(3, 4)).transpose(1, 2)  # (N, 3, D)
    # adaptive average pooling 3 -> 4: bins [0,1), [0,2), [1,3), [2,3)
    expected_tokens = torch.stack(
        [steps[:, 0], steps[:, :2].mean(1), steps[:, 1:].mean(1), steps[:, 2]], dim=1
    )
    seen = []
    hook = pool.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        out = pool(crop, tokens=T)
    hook.remove()
    assert seen[0].shape == (3, T, D)
    torch.testing.assert_close(seen[0], expected_tokens, atol=1e-6, rtol=1e-6)
    encoded = reference_official_encoder(pool, expected_tokens)
    torch.testing.assert_close(out, encoded[:, 0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a 2-step crop too, and no resampling when tokens is None
        assert pool(fmap[:, :, :2], tokens=T).shape == (3, D)
        torch.testing.assert_close(pool(fmap, tokens=T), pool(fmap))


def test_official_init_is_normal_002():
    pool = _official(512, 2, 4)
    weights = torch.cat(
        [m.weight.flatten() for m in pool.modules() if isinstance(m, torch.nn.Linear)]
    )
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    biases = [m.bias for m in pool.modules() if isinstance(m, torch.nn.Linear)]
    assert all(b.abs().max() == 0 for b in biases)


@pytest.mark.parametrize(
    "kind, style", [("avg", "official"), ("transformer", "official"), ("transformer", "ours")]
)
def test_sets_pooled_together_equal_each_pooled_alone(kind, style):
    # crops of every shape and the whole maps share one pooling call in training; the poolings
    # have no batch statistics, so that changes no value and no gradient
    torch.manual_seed(0)
    pool = build_pooling(kind, 16, 2, 4, max_time=8, style=style)
    g = torch.Generator().manual_seed(1)
    sets = [
        (torch.randn(3, 4, 16, generator=g), None),  # whole maps, 4 steps
        (torch.randn(6, 4, 16, generator=g), torch.zeros(6, dtype=torch.long)),  # spatial crops
        (torch.randn(4, 3, 16, generator=g), torch.tensor([0, 1, 1, 0])),  # 3-step crops
        (torch.randn(2, 2, 16, generator=g), torch.tensor([2, 0])),  # 2-step crops
    ]
    sets = [(x.requires_grad_(), off) for x, off in sets]
    together = pool.pool_tokens(sets, tokens=4)
    alone = [pool.pool_tokens([s], tokens=4)[0] for s in sets]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    grads_together = torch.autograd.grad(
        sum(z.pow(2).sum() for z in together), [x for x, _ in sets]
    )
    grads_alone = torch.autograd.grad(sum(z.pow(2).sum() for z in alone), [x for x, _ in sets])
    for a, b in zip(grads_together, grads_alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pooling_a_map_pools_its_spatial_tokens(fmap):
    for kind in ("avg", "transformer"):
        pool = build_pooling(kind, fmap.shape[1], 2, 4, max_time=8)
        (z,) = pool.pool_tokens([(spatial_tokens(fmap), None)])
        torch.testing.assert_close(pool(fmap), z)


def test_temporal_resampling_matrix_is_adaptive_average_pooling():
    # a matrix (deterministic backward on CUDA) with torch's adaptive pooling bins
    g = torch.Generator().manual_seed(0)
    for steps, tokens in itertools.product(range(1, 9), range(1, 9)):
        x = torch.randn(2, steps, 5, generator=g)  # (N, t, D)
        expected = F.adaptive_avg_pool1d(x.transpose(1, 2), tokens).transpose(1, 2)
        torch.testing.assert_close(_resampling(steps, tokens) @ x, expected)
