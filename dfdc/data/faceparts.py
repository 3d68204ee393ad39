"""Face-part dropouts of the DFDC 1st place (selimsef), on the 5 MTCNN landmarks of a crop.

Landmarks are ``(5, 2)`` xy pixel coordinates in the crop, MTCNN's order: left eye,
right eye, nose, left and right mouth corner. The 1st place's code
(``training/datasets/classifier_dataset.py``) removes the eyes, the nose or the
mouth along lines between landmarks dilated by a quarter (a third for the mouth)
of their length; blacks out half of the face region (the polygon of dlib's 68 points
along the jaw and the brows, :func:`outline_region`, from the `landmarks` stage; a crop
whose dense fit failed falls back to an ellipse derived from the 5 landmarks,
:func:`face_ellipse`); and blacks out a half or a quadrant pair of the crop,
accepting the cut on a fake only while enough of its SSIM difference mask stays
visible. Every function draws from the ``numpy`` generator it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dfdc.faces.landmarks import OUTLINE, valid_dense

PARTS = ("eyes", "nose", "mouth")
DIFF_THRESHOLD = 0.4 * 255  # the 1st place: a diff pixel counts as manipulated above this
MIN_VISIBLE = 40  # the 1st place: manipulated pixels a cut must leave visible on a fake


def valid_landmarks(landmarks: np.ndarray | None) -> bool:
    """Whether ``landmarks`` is a finite ``(5, 2)`` array."""
    return landmarks is not None and np.shape(landmarks) == (5, 2) and bool(np.isfinite(landmarks).all())


def face_ellipse(landmarks: np.ndarray, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """Boolean ``shape`` mask of the face region estimated from 5 landmarks.

    The ellipse runs along the line from the eyes' midpoint to the mouth's: from 0.4 of that
    distance ``d`` above the eyes (the brows) to 0.7 ``d`` below the mouth (the chin), and as
    wide as the eyes' distance each side of the axis; ``scale`` grows or shrinks both axes.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
    down = mouth - eyes
    d = max(float(np.hypot(*down)), 1.0)
    iod = max(float(np.hypot(*(lm[1] - lm[0]))), 1.0)
    centre = eyes + down / d * (0.65 * d)
    angle = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0
    axes = (max(1, round(iod * scale)), max(1, round(1.05 * d * scale)))
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), axes, angle, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def part_mask(landmarks: np.ndarray, shape: tuple[int, int], part: str) -> np.ndarray:
    """Boolean mask of the 1st place's removed region: ``eyes`` (the line between the eyes), ``nose``
    (from the nose to the eyes' midpoint), both widened by a quarter of the eyes' distance each
    side; ``mouth`` (between the mouth corners), widened by a third of the mouth's width."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if part == "eyes":
        a, b, width = lm[0], lm[1], np.hypot(*(lm[1] - lm[0])) // 4
    elif part == "nose":
        a, b, width = lm[2], lm[:2].mean(0), np.hypot(*(lm[1] - lm[0])) // 4
    elif part == "mouth":
        a, b, width = lm[3], lm[4], np.hypot(*(lm[4] - lm[3])) // 3
    else:
        raise ValueError(f"unknown face part {part!r}; valid: {PARTS}")
    mask = np.zeros(shape, np.uint8)
    pt = lambda p: (int(p[0]), int(p[1]))  # noqa: E731 - the 1st place truncates the landmarks
    cv2.line(mask, pt(a), pt(b), 1, thickness=int(2 + 2 * width))
    return mask.astype(bool)


def landmark_part(rng: np.random.Generator) -> str | None:
    """The 1st place's choice of part: eyes 1/2, mouth 1/4, nose 1/8, none 1/8."""
    for part in ("eyes", "mouth", "nose"):
        if rng.random() > 0.5:
            return part
    return None


def outline_region(dense: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the polygon of the jaw line and the brows (68 points 0-16, then 26 down to 17):
    the face region of the 1st place's ``blackout_convex_hull``."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(dense, np.float64)[OUTLINE]).astype(np.int32)], 1)
    return mask.astype(bool)


def half_face(landmarks: np.ndarray | None, shape: tuple[int, int], rng: np.random.Generator,
              dense: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of one half (upper, lower, left or right, cut through its centroid) of the face region: the
    68 points' outline (:func:`outline_region`) with ``dense``, else the 5-point ellipse."""
    region = outline_region(dense, shape) if valid_dense(dense) else face_ellipse(landmarks, shape)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return region
    y, x = int(ys.mean()), int(xs.mean())
    first = rng.random() > 0.5
    if rng.random() > 0.5:
        if first:
            region[:y] = False
        else:
            region[y:] = False
    elif first:
        region[:, :x] = False
    else:
        region[:, x:] = False
    return region


def random_cut(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the part a cut KEEPS: a half (pivot within a fifth of the middle) or a quadrant pair."""
    h, w = shape
    keep = np.ones(shape, bool)
    kind = rng.integers(3)
    first = rng.random() < 0.5
    if kind == 0:
        pivot = int(rng.integers(h // 2 - h // 5, h // 2 + h // 5 + 1))
        keep[:pivot] = not first
        keep[pivot:] = first
    elif kind == 1:
        pivot = int(rng.integers(w // 2 - w // 5, w // 2 + w // 5 + 1))
        keep[:, :pivot] = not first
        keep[:, pivot:] = first
    else:
        mh, mw = h // 2, w // 2
        keep[:mh, :mw] = keep[mh:, mw:] = first
        keep[:mh, mw:] = keep[mh:, :mw] = not first
    return keep


def diff_cut(image: np.ndarray, diff: np.ndarray | None, fake: bool, rng: np.random.Generator,
             tries: int = 50, min_visible: int = MIN_VISIBLE) -> np.ndarray | None:
    """The KEEP mask of a diff-guided cut, or None when no cut was accepted in ``tries``.

    A fake's cut must leave more than ``min_visible`` pixels of its difference mask (above
    :data:`DIFF_THRESHOLD`) visible, so its manipulated pixels are never all hidden; a fake
    without a mask is never cut. A real's cut ignores masks and must leave a fifth of the crop's
    pixels non-black (the 1st place).
    """
    h, w = image.shape[:2]
    manipulated = diff > DIFF_THRESHOLD if (fake and diff is not None) else None
    if fake and (manipulated is None or np.count_nonzero(manipulated) <= min_visible):
        return None
    lit = image.max(axis=-1) > 0 if not fake else None
    for _ in range(tries):
        keep = random_cut((h, w), rng)
        if fake:
            if np.count_nonzero(manipulated & keep) > min_visible:
                return keep
        elif np.count_nonzero(lit & keep) > h * w / 5:
            return keep
    return None


@dataclass(frozen=True)
class Cutout:
    """The 1st place's dropouts as one draw per crop: probabilities of each (0: off).

    ``landmarks``: remove a face part (:func:`landmark_part`, at the 5 points); otherwise ``half_face``: black
    out half of the face region (:func:`half_face`: the 68 points' outline, or the 5-point ellipse); then,
    independently, ``diff``: a diff-guided cut (:func:`diff_cut`).
    """

    landmarks: float = 0.0
    half_face: float = 0.0
    diff: float = 0.0

    @property
    def active(self) -> bool:
        return self.landmarks > 0 or self.half_face > 0 or self.diff > 0

    @property
    def needs_landmarks(self) -> bool:
        return self.landmarks > 0 or self.half_face > 0

    def drop_mask(self, image: np.ndarray, landmarks: np.ndarray | None, diff: np.ndarray | None, fake: bool,
                  rng: np.random.Generator, dense: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the pixels to black out (all False: nothing); ``dense``: the crop's 68 points."""
        shape = image.shape[:2]
        drop = np.zeros(shape, bool)
        has_lm = valid_landmarks(landmarks)
        has_dense = valid_dense(dense)
        if self.landmarks > 0 and rng.random() < self.landmarks:
            part = landmark_part(rng)
            if part is not None and has_lm:
                drop |= part_mask(landmarks, shape, part)
        elif self.half_face > 0 and rng.random() < self.half_face and (has_lm or has_dense):
            drop |= half_face(landmarks, shape, rng, dense if has_dense else None)
        if self.diff > 0 and rng.random() < self.diff:
            visible = diff if diff is None else np.where(drop, 0, diff)
            keep = diff_cut(np.where(drop[..., None], 0, image), visible, fake, rng)
            if keep is not None:
                drop |= ~keep
        return drop
