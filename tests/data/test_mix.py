import numpy as np
import pytest
import torch

from dfdc.data.batch import Batch
from dfdc.data.mix import AlignedMixup, CutMix


def _constant_batch(shape, seed=0):
    """Item i is the constant (i + 1) / 32 everywhere; targets are distinct values in [0, 1]."""
    n = shape[0]
    x = (torch.arange(n, dtype=torch.float32) + 1).div(32).view((n,) + (1,) * (len(shape) - 1)).expand(shape)
    y = torch.as_tensor(np.random.default_rng(seed).random(n), dtype=torch.float32)
    return Batch(x.contiguous(), y, torch.arange(n) + 100)


def _sources(out, batch):
    """Per output item, which input item each pixel came from: (B, *spatial) int, channels checked equal."""
    values = batch.x.flatten(1)[:, 0]  # (B,) the constant of each item
    src = (out.x.unsqueeze(-1) == values).int().argmax(-1)  # (B, 3, ...)
    assert torch.isin(out.x, values).all(), "every output pixel must come from some input item"
    assert (src == src[:, :1]).all(), "the three channels must be pasted together"
    return src[:, 0]


def _check_targets_from_pixels(out, batch):
    src = _sources(out, batch)
    n = len(batch)
    for i in range(n):
        counts = torch.bincount(src[i].flatten(), minlength=n).double()
        expected = (counts / counts.sum() * batch.y.double()).sum()
        assert out.y[i].item() == pytest.approx(expected.item(), abs=1e-6)
        assert (counts > 0).sum() <= 2, "one partner per item"
    return src


def _box_of(region):
    """(start, end) per axis of the smallest box holding ``region``; asserts the box is full."""
    where = region.nonzero()
    lo, hi = where.min(0).values, where.max(0).values + 1
    assert region.sum() == torch.prod(hi - lo), "the pasted region must be a box"
    return lo.tolist(), hi.tolist()


@pytest.mark.parametrize("shape", [(12, 3, 10, 14), (12, 3, 6, 10, 8)], ids=["2d", "3d"])
def test_cutmix_target_is_the_exact_share_of_pasted_pixels(shape):
    touched_edge = 0
    for seed in range(6):
        batch = _constant_batch(shape, seed)
        before = batch.x.clone()
        out = CutMix(alpha=1.0, p=1.0)(batch, np.random.default_rng(seed))
        assert torch.equal(batch.x, before), "the input batch must not change"
        assert out.x.shape == batch.x.shape and torch.equal(out.idx, batch.idx)
        src = _check_targets_from_pixels(out, batch)
        for i in range(len(batch)):
            pasted = src[i] != i
            if pasted.any():
                lo, hi = _box_of(pasted)
                touched_edge += any(a == 0 or b == d for a, b, d in zip(lo, hi, shape[2:]))
        assert 0 <= out.y.min() and out.y.max() <= 1
    assert touched_edge > 0, "some boxes reach the border, so the clipped share is what was checked"


def test_cutmix_on_clips_pastes_a_cuboid_over_a_temporal_segment():
    shape = (16, 3, 8, 12, 10)  # (B, 3, T, H, W)
    short = 0
    for seed in range(4):
        batch = _constant_batch(shape, seed)
        out = CutMix(alpha=1.0, p=1.0)(batch, np.random.default_rng(seed))
        src = _sources(out, batch)
        for i in range(len(batch)):
            pasted = src[i] != i  # (T, H, W)
            if not pasted.any():
                continue
            (t0, h0, w0), (t1, h1, w1) = _box_of(pasted)
            frames = pasted.flatten(1).any(1)
            assert frames.nonzero().flatten().tolist() == list(range(t0, t1))
            assert torch.equal(out.x[i, :, :t0], batch.x[i, :, :t0])
            assert torch.equal(out.x[i, :, t1:], batch.x[i, :, t1:])
            assert all(pasted[t, h0:h1, w0:w1].all() for t in range(t0, t1))  # the same box in every frame
            short += t1 - t0 < shape[2]
    assert short > 0, "some segments are shorter than the clip"


def test_cutmix_with_p_zero_leaves_the_batch_unchanged():
    batch = _constant_batch((6, 3, 8, 8))
    for seed in range(5):
        out = CutMix(alpha=1.0, p=0.0)(batch, np.random.default_rng(seed))
        assert torch.equal(out.x, batch.x) and torch.equal(out.y, batch.y) and torch.equal(out.idx, batch.idx)


def test_cutmix_probability_mixes_about_p_of_the_batches():
    batch, rng, mix = _constant_batch((6, 3, 8, 8)), np.random.default_rng(0), CutMix(alpha=1.0, p=0.3)
    mixed = sum(not torch.equal(mix(batch, rng).x, batch.x) for _ in range(300))
    assert 50 < mixed < 130  # 0.3 of 300, less the rare draws that paste nothing or only onto themselves


def test_cutmix_follows_the_rng_it_is_given():
    batch = _constant_batch((8, 3, 4, 16, 16))
    a = CutMix(p=1.0)(batch, np.random.default_rng(3))
    b = CutMix(p=1.0)(batch, np.random.default_rng(3))
    c = CutMix(p=1.0)(batch, np.random.default_rng(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_aligned_mixup_then_cutmix_keeps_targets_in_range_and_equal_to_the_formula():
    n = 10
    fake = _constant_batch((n, 3, 6, 6))
    y = torch.tensor([0.0, 1.0] * (n // 2))
    batch = Batch(fake.x, y, fake.idx, aligned=torch.zeros_like(fake.x))
    rng = np.random.default_rng(5)
    mixed = AlignedMixup(0.5)(batch, rng)
    assert mixed.aligned is None
    values = mixed.x.flatten(1)[:, 0]
    assert len(torch.unique(values)) == n, "items stay distinguishable after the mixup"
    out = CutMix(alpha=1.0, p=1.0)(mixed, rng)
    _check_targets_from_pixels(out, mixed)
    assert 0 <= out.y.min() and out.y.max() <= 1
    assert not torch.equal(out.y, mixed.y)


def test_cutmix_before_aligned_mixup_pastes_the_aligned_crop_at_the_same_place():
    batch = _constant_batch((8, 3, 10, 10))
    batch = Batch(batch.x, torch.ones(8), batch.idx, aligned=batch.x / 4)
    out = CutMix(alpha=1.0, p=1.0)(batch, np.random.default_rng(1))
    assert torch.equal(out.x != batch.x, out.aligned != batch.aligned)
    assert torch.equal(out.aligned, out.x / 4)
    assert 0 <= AlignedMixup()(out, np.random.default_rng(0)).y.min()


def test_cutmix_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        CutMix(alpha=0)
    with pytest.raises(ValueError, match="probability"):
        CutMix(p=1.5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        CutMix(p=1.0)(Batch(torch.zeros(2, 8, 8), torch.zeros(2), torch.arange(2)), np.random.default_rng(0))
