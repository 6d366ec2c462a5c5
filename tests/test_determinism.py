"""stica.determinism: a row lookup with a deterministic backward, and torch's switches."""

from __future__ import annotations

import os

import pytest
import torch

from stica.config import FeatureCropConfig
from stica.determinism import deterministic_mode, record, take_rows
from stica.models.crops import crop_tokens, sample_crops


@pytest.fixture
def two_threads():
    """The order-nondeterministic CPU kernel only shows with more than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _grads(fn, source: torch.Tensor, upstream: torch.Tensor, repeats: int) -> list[torch.Tensor]:
    out = []
    for _ in range(repeats):
        x = source.clone().requires_grad_(True)
        fn(x).backward(upstream)
        out.append(x.grad)
    return out


def test_take_rows_equals_indexing_with_a_repeatable_gradient(two_threads):
    # 16 rows hit by 4096 indices: 262144 gradient elements, far past the 32768 from which
    # indexing's backward adds with parallel atomics
    g = torch.Generator().manual_seed(0)
    table = torch.randn(16, 64, generator=g)
    index = torch.randint(0, 16, (64, 64), generator=g)
    upstream = torch.randn(64, 64, 64, generator=g)
    assert torch.equal(take_rows(table, index), table[index])
    grads = _grads(lambda t: take_rows(t, index), table, upstream, repeats=10)
    assert all(torch.equal(grads[0], gr) for gr in grads[1:])
    reference = torch.zeros_like(table).index_add_(0, index.flatten(), upstream.view(-1, 64))
    torch.testing.assert_close(grads[0], reference)


def test_feature_crop_gradient_is_repeatable_at_the_demo_sizes(two_threads):
    # the demo's trunk map for L1 and L2 (2 x 32 clips, 64 channels, 2x3x3) and its crops
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(64, 64, 2, 3, 3, generator=g)
    crops = FeatureCropConfig(space_medium=2, space_medium_size=2, space_small=4)
    for group in sample_crops(crops, fmap.shape, 64, g):
        t = group.size[0]
        upstream = torch.randn(group.count * 64, t, 64, generator=g)
        grads = _grads(
            lambda x, grp=group: crop_tokens(x, [grp])[1][grp.name], fmap, upstream, repeats=10
        )
        assert all(torch.equal(grads[0], gr) for gr in grads[1:]), group.name


def test_deterministic_mode_sets_and_restores_torch_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cuda.flash_sdp_enabled()  # fused attention is only off on CUDA
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_mode(True, "cuda"):  # the switches exist without a GPU
        assert not torch.backends.cuda.flash_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
    with deterministic_mode(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_record_names_what_reproduction_depends_on(two_threads):
    assert record(True, torch.device("cpu")) == {
        "deterministic": True,
        "cpu_threads": 2,
        "device": "cpu",
    }
