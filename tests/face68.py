"""A synthetic 68-point face (iBUG 300-W order) in a 140 x 112 crop, matching the tests' 5 MTCNN points."""
from __future__ import annotations

import numpy as np

H, W = 140, 112
LM5 = np.array([[38.0, 60.0], [74.0, 60.0], [56.0, 80.0], [41.0, 97.0], [71.0, 97.0]])


def _ring(cx: float, cy: float, rx: float, ry: float, n: int, start: float = np.pi) -> np.ndarray:
    t = start + np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], 1)


def face68(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """(68, 2) xy: jaw, brows, nose, eyes, mouth of a frontal face centred at (56 + dx, 70 + dy)."""
    t = np.linspace(np.pi, 2 * np.pi, 17)
    jaw = np.stack([56 + 38 * np.cos(t), 58 - 50 * np.sin(t)], 1)  # temples at y 58, chin at y 108
    brow_l = np.stack([np.linspace(24, 48, 5), 50 - 4 * np.sin(np.linspace(0, np.pi, 5))], 1)
    brow_r = np.stack([np.linspace(64, 88, 5), 50 - 4 * np.sin(np.linspace(0, np.pi, 5))], 1)
    ridge = np.stack([np.full(4, 56.0), np.linspace(58, 78, 4)], 1)
    nostrils = np.stack([np.linspace(48, 64, 5), np.full(5, 82.0)], 1)
    eye_l, eye_r = _ring(38, 60, 7, 3, 6), _ring(74, 60, 7, 3, 6)
    mouth_out, mouth_in = _ring(56, 97, 15, 6, 12), _ring(56, 97, 10, 3, 8)
    pts = np.concatenate([jaw, brow_l, brow_r, ridge, nostrils, eye_l, eye_r, mouth_out, mouth_in])
    assert pts.shape == (68, 2)
    return pts + [dx, dy]
