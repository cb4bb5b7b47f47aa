"""ProjectionHead: shapes, unit norm, pooling of feature maps."""

import pytest
import torch

from hdc_lib.heads import ProjectionHead


def test_output_is_unit_norm_with_the_requested_sizes():
    head = ProjectionHead(32, hidden_dim=16, out_dim=8)
    z = head(torch.randn(5, 32))
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert head.mlp[0].out_features == 16
    assert ProjectionHead(32).mlp[0].out_features == 32


def test_feature_map_is_average_pooled_first():
    torch.manual_seed(0)
    head = ProjectionHead(6, out_dim=4).eval()
    feature_map = torch.randn(3, 6, 2, 4, 4)
    torch.testing.assert_close(head(feature_map), head(feature_map.mean(dim=(2, 3, 4))))


def test_gradient_flows_and_bad_input_is_rejected():
    head = ProjectionHead(6, out_dim=4)
    x = torch.randn(3, 6, requires_grad=True)
    head(x)[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="heads.py"):
        head(torch.randn(3, 6, 4))
