"""Crop geometry: margin around a face box, clipped to the frame."""
from __future__ import annotations

import numpy as np


def crop_box(box: np.ndarray, width: int, height: int, margin: float = 0.3) -> tuple[int, int, int, int]:
    """Integer crop (x1, y1, x2, y2): ``margin`` of the box size added on each side, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cx1 = int(np.floor(max(0.0, x1 - margin * w)))
    cy1 = int(np.floor(max(0.0, y1 - margin * h)))
    cx2 = int(np.ceil(min(float(width), x2 + margin * w)))
    cy2 = int(np.ceil(min(float(height), y2 + margin * h)))
    return cx1, cy1, max(cx2, cx1 + 1), max(cy2, cy1 + 1)


def cut(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of ``frame`` inside an integer crop box."""
    x1, y1, x2, y2 = box
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def crop_key(video: str, frame: int, track: int) -> str:
    """Key of one face crop; a fake's crop and its original's share (frame, track)."""
    return f"{video}|{frame:06d}|{track}"
