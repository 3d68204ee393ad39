"""Self-blended images as published: a face hull of the 68 points (5-point and box fallbacks), the source-target
transforms, the mask's deformation and blur; seeded."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from dfdc.data.frames import LANDMARKS, FrameDataset
from dfdc.data.faceparts import face_ellipse
from dfdc.data.sbi import (HULLS, RATIOS, blur_mask, box_ellipse, elastic, face_region, forehead, hull_mask,
                           pair_target, self_blend, source_transform)
from dfdc.faces.landmarks import DENSE_COLUMNS
from dfdc.train.data import self_blended_rows
from face68 import LM5 as LM, H, W, face68


def textured_crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(30, 225, (H, W, 3), dtype=np.uint8)


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("face", ["dense", "five", "box"])
def test_pseudo_fake_blends_a_face_region(face):
    img = textured_crop()
    dense = face68() if face == "dense" else None
    landmarks = LM if face == "five" else None
    for seed in range(8):
        fake, mask = self_blend(img, landmarks, np.random.default_rng(seed), dense=dense)
        assert fake.shape == img.shape and fake.dtype == np.uint8
        assert mask.shape == (H, W) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        assert mask.max() in RATIOS or np.isclose(mask.max(), RATIOS).any()  # the blend ratio at the core
        assert (fake != img).any()
        assert 0.05 < (mask > 0.05).mean() < 0.8  # the face, not the whole crop
        assert mask[:6].max() < 0.05 and mask[:, :3].max() < 0.05  # the margin stays out
        cx, cy = centroid(mask)
        assert abs(cx - 56) < 6 and 50 < cy < 92  # on the face (whose forehead reaches y 25)


def test_mask_follows_the_dense_landmarks():
    img = textured_crop()
    _, a = self_blend(img, LM, np.random.default_rng(0), dense=face68())
    _, b = self_blend(img, LM, np.random.default_rng(0), dense=face68(dy=15))
    assert 10 < centroid(b)[1] - centroid(a)[1] < 20


def test_hulls_and_forehead():
    d = face68()
    fh = forehead(d)
    assert fh.shape == (10, 2) and (fh[:, 1] < d[17:27, 1]).all()  # above the brows
    assert 20 < d[17:27, 1].mean() - fh[:, 1].mean() < 30  # half the brow-to-chin height, tapered
    masks = {k: hull_mask(d, (H, W), k) for k in HULLS}
    for k, m in masks.items():
        assert m.dtype == np.uint8 and m[int(d[30, 1]), int(d[30, 0])] == 1, k  # the nose tip inside
        assert m[2, 2] == 0 and m[H - 3, W - 3] == 0, k
    top = {k: np.nonzero(m.any(1))[0].min() for k, m in masks.items()}
    assert top["facehull"] < top["extended"] < top["components"]  # the forehead, raised brows, the brows
    no_forehead = hull_mask(d, (H, W), "facehull", with_forehead=False)
    assert np.nonzero(no_forehead.any(1))[0].min() == top["components"] and no_forehead.sum() < masks["facehull"].sum()
    with pytest.raises(ValueError, match="unknown face hull"):
        hull_mask(d, (H, W), "ellipse")


def test_region_falls_back_from_dense_to_five_points_to_the_box():
    rng = np.random.default_rng(0)
    nan68 = np.full((68, 2), np.nan)
    assert np.array_equal(face_region((H, W), rng, nan68, LM), face_ellipse(LM, (H, W)).astype(np.uint8))
    assert np.array_equal(face_region((H, W), rng, None, None, 0.3), box_ellipse((H, W), 0.3).astype(np.uint8))
    kinds = {face_region((H, W), np.random.default_rng(s), face68(), LM).tobytes() for s in range(40)}
    assert len(kinds) >= 3  # the hulls (on this convex template the 68-point ones partly coincide)


def test_source_transform_elastic_and_blur():
    img = textured_crop()
    a = source_transform(img, np.random.default_rng(1))
    assert a.shape == img.shape and a.dtype == np.uint8 and not np.array_equal(a, img)
    assert np.array_equal(a, source_transform(img, np.random.default_rng(1)))
    region = hull_mask(face68(), (H, W), "components")
    moved = elastic(region, np.random.default_rng(0))
    assert not np.array_equal(moved, region) and abs(int(moved.sum()) - int(region.sum())) < 0.1 * region.sum()
    soft = blur_mask(region, np.random.default_rng(0))
    assert soft.dtype == np.float32 and np.isclose(soft.max(), 1) and soft[0, 0] == 0
    assert (soft[region == 0] < 1).all() and soft[int(face68()[30, 1]), 56] > 0.5
    assert not blur_mask(np.zeros((H, W), np.uint8), np.random.default_rng(0)).any()


def test_deterministic_for_a_seed():
    img = textured_crop()
    a, ma = self_blend(img, LM, np.random.default_rng(3), dense=face68())
    b, mb = self_blend(img, LM, np.random.default_rng(3), dense=face68())
    c, _ = self_blend(img, LM, np.random.default_rng(4), dense=face68())
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
    twins = 0
    for seed in range(8):
        ds.set_random_seed(seed)
        real, pseudo = ds[0], ds[2]  # the crop r1 as a real and as its pseudo-fake
        pair = pair_target(img, np.random.default_rng([seed, zlib.crc32(b"r1")]))
        assert real["y"] == 0 and np.array_equal(real["x"], pair[0])  # the real trains as SBI's target
        assert pseudo["y"] == 1 and not np.array_equal(pseudo["x"], real["x"])
        _, mask = self_blend(img, LM, np.random.default_rng([seed, 2]), pair=pair)
        assert np.array_equal(pseudo["x"][mask == 0], real["x"][mask == 0])  # the twins differ only where blended
        twins += not np.array_equal(real["x"], img)
        assert np.array_equal(ds[2]["x"], pseudo["x"])  # same epoch seed and row: same pseudo-fake
    assert 0 < twins < 8  # the target is transformed about half the time
    ds.set_random_seed(8)
    assert not np.array_equal(ds[2]["x"], pseudo["x"])
    with pytest.raises(ValueError, match="label must be 1"):
        FrameDataset(sb.assign(label=0), ".", None)

    # with the 68 points in the table, the pseudo-fake blends their hull: a row without them the ellipse
    dense = pd.DataFrame([face68().reshape(-1)] * len(sb), columns=DENSE_COLUMNS)
    dense.iloc[1] = np.nan
    ds = FrameDataset(pd.concat([sb.reset_index(drop=True), dense], axis=1), ".", None)
    ds.read = lambda s, k: img.copy()
    assert ds.dense is not None and np.isfinite(ds.dense[0]).all() and np.isnan(ds.dense[1]).all()
    ds.set_random_seed(7)
    pair = pair_target(img, np.random.default_rng([7, zlib.crc32(b"r1")]))
    expected, _ = self_blend(img, LM, np.random.default_rng([7, 2]), 0.3, dense=face68(), pair=pair)
    assert np.array_equal(ds[2]["x"], expected)
