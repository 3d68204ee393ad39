"""Effort's SVD residual layers: the pretrained layer at init, only the residual trains, the losses."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dfdc.models.svd_residual import SVDResidualLinear, decompose, decomposed_state


def _linear(out: int, width: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(width, out)


@pytest.mark.parametrize("blocks", [1, 3])
def test_at_init_the_layer_is_the_pretrained_one(blocks):
    linear = _linear(blocks * 24, 24)
    layer = SVDResidualLinear(linear, blocks=blocks)
    x = torch.randn(5, 7, 24)
    assert torch.allclose(layer(x), linear(x), atol=1e-5)
    assert torch.allclose(layer.main + layer.residual(), linear.weight, atol=1e-6)
    assert {n for n, p in layer.named_parameters()} == {"u", "s", "v"}
    assert layer.u.shape == (blocks, 24, 1) and layer.s.shape == (blocks, 1) and layer.v.shape == (blocks, 1, 24)


def test_each_block_is_decomposed_on_its_own():
    """q, k and v of a fused qkv: each block's residual is its own smallest singular component."""
    w = _linear(3 * 16, 16).weight.detach()
    parts = decompose(w, blocks=3, rank=1)
    for b in range(3):
        s = torch.linalg.svdvals(w[b * 16:(b + 1) * 16].double())
        assert parts["s"][b, 0] == pytest.approx(float(s[-1]), rel=1e-9)
        assert parts["norm2"][b] == pytest.approx(float((s ** 2).sum()), rel=1e-9)


def test_the_losses_are_zero_at_init_and_grow_off_orthogonal():
    layer = SVDResidualLinear(_linear(3 * 32, 32, seed=1), blocks=3)
    assert float(layer.orthogonality().detach()) < 1e-6 and float(layer.singular_values().detach()) < 1e-4
    with torch.no_grad():
        layer.u.add_(0.2 * torch.randn_like(layer.u))  # the residual's basis leaves the orthogonal complement
    assert float(layer.orthogonality().detach()) > 0.1
    with torch.no_grad():
        layer.s.add_(1.0)  # more energy in the weight than the pretrained one had
    assert float(layer.singular_values().detach()) > 1.0


def test_only_the_residual_receives_gradients_and_the_losses_have_them():
    layer = SVDResidualLinear(_linear(16, 16, seed=2))
    with torch.no_grad():
        layer.u.add_(0.1)
    (layer(torch.randn(4, 16)).sum() + layer.orthogonality() + layer.singular_values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (layer.u, layer.s, layer.v))
    assert not layer.main.requires_grad and layer.main.grad is None


def test_square_blocks_only():
    with pytest.raises(ValueError, match="square blocks"):
        SVDResidualLinear(_linear(10, 16))
    with pytest.raises(ValueError, match=r"residual rank must be in \[1, 15\]"):
        SVDResidualLinear(_linear(16, 16), rank=16)


def test_a_plain_state_decomposes_to_the_layers_keys():
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            attn = nn.Module()
            attn.qkv, attn.proj = nn.Linear(8, 24), nn.Linear(8, 8)
            block = nn.Module()
            block.attn = attn
            self.blocks = nn.ModuleList([block])

    torch.manual_seed(3)
    plain = Tower()
    state = decomposed_state(plain.state_dict(), plain)
    assert "blocks.0.attn.qkv.weight" not in state
    layer = SVDResidualLinear(plain.blocks[0].attn.qkv, blocks=3)
    assert state.keys() >= {f"blocks.0.attn.qkv.{k}" for k in layer.state_dict()}
    assert all(torch.equal(state[f"blocks.0.attn.qkv.{k}"], v) for k, v in layer.state_dict().items())
