"""Self-blended images: the pseudo-fake differs from its source only inside its mask; seeded."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfdc.data.frames import LANDMARKS, FrameDataset
from dfdc.data.sbi import box_ellipse, self_blend
from dfdc.train.data import self_blended_rows

H, W = 140, 112
LM = np.array([[38.0, 60.0], [74.0, 60.0], [56.0, 80.0], [41.0, 97.0], [71.0, 97.0]])


def textured_crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(30, 225, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("landmarks", [LM, None, np.full((5, 2), np.nan)])
def test_pseudo_fake_differs_only_inside_its_mask(landmarks):
    img = textured_crop()
    for seed in range(6):
        fake, mask = self_blend(img, landmarks, np.random.default_rng(seed))
        assert fake.shape == img.shape and fake.dtype == np.uint8
        assert mask.shape == (H, W) and 0 <= mask.min() and mask.max() <= 1
        changed = (fake != img).any(-1)
        assert changed.any()
        assert not changed[mask == 0].any()  # bit-exact outside the (feathered) mask
        assert 0.1 < (mask > 0).mean() < 0.8  # the face, not the whole crop
        assert mask[:8].max() == 0 and mask[:, :4].max() == 0  # the margin stays out
        core = mask > 0.9
        if core.any():
            assert np.abs(fake[core].astype(int) - img[core]).mean() > 1  # really blended where the mask is 1


def test_mask_follows_the_landmarks():
    img = textured_crop()
    moved = LM + [0, 20]  # the face 20 px lower
    _, a = self_blend(img, LM, np.random.default_rng(0))
    _, b = self_blend(img, moved, np.random.default_rng(0))
    ya = (np.nonzero(a)[0]).mean()
    yb = (np.nonzero(b)[0]).mean()
    assert 15 < yb - ya < 25


def test_deterministic_for_a_seed():
    img = textured_crop()
    a, ma = self_blend(img, LM, np.random.default_rng(3))
    b, mb = self_blend(img, LM, np.random.default_rng(3))
    c, _ = self_blend(img, LM, np.random.default_rng(4))
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and not np.array_equal(a, c)


def test_box_ellipse_without_landmarks():
    m = box_ellipse((H, W), margin=0.3)
    assert m[H // 2, W // 2] and not m[2, 2] and 0.3 < m.mean() < 0.5
    with pytest.raises(ValueError, match="RGB crop"):
        self_blend(np.zeros((H, W), np.uint8), LM, np.random.default_rng(0))


def test_rows_and_dataset_for_each_fakes_switch():
    table = pd.DataFrame({"key": ["r1", "r2", "f1"], "shard": ["s"] * 3, "label": [0, 0, 1],
                          **{c: [v] * 3 for c, v in zip(LANDMARKS, LM.reshape(-1))}})
    assert self_blended_rows(table, "dataset") is table
    sb = self_blended_rows(table, "self_blended")
    assert sb["label"].tolist() == [0, 0, 1, 1] and sb["self_blend"].tolist() == [False, False, True, True]
    assert sb["key"].tolist() == ["r1", "r2", "r1", "r2"]  # pseudo-fakes from the reals alone
    both = self_blended_rows(table, "both")
    assert both["key"].tolist() == ["r1", "r2", "f1", "r1", "r2"] and both["label"].tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="from real crops"):
        self_blended_rows(table[table["label"] == 1], "both")

    img = textured_crop()
    ds = FrameDataset(sb, ".", None)
    ds.read = lambda s, k: img.copy()
    ds.set_random_seed(7)
    real, pseudo = ds[0], ds[2]
    assert real["y"] == 0 and np.array_equal(real["x"], img)
    assert pseudo["y"] == 1 and not np.array_equal(pseudo["x"], img)
    assert np.array_equal(ds[2]["x"], pseudo["x"])  # same epoch seed and row: same pseudo-fake
    ds.set_random_seed(8)
    assert not np.array_equal(ds[2]["x"], pseudo["x"])
    with pytest.raises(ValueError, match="label must be 1"):
        FrameDataset(sb.assign(label=0), ".", None)
