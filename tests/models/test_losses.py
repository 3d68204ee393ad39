"""split_bce against hand-computed binary cross-entropies."""
from __future__ import annotations

import math

import pytest
import torch

from dfdc.models.losses import split_bce


def bce(z: float, t: float) -> float:
    """-(t log s(z) + (1 - t) log(1 - s(z))) in its overflow-free form."""
    return max(z, 0.0) - z * t + math.log(1.0 + math.exp(-abs(z)))


def test_real_and_fake_halves_weigh_equally():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 0.0])
    fake = bce(2.0, 0.99)
    real = (bce(-1.0, 0.01) + bce(0.5, 0.01) + bce(0.0, 0.01)) / 3
    expected = (fake + real) / 2
    assert split_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    plain = (fake + 3 * real) / 4
    assert abs(expected - plain) > 0.05


def test_soft_targets_split_at_one_half():
    logits = torch.tensor([1.0, -2.0, 3.0])
    targets = torch.tensor([0.5, 0.49, 0.7])
    expected = ((bce(1.0, 0.5) + bce(3.0, 0.7)) / 2 + bce(-2.0, 0.49)) / 2
    assert split_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("label, clipped", [(0, 0.01), (1, 0.99)])
def test_single_class_batch_is_that_class_mean(label, clipped):
    logits = torch.tensor([1.5, -0.5, 3.0])
    targets = torch.full((3,), label, dtype=torch.long)
    expected = sum(bce(z, clipped) for z in (1.5, -0.5, 3.0)) / 3
    assert split_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_clipping_bounds_confident_loss():
    logits = torch.tensor([10.0, -10.0], dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0], dtype=torch.float64)
    clipped = split_bce(logits, targets).item()
    assert clipped == pytest.approx(bce(10.0, 0.99), rel=1e-9)
    assert clipped > 0.09
    unclipped = split_bce(logits, targets, bounds=(0.0, 1.0)).item()
    assert unclipped == pytest.approx(bce(10.0, 1.0), rel=1e-9)
    assert unclipped < 1e-4


def test_finite_for_extreme_logits():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss = split_bce(logits, targets)
    assert loss.item() == pytest.approx(50.0, rel=1e-5)  # each half: (1 + 99) / 2
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # d/dz of mean over 2 samples, halved: (sigmoid(z) - t) / 4
    assert logits.grad.tolist() == pytest.approx([0.0025, -0.2475, 0.2475, -0.0025], abs=1e-6)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        split_bce(torch.zeros(4, 1), torch.zeros(4))


def test_uniformity_and_alignment_on_known_features():
    from dfdc.models.losses import alignment, uniformity

    e = torch.eye(3)  # three orthonormal features: every pair 2 apart (squared)
    assert float(uniformity(e)) == pytest.approx(-4.0)  # log mean exp(-2 * 2)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert float(uniformity(same)) == pytest.approx(math.log((1 + 2 * math.exp(-4.0)) / 3))
    y = torch.tensor([0.0, 0.0, 1.0])
    assert float(alignment(same, y)) == 0.0  # the two reals coincide; the fake has no partner
    assert float(alignment(e, torch.tensor([0.0, 1.0, 1.0]))) == pytest.approx(2.0)
    assert float(uniformity(e[:1])) == 0.0 and float(alignment(e, torch.tensor([0.0, 1.0, 0.9]))) == pytest.approx(2.0)


def test_feature_losses_have_finite_gradients_where_features_coincide():
    from dfdc.models.losses import alignment, uniformity

    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    (uniformity(z) + alignment(z, torch.tensor([1.0, 1.0, 0.0]))).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_gather_batch_is_the_identity_outside_a_process_group():
    from dfdc.models.losses import gather_batch

    z, y = torch.randn(4, 3), torch.tensor([0.0, 1.0, 1.0, 0.0])
    gz, gy = gather_batch(z, y)
    assert gz is z and gy is y
