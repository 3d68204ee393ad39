"""Self-blended images (Shiohara and Yamasaki, CVPR 2022): pseudo-fakes made from a real crop alone.

As published: the face region is one of Face X-ray's four masks drawn from the dense landmarks
(the DeepFaceLab full mask, the extended mask with the brows raised up the forehead, the
components mask, or the convex hull of every point), with probability 1/4 each; the hull
includes the forehead unless the 1/4 draw that keeps the 68 points alone says otherwise. One of
source and target (1/2 each) goes through the source-target transforms: an RGB shift (p 0.3),
a hue/saturation/value shift of +-0.3 and a brightness/contrast change of +-0.1, then either a
nearest-neighbour downscale by 2 or 4 and back, or a sharpening. The source and the mask move
together by an affine (x +-3 %, y +-1.5 %, scale 0.95 to 1/0.95), the mask alone is deformed
elastically (alpha 50, sigma 7), blurred twice at 192-256 px (kernels 5-25, the second with
sigma 5-45; everything below the first blur's peak dropped in between) and scaled by a blend
ratio from {0.25, 0.5, 0.75, 1, 1, 1}.

As in the authors' code the pair is the point: the real crop trains as the target (transformed
when the draw transformed the target), so the pseudo-fake differs from its real twin only inside the
blended region and no global colour or sharpness cue separates them (:func:`pair_target`; the
dataset draws it once per crop and epoch for both rows).

Differences from the authors' code: the forehead comes from 68 points, not from the 81-point
predictor (which is not published as a package): :func:`forehead` raises the ten brow points by
the rule of facial thirds. The twins are two rows of the training table, not one item (so they may
land in different batches). Each transform is written with numpy and OpenCV at the parameters of
the albumentations calls, drawing from the generator it is given, so a resumed run repeats every
draw. A crop without dense landmarks uses MTCNN's 5-point face ellipse, or the ellipse inscribed
in the detector box without those either.
"""
from __future__ import annotations

import cv2
import numpy as np

from dfdc.data.faceparts import face_ellipse, valid_landmarks
from dfdc.faces.landmarks import valid_dense

RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
HULLS = ("dfl_full", "extended", "components", "facehull")


def box_ellipse(shape: tuple[int, int], margin: float = 0.3) -> np.ndarray:
    """Boolean mask of the ellipse inscribed in the detector box at the centre of a crop with ``margin``."""
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    axes = (max(1, round(w / (1 + 2 * margin) / 2)), max(1, round(h / (1 + 2 * margin) / 2)))
    cv2.ellipse(mask, (w // 2, h // 2), axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def forehead(dense: np.ndarray) -> np.ndarray:
    """``(10, 2)`` forehead points from the 68: each brow point (17-26) raised along the face's axis (chin to
    brows) by half the brow-to-chin distance (the forehead as tall as a third of the face), tapering to 0.6 of
    that at the temples."""
    d = np.asarray(dense, np.float64)
    brows = d[17:27]
    up = brows.mean(0) - d[8]
    height = max(float(np.hypot(*up)), 1.0)
    up /= height
    taper = 0.6 + 0.4 * np.sin(np.linspace(0, np.pi, 10))
    return brows + up * (0.5 * height) * taper[:, None]


def _fill_hulls(shape: tuple[int, int], parts: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for pts in parts:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    return mask


def _components(d: np.ndarray) -> list[np.ndarray]:
    c = np.concatenate
    return [c([d[0:9], d[17:18]]), c([d[8:17], d[26:27]]), c([d[17:20], d[8:9]]), c([d[24:27], d[8:9]]),
            c([d[19:25], d[8:9]]), c([d[17:22], d[27:28], d[31:36], d[8:9]]),
            c([d[22:27], d[27:28], d[31:36], d[8:9]]), c([d[27:31], d[31:36]])]


def hull_mask(dense: np.ndarray, shape: tuple[int, int], kind: str, with_forehead: bool = True) -> np.ndarray:
    """uint8 0/1 face mask of Face X-ray's ``kind`` (:data:`HULLS`) from 68 points; ``facehull`` takes the
    :func:`forehead` points too unless ``with_forehead`` is false."""
    d = np.asarray(dense, np.float64)
    c = np.concatenate
    if kind == "dfl_full":
        return _fill_hulls(shape, [c([d[0:17], d[48:68], d[0:1], d[8:9], d[16:17]]), c([d[27:31], d[33:34]]),
                                   c([d[17:27], d[0:1], d[27:28], d[16:17], d[33:34]])])
    if kind == "components":
        return _fill_hulls(shape, _components(d))
    if kind == "extended":
        e = d.copy()
        left, right = (d[36] + d[0]) / 2, (d[16] + d[45]) / 2
        below_l = np.stack([(d[36] + left) / 2, d[36], d[37], d[38], d[39]])
        below_r = np.stack([d[42], d[43], d[44], d[45], (d[45] + right) / 2])
        e[17:22] = d[17:22] + (d[17:22] - below_l) / 2
        e[22:27] = d[22:27] + (d[22:27] - below_r) / 2
        return _fill_hulls(shape, _components(e))
    if kind == "facehull":
        return _fill_hulls(shape, [c([d, forehead(d)]) if with_forehead else d])
    raise ValueError(f"unknown face hull {kind!r}; valid: {HULLS}")


def _hsv_shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-0.3, 0.3), 180)
    hsv[..., 1:] += rng.uniform(-0.3, 0.3, 2).astype(np.float32)
    hsv = np.clip(np.rint(hsv), 0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def source_transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SBI's source-target transform of an RGB uint8 crop: colour (RGB shift p 0.3, HSV shift, brightness and
    contrast) then frequency (a downscale by 2 or 4 and back, or a sharpening), uint8 out."""
    h, w = image.shape[:2]
    x = image
    if rng.random() < 0.3:
        x = np.clip(x.astype(np.float32) + rng.uniform(-20, 20, 3).astype(np.float32), 0, 255).astype(np.uint8)
    x = _hsv_shift(x, rng)
    alpha, beta = 1 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1) * 255  # contrast, brightness (by max)
    x = np.clip(np.rint(x.astype(np.float32) * alpha + beta), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        r = (2, 4)[int(rng.integers(2))]
        small = cv2.resize(x, (max(1, int(w / r)), max(1, int(h / r))), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    a, lightness = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0)
    effect = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]], np.float32)
    same = np.zeros((3, 3), np.float32)
    same[1, 1] = 1
    return np.clip(cv2.filter2D(x.astype(np.float32), -1, (1 - a) * same + a * effect), 0, 255).astype(np.uint8)


def _affine(source: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    s = rng.uniform(0.95, 1 / 0.95)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.015, 0.015) * h
    m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float64)
    src = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    msk = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return src, msk


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float = 50.0, sigma: float = 7.0) -> np.ndarray:
    """``mask`` deformed by a random displacement field (uniform noise, Gaussian-smoothed by ``sigma``, times
    ``alpha`` pixels), nearest-neighbour."""
    h, w = mask.shape
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + dx, gy + dy, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def blur_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SBI's soft mask: resized to 192-256 px a side, blurred, cut to its plateau, blurred again, back to size;
    float32 in [0, 1] (all 0 for an empty mask)."""
    h, w = mask.shape
    m = cv2.resize(mask.astype(np.float32), (int(rng.integers(192, 257)), int(rng.integers(192, 257))))
    k1, k2 = (int(rng.choice(np.arange(5, 26, 2))) for _ in range(2))
    m = cv2.GaussianBlur(m, (k1, k1), 0)
    if m.max() <= 0:
        return np.zeros((h, w), np.float32)
    m = m / m.max()
    m[m < 1] = 0
    m = cv2.GaussianBlur(m, (k2, k2), float(rng.integers(5, 46)))
    if m.max() <= 0:
        return np.zeros((h, w), np.float32)
    return cv2.resize(m / m.max(), (w, h)).astype(np.float32)


def face_region(shape: tuple[int, int], rng: np.random.Generator, dense: np.ndarray | None = None,
                landmarks: np.ndarray | None = None, margin: float = 0.3) -> np.ndarray:
    """uint8 0/1 region to blend: a random Face X-ray hull of ``dense`` (with the forehead 3 times in 4), else the
    5-point ellipse of ``landmarks``, else the detector box's ellipse."""
    if valid_dense(dense):
        with_forehead = rng.random() >= 0.25
        return hull_mask(dense, shape, HULLS[int(rng.integers(len(HULLS)))], with_forehead)
    if valid_landmarks(landmarks):
        return face_ellipse(landmarks, shape).astype(np.uint8)
    return box_ellipse(shape, margin).astype(np.uint8)


def pair_target(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """SBI's draw of which side is transformed: (the target, whether the source is to be transformed instead).
    The target is the crop itself half the time (then the source gets the transform), else the transformed crop;
    the real twin of a pseudo-fake trains as this target."""
    if rng.random() < 0.5:
        return image, True
    return source_transform(image, rng), False


def self_blend(image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator,
               margin: float = 0.3, dense: np.ndarray | None = None,
               pair: tuple[np.ndarray, bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-fake uint8 like ``image``, its soft blend mask): ``mask * source + (1 - mask) * target``, where
    source and target are ``image``, one of them transformed (:func:`source_transform`).

    ``dense``: the crop's 68 points; ``landmarks``: its 5 (the fallback region); ``margin``: the crop's margin
    around its detector box (the last fallback). ``pair``: :func:`pair_target`'s draw, shared with the real
    twin (default: drawn here from ``rng``).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"self_blend takes an RGB crop (H, W, 3), got shape {image.shape}")
    shape = image.shape[:2]
    target, transform_source = pair if pair is not None else pair_target(image, rng)
    region = face_region(shape, rng, dense, landmarks, margin)
    source = source_transform(image, rng) if transform_source else image
    source, region = _affine(source, region, rng)
    mask = blur_mask(elastic(region, rng), rng) * RATIOS[int(rng.integers(len(RATIOS)))]
    blended = mask[..., None] * source.astype(np.float32) + (1 - mask[..., None]) * target.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8), mask
