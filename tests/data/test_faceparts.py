"""The 1st place's face-part dropouts: regions at the landmarks after geometry, diff-guided cuts."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest

from dfdc.data.augment import train_transforms
from dfdc.data.faceparts import (DIFF_THRESHOLD, MIN_VISIBLE, Cutout, diff_cut, face_ellipse, half_face,
                                 outline_region, part_mask)
from dfdc.data.frames import LANDMARKS, FrameDataset
from dfdc.faces.landmarks import DENSE_COLUMNS
from dfdc.store import ShardWriter, encode_png
from face68 import face68

H, W = 140, 112
# left eye, right eye, nose, left and right mouth corner (MTCNN order), as in a crop with margin 0.3
LM = np.array([[38.0, 60.0], [74.0, 60.0], [56.0, 80.0], [41.0, 97.0], [71.0, 97.0]])
MARKERS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def marked_crop() -> np.ndarray:
    """Grey crop (never black) with a pure-colour 5x5 marker on each landmark."""
    img = np.full((H, W, 3), 120, np.uint8)
    for (x, y), c in zip(LM.astype(int), MARKERS):
        img[y - 2:y + 3, x - 2:x + 3] = c
    return img


def marker_positions(img: np.ndarray) -> np.ndarray:
    """Where each marker colour ended up (centroid of the pixels nearest to it)."""
    out = []
    for c in MARKERS:
        d = np.abs(img.astype(int) - np.array(c)).sum(-1)
        ys, xs = np.nonzero(d < 60)
        out.append([xs.mean(), ys.mean()])
    return np.array(out)


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
    return np.hypot(*(points - (a + t[:, None] * ab)).T)


def test_part_masks_lie_along_their_landmarks():
    iod = np.hypot(*(LM[1] - LM[0]))
    for part, (a, b), half in (("eyes", (LM[0], LM[1]), 1 + iod // 4),
                               ("nose", (LM[2], LM[:2].mean(0)), 1 + iod // 4),
                               ("mouth", (LM[3], LM[4]), 1 + np.hypot(*(LM[4] - LM[3])) // 3)):
        mask = part_mask(LM, (H, W), part)
        ys, xs = np.nonzero(mask)
        d = segment_distance(np.stack([xs, ys], 1).astype(float), a, b)
        assert d.max() <= half + 1.5, part  # nothing far from its segment
        assert mask[int(a[1]), int(a[0])] and mask[int(b[1]), int(b[0])]
    with pytest.raises(ValueError, match="unknown face part"):
        part_mask(LM, (H, W), "ears")


def test_face_ellipse_and_half_face():
    region = face_ellipse(LM, (H, W))
    assert all(region[int(y), int(x)] for x, y in LM)  # every landmark inside
    assert not region[:10].any() and not region[:, :5].any()  # the crop's margin stays out
    rng = np.random.default_rng(0)
    halves = [half_face(LM, (H, W), rng) for _ in range(20)]
    for h in halves:
        assert h.any() and (h <= region).all() and 0.3 < h.sum() / region.sum() < 0.7
    assert len({h.tobytes() for h in halves}) == 4  # upper, lower, left, right


@pytest.mark.parametrize("seed", range(4))
def test_removed_region_follows_the_landmarks_through_flip_and_affine(seed):
    """Through a flip and a shift-scale-rotate, what the cutout blacks out lies around the moved landmarks."""
    img = marked_crop()
    table = pd.DataFrame({"key": ["k"], "shard": ["s.npz"], "label": [0],
                          **{c: [v] for c, v in zip(LANDMARKS, LM.reshape(-1))}})
    aug = dict(jpeg=False, noise=False, blur=False, color=False, gray=False, hflip=True, geometric=True)

    def item(cutout):
        t = train_transforms(96, seed=0, keypoints=True, **aug)
        t.transforms = [A.HorizontalFlip(p=1.0) if isinstance(x, A.HorizontalFlip) else
                        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-10, 10),
                                 interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)
                        if isinstance(x, A.Affine) else x for x in t.transforms]
        ds = FrameDataset(table, ".", t, cutout=cutout)
        ds.read = lambda shard, key: img.copy()
        ds.set_random_seed(seed)
        return ds[0]["x"]

    plain, cut = item(None), item(Cutout(landmarks=1.0))
    moved = marker_positions(plain)
    assert moved[0, 0] > moved[1, 0]  # flipped: the left eye's marker is now right of the right eye's
    dropped = np.argwhere((cut != plain).any(-1))[:, ::-1].astype(float)  # (x, y)
    if len(dropped) == 0:  # the 1st place removes nothing 1 time in 8
        return
    assert (cut[(cut != plain).any(-1)] == 0).all()
    segments = {"eyes": (moved[0], moved[1]), "nose": (moved[2], moved[:2].mean(0)), "mouth": (moved[3], moved[4])}
    near = {p: segment_distance(dropped, a, b).max() for p, (a, b) in segments.items()}
    part = min(near, key=near.get)
    a, b = segments[part]
    width = np.hypot(*(a - b)) if part == "mouth" else np.hypot(*(moved[1] - moved[0]))
    assert near[part] <= width / 2 + 3, (part, near)


def test_diff_cut_never_hides_all_of_a_fakes_mask():
    img = marked_crop()
    diff = np.zeros((H, W), np.uint8)
    diff[20:30, 10:20] = 255  # a small manipulated patch in one corner: most cuts would hide it
    rng = np.random.default_rng(0)
    cuts = [diff_cut(img, diff, True, rng) for _ in range(300)]
    kept = [k for k in cuts if k is not None]
    assert kept, "no cut was ever accepted"
    for keep in kept:
        assert np.count_nonzero((diff > DIFF_THRESHOLD) & keep) > MIN_VISIBLE
        assert (~keep).sum() > 0.2 * H * W  # a real cut: a half or a quadrant pair goes black
    assert diff_cut(img, np.zeros_like(diff), True, rng) is None  # nothing visible to keep: no cut
    assert diff_cut(img, None, True, rng) is None


def test_a_real_crops_cut_ignores_masks():
    img = marked_crop()
    hidden = np.zeros((H, W), np.uint8)
    hidden[20:30, 10:20] = 255
    a = diff_cut(img, hidden, False, np.random.default_rng(5))
    b = diff_cut(img, None, False, np.random.default_rng(5))
    assert a is not None and np.array_equal(a, b)
    cuts = [diff_cut(img, hidden, False, np.random.default_rng(s)) for s in range(40)]
    assert any(not k[20:30, 10:20].any() for k in cuts)  # a real's cut may hide any region


def test_dataset_diff_cutout_keeps_a_fakes_mask_visible(tmp_path):
    """Through the dataset: the stored diff mask follows the resize, the cut spares it."""
    img = marked_crop()
    diff = np.zeros((H, W), np.uint8)
    diff[100:120, 80:100] = 255
    writer = ShardWriter(tmp_path, 8)
    masks = writer.add("f", encode_png(diff))
    writer.close()
    table = pd.DataFrame({"key": ["f"], "shard": ["s.npz"], "label": [1], "mask": [masks],
                          **{c: [v] for c, v in zip(LANDMARKS, LM.reshape(-1))}})
    aug = dict(jpeg=False, noise=False, blur=False, color=False, gray=False, hflip=False, geometric=False)
    ds = FrameDataset(table, tmp_path, train_transforms(96, seed=0, keypoints=True, **aug), cutout=Cutout(diff=1.0))
    stored = ds.read
    ds.read = lambda s, k, grey=False: stored(s, k, grey) if s == masks else img.copy()
    scale = 96 / H
    x0 = (96 - round(W * scale)) // 2
    patch = (slice(round(100 * scale) + 1, round(120 * scale) - 1), slice(x0 + round(80 * scale) + 1,
                                                                          x0 + round(100 * scale) - 1))
    cut_any = False
    for seed in range(12):
        ds.set_random_seed(seed)
        x = ds[0]["x"]
        assert (x[patch] != 0).any(-1).sum() > 0  # never all of the manipulated patch hidden
        cut_any |= (x == 0).all(-1).sum() > 0.3 * 96 * 96
    assert cut_any
    with pytest.raises(ValueError, match="diff masks"):
        FrameDataset(table.drop(columns="mask"), ".", None, cutout=Cutout(diff=1.0))


def test_outline_half_face_is_the_1st_place_polygon():
    d = face68()
    region = outline_region(d, (H, W))
    assert region[int(d[30, 1]), int(d[30, 0])] and region[52, 56]  # the nose tip and between the brows
    assert not region[40, 56] and not region[:, :15].any()  # above the brows, beyond the jaw
    rng = np.random.default_rng(0)
    halves = [half_face(LM, (H, W), rng, dense=d) for _ in range(20)]
    assert len({h.tobytes() for h in halves}) == 4
    for h in halves:
        assert (h <= region).all() and 0.3 < h.sum() / region.sum() < 0.7
    nan68 = np.full((68, 2), np.nan)
    assert np.array_equal(half_face(LM, (H, W), np.random.default_rng(1), dense=nan68),
                          half_face(LM, (H, W), np.random.default_rng(1)))  # no fit: the 5-point ellipse


@pytest.mark.parametrize("seed", range(3))
def test_half_face_follows_the_68_points_through_flip_and_affine(seed):
    """The blacked-out half lies inside the outline of the 68 points as the flip and the affine moved them."""
    img = marked_crop()
    table = pd.DataFrame({"key": ["k"], "shard": ["s.npz"], "label": [0],
                          **{c: [v] for c, v in zip(LANDMARKS, LM.reshape(-1))},
                          **{c: [v] for c, v in zip(DENSE_COLUMNS, face68().reshape(-1))}})
    aug = dict(jpeg=False, noise=False, blur=False, color=False, gray=False, hflip=True, geometric=True)
    t = train_transforms(96, seed=seed, keypoints=True, **aug)
    t.transforms = [A.HorizontalFlip(p=1.0) if isinstance(x, A.HorizontalFlip) else
                    A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-10, 10),
                             interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)
                    if isinstance(x, A.Affine) else x for x in t.transforms]
    def item(cutout):
        ds = FrameDataset(table, ".", t, cutout=cutout)
        ds.read = lambda shard, key: img.copy()
        ds.set_random_seed(seed)
        return ds, ds[0]["x"]

    ds, cut = item(Cutout(half_face=1.0))
    assert ds.dense is not None
    _, plain = item(None)
    t.set_random_seed(seed)
    out = t(image=img, keypoints=np.concatenate([LM, face68()]), mask=np.zeros((H, W), np.uint8))
    moved = np.asarray(out["keypoints"])[5:, :2]
    assert np.array_equal(out["image"], plain)  # the same draws as the dataset's
    assert moved[0, 0] > moved[16, 0]  # flipped: the jaw now starts on the right
    dropped = (cut != plain).any(-1)
    assert (cut[dropped] == 0).all()
    outline = outline_region(moved, plain.shape[:2])
    assert 0.25 < dropped.sum() / outline.sum() < 0.75  # about half of the moved outline
    assert (dropped & ~outline).sum() <= 0.03 * dropped.sum()  # nothing outside it (rounding at the edge)
