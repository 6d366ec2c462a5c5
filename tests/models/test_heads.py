"""Projection heads: the released code's layout, dropout in training only, unit-norm output."""

import torch
from torch import nn

from stica.models.heads import MLPHead


def test_layout_is_the_released_codes_mlp():
    head = MLPHead(512, 512, 256, dropout=0.3)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert head.mlp[1].bias is None  # the BatchNorm after it removes any bias
    assert head.mlp[0].p == head.mlp[4].p == 0.3
    # GDT's MLP(512, 256): Linear 512x512 (no bias), BN(512), Linear 512x256 + bias
    assert sum(p.numel() for p in head.parameters()) == 512 * 512 + 2 * 512 + 512 * 256 + 256


def test_dropout_acts_in_training_only_and_rows_have_unit_norm():
    torch.manual_seed(0)
    head = MLPHead(16, 32, 8, dropout=0.3)
    x = torch.randn(10, 16)
    head.train()
    a, b = head(x), head(x)
    assert (a - b).abs().max() > 1e-3  # two dropout masks
    head.eval()
    torch.testing.assert_close(head(x), head(x))
    torch.testing.assert_close(head(x).norm(dim=1), torch.ones(10))
