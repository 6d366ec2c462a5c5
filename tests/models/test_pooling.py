"""Average pooling ignores time order; transformer pooling does not and keeps absolute time."""

import pytest
import torch

from stica.errors import SticaError
from stica.models.pooling import AvgPool, TransformerPool

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
