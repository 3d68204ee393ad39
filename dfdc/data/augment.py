"""Augmentations of the DFDC 1st-place solution, ported to albumentations 2.x.

Mapping from the 0.x originals:

* ``ImageCompression(quality_lower=60, quality_upper=100)`` -> ``quality_range=(60, 100)``
* ``GaussNoise()`` (``var_limit=(10, 50)`` in pixel units) -> ``std_range`` as a fraction
  of 255: ``(sqrt(10) / 255, sqrt(50) / 255)``
* ``GaussianBlur(blur_limit=3)`` (kernel exactly 3 in 0.x) -> ``blur_limit=(3, 3)``
  (a bare ``3`` now means "0 to 3")
* ``ShiftScaleRotate(0.1, 0.2, 10)`` -> ``Affine(translate_percent=(-0.1, 0.1),
  scale=(0.8, 1.2), rotate=(-10, 10))``
* ``PadIfNeeded(border_mode=BORDER_CONSTANT)`` -> ``fill=0``
"""
from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import albumentations as A

__all__ = ["isotropic_resize", "train_transforms", "val_transforms"]  # and IsotropicResize (__getattr__)


def _albumentations():
    """albumentations, imported on first use without its update check (its import would otherwise ask PyPI
    for a newer version: a 2 s wait and a warning on an offline machine)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations

_INTERPOLATIONS = {cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4}
# GaussNoise of 0.x drew a variance in (10, 50) pixel units^2; 2.x takes the std as a fraction of 255.
_NOISE_STD_RANGE = (math.sqrt(10) / 255, math.sqrt(50) / 255)


def _check_size(size: Any, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return int(size)


def _check_interpolation(flag: Any, name: str) -> int:
    if flag not in _INTERPOLATIONS:
        raise ValueError(f"{name} must be one of the cv2.INTER_* flags {sorted(_INTERPOLATIONS)}, got {flag!r}")
    return int(flag)


def isotropic_resize(
    img: np.ndarray,
    max_side: int,
    interp_down: int = cv2.INTER_AREA,
    interp_up: int = cv2.INTER_CUBIC,
) -> np.ndarray:
    """Resize ``img`` so that its longer side is ``max_side``, keeping the aspect ratio.

    ``interp_down`` is used when shrinking, ``interp_up`` when enlarging. The shorter side
    is rounded and never drops below 1 pixel. An image already of that size is returned as is.
    """
    max_side = _check_size(max_side, "max_side")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"cannot resize an empty image of shape {img.shape}")
    longer = max(h, w)
    if longer == max_side:
        return img
    scale = max_side / longer
    if w >= h:
        new_w, new_h = max_side, max(1, round(h * scale))
    else:
        new_w, new_h = max(1, round(w * scale)), max_side
    interpolation = interp_up if scale > 1 else interp_down
    out = cv2.resize(img, (new_w, new_h), interpolation=interpolation)
    if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        out = out[..., None]
    return out


def _resized_shape(h: int, w: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(h, w)
    return (max_side, max(1, round(w * scale))) if h >= w else (max(1, round(h * scale)), max_side)


@functools.cache
def _isotropic_resize_class() -> type:
    A = _albumentations()

    class IsotropicResize(A.DualTransform):
        """Albumentations wrapper of :func:`isotropic_resize` (longer side -> ``max_side``).

        Masks follow with nearest-neighbour interpolation, keypoints by the same scale.
        """

        def __init__(
            self,
            max_side: int,
            interpolation_down: int = cv2.INTER_AREA,
            interpolation_up: int = cv2.INTER_CUBIC,
            p: float = 1.0,
        ) -> None:
            super().__init__(p=p)
            self.max_side = _check_size(max_side, "max_side")
            self.interpolation_down = _check_interpolation(interpolation_down, "interpolation_down")
            self.interpolation_up = _check_interpolation(interpolation_up, "interpolation_up")

        def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
            return isotropic_resize(img, self.max_side, self.interpolation_down, self.interpolation_up)

        def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
            return isotropic_resize(mask, self.max_side, cv2.INTER_NEAREST, cv2.INTER_NEAREST)

        def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
            h, w = params["shape"][:2]
            nh, nw = _resized_shape(h, w, self.max_side)
            return {"scale_x": nw / w, "scale_y": nh / h}

        def apply_to_keypoints(self, keypoints: np.ndarray, scale_x: float = 1.0, scale_y: float = 1.0,
                               **params: Any) -> np.ndarray:
            out = keypoints.copy()
            out[:, 0] *= scale_x
            out[:, 1] *= scale_y
            return out

        def get_transform_init_args_names(self) -> tuple[str, ...]:
            return ("max_side", "interpolation_down", "interpolation_up")

    IsotropicResize.__module__ = __name__  # pickled by name (DataLoader workers), found by __getattr__
    IsotropicResize.__qualname__ = "IsotropicResize"
    return IsotropicResize


def __getattr__(name: str) -> Any:
    if name == "IsotropicResize":
        return _isotropic_resize_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resize_and_pad(size: int) -> list[A.BasicTransform]:
    A, IsotropicResize = _albumentations(), _isotropic_resize_class()
    return [
        IsotropicResize(size, cv2.INTER_AREA, cv2.INTER_CUBIC),
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0),
    ]


def train_transforms(
    size: int,
    *,
    jpeg: bool = True,
    noise: bool = True,
    blur: bool = True,
    hflip: bool = True,
    color: bool = True,
    gray: bool = True,
    geometric: bool = True,
    seed: int | None = None,
    paired: bool = False,
    keypoints: bool = False,
) -> A.Compose:
    """DFDC 1st-place training augmentations; uint8 RGB (H, W, 3) in, (size, size, 3) out.

    Each switch drops one piece: ``jpeg`` ImageCompression, ``noise`` GaussNoise, ``blur``
    GaussianBlur, ``hflip`` HorizontalFlip, ``color`` the brightness/PCA/HSV OneOf, ``gray``
    ToGray, ``geometric`` the Affine (ex ShiftScaleRotate). Resize and pad are always there.

    ``seed`` fixes the Compose's random state: two pipelines built with the same seed give the
    same sequence of outputs. (:class:`dfdc.data.frames.ShardDataset` reseeds it per DataLoader
    worker, so that workers do not repeat each other.)

    ``paired`` adds an ``image2`` target augmented exactly like ``image`` (aligned mixup);
    ``keypoints`` takes ``keypoints`` (xy, e.g. the 5 landmarks), moved by every geometric step and
    never dropped, and a ``mask`` (e.g. a difference mask) follows the geometry too.
    """
    size = _check_size(size)
    A, IsotropicResize = _albumentations(), _isotropic_resize_class()
    t: list[A.BasicTransform | A.BaseCompose] = []
    if jpeg:
        t.append(A.ImageCompression(compression_type="jpeg", quality_range=(60, 100), p=0.5))
    if noise:
        t.append(A.GaussNoise(std_range=_NOISE_STD_RANGE, p=0.1))
    if blur:
        t.append(A.GaussianBlur(blur_limit=(3, 3), p=0.05))
    if hflip:
        t.append(A.HorizontalFlip(p=0.5))
    t.append(
        A.OneOf(
            [
                IsotropicResize(size, cv2.INTER_AREA, cv2.INTER_CUBIC),
                IsotropicResize(size, cv2.INTER_AREA, cv2.INTER_LINEAR),
                IsotropicResize(size, cv2.INTER_LINEAR, cv2.INTER_LINEAR),
            ],
            p=1.0,
        )
    )
    t.append(A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0))
    if color:
        t.append(A.OneOf([A.RandomBrightnessContrast(), A.FancyPCA(), A.HueSaturationValue()], p=0.7))
    if gray:
        t.append(A.ToGray(p=0.2))
    if geometric:
        t.append(
            A.Affine(
                translate_percent=(-0.1, 0.1),
                scale=(0.8, 1.2),
                rotate=(-10, 10),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.5,
            )
        )
    kp = A.KeypointParams(format="xy", remove_invisible=False) if keypoints else None
    return A.Compose(t, seed=seed, additional_targets={"image2": "image"} if paired else None, keypoint_params=kp)


def val_transforms(size: int) -> A.Compose:
    """Deterministic evaluation transform: isotropic resize (AREA down, CUBIC up) and zero padding."""
    return _albumentations().Compose(_resize_and_pad(_check_size(size)))
