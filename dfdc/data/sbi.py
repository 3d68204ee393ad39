"""Self-blended images (Shiohara and Yamasaki, CVPR 2022): pseudo-fakes made from a real crop alone.

The crop (the target) is blended with a copy of itself (the source) whose colours and
frequencies are jittered and which is slightly shifted and rescaled, inside a soft mask
of the face. The paper's mask is the convex hull of 81 dense landmarks, deformed and
blurred; our crops carry MTCNN's 5 landmarks, so the mask is the face ellipse derived
from them (:func:`dfdc.data.faceparts.face_ellipse`), randomly scaled, shifted and
blurred, times a blend ratio from the paper's {0.25, 0.5, 0.75, 1, 1, 1}. A crop
without landmarks uses the ellipse inscribed in its detector box (the crop's centre
``1 / (1 + 2 margin)``).
"""
from __future__ import annotations

import cv2
import numpy as np

from dfdc.data.faceparts import face_ellipse, valid_landmarks

RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def box_ellipse(shape: tuple[int, int], margin: float = 0.3) -> np.ndarray:
    """Boolean mask of the ellipse inscribed in the detector box at the centre of a crop with ``margin``."""
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    axes = (max(1, round(w / (1 + 2 * margin) / 2)), max(1, round(h / (1 + 2 * margin) / 2)))
    cv2.ellipse(mask, (w // 2, h // 2), axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _affine(shape: tuple[int, int], rng: np.random.Generator, shift: float, scale: tuple[float, float]) -> np.ndarray:
    h, w = shape
    s = rng.uniform(*scale)
    tx, ty = rng.uniform(-shift, shift) * w, rng.uniform(-shift, shift) * h
    return np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float64)


def jitter_source(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source: colour (per-channel shift, brightness/contrast, saturation), frequency (a down-and-up
    resize or a sharpening) and geometry (shift by up to 3 %, scale 0.95-1.05) jittered."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    x += rng.uniform(-20, 20, 3).astype(np.float32)
    x = (x - 128) * rng.uniform(0.9, 1.1) + 128 + rng.uniform(-12, 12)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.8, 1.2)
    x = np.clip(x, 0, 255)
    if rng.random() < 0.5:
        f = rng.uniform(0.25, 0.5)
        small = cv2.resize(x, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        blur = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = np.clip(x + rng.uniform(0.5, 1.0) * (x - blur), 0, 255)
    m = _affine((h, w), rng, 0.03, (0.95, 1.05))
    x = cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return x


def blend_mask(landmarks: np.ndarray | None, shape: tuple[int, int], rng: np.random.Generator,
               margin: float = 0.3) -> np.ndarray:
    """Soft float32 mask in [0, 1]: the face ellipse scaled 0.8-1.05, shifted up to 3 %, blurred, times a ratio."""
    h, w = shape
    region = (face_ellipse(landmarks, shape, scale=rng.uniform(0.8, 1.05)) if valid_landmarks(landmarks)
              else box_ellipse(shape, margin))
    m = _affine(shape, rng, 0.03, (0.97, 1.03))
    mask = cv2.warpAffine(region.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    k = 2 * int(rng.integers(max(1, h // 40), max(2, h // 12) + 1)) + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    peak = float(mask.max())
    if peak > 0:
        mask = mask / peak
    mask[mask < 1e-3] = 0.0
    return (mask * RATIOS[int(rng.integers(len(RATIOS)))]).astype(np.float32)


def self_blend(image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator,
               margin: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-fake uint8 like ``image``, its blend mask): ``mask * source + (1 - mask) * image``.

    Pixels where the mask is 0 are ``image``'s own, bit for bit. ``margin`` is the crop's margin
    around its detector box, for the fallback mask of a crop without landmarks.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"self_blend takes an RGB crop (H, W, 3), got shape {image.shape}")
    source = jitter_source(image, rng)
    mask = blend_mask(landmarks, image.shape[:2], rng, margin)
    blended = mask[..., None] * source + (1 - mask[..., None]) * image.astype(np.float32)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[mask == 0] = image[mask == 0]
    return out, mask
