"""68 dense face landmarks from dlib's shape predictor, the way the DFDC 1st place and SBI had them.

The predictor (``shape_predictor_68_face_landmarks.dat``, iBUG 300-W order: jaw 0-16, brows
17-26, nose 27-35, eyes 36-47, mouth 48-67) ships inside the ``face-recognition-models``
package; ``dlib-bin`` runs it. Neither is imported until a predictor is built, and the model
file is found without importing its package (whose ``__init__`` needs ``pkg_resources``).

Points are xy pixels in the crop; the predictor starts from the detector's (MTCNN's) box. A
fit is accepted when the 68 points agree with MTCNN's 5 on the same face (:func:`five_point_error`
below :data:`MAX_ERROR`); profile faces, where dlib's model lays a frontal face over the
cheek, fail this and keep the 5-point geometry.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

POINTS = 68
DENSE_COLUMNS = [f"d{a}{i}" for i in range(POINTS) for a in ("x", "y")]  # landmarks table, crop pixels
OUTLINE = [*range(17), *range(26, 16, -1)]  # the jaw line, then the brows right to left: the 1st place's polygon
MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
MAX_ERROR = 0.35  # mean distance of the 68-point eyes / nose tip / mouth corners from MTCNN's 5, in eye distances


class LandmarksUnavailable(RuntimeError):
    """dlib or the 68-point model is not installed."""


def predictor_file() -> Path:
    """The 68-point model inside the installed ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / MODEL_FILE
        if path.is_file():
            return path
    raise LandmarksUnavailable(f"the 68-point landmark model ({MODEL_FILE}) is not installed: it comes with the "
                               "face-recognition-models package (requirements.txt; `make .venv/.installed`)")


class DensePredictor:
    """dlib's 68-point shape predictor: ``predictor(rgb, box) -> (68, 2)`` float32 xy."""

    def __init__(self, path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as e:
            raise LandmarksUnavailable(f"dlib is not installed ({e}): it comes with the dlib-bin package "
                                       "(requirements.txt)") from None
        self._dlib = dlib
        self.path = Path(path) if path is not None else predictor_file()
        self._model = dlib.shape_predictor(str(self.path))

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 points of the face in ``box`` (x1, y1, x2, y2 in ``image``'s pixels) of an RGB uint8 image."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the predictor takes an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._model(np.ascontiguousarray(image), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def five_point_error(dense: np.ndarray, five: np.ndarray) -> float:
    """Mean distance of the 68 points' eye centres, nose tip and mouth corners from MTCNN's 5 points (same
    order: the image's left eye first), in units of MTCNN's eye distance."""
    d = np.asarray(dense, np.float64)
    same = np.stack([d[36:42].mean(0), d[42:48].mean(0), d[30], d[48], d[54]])
    five = np.asarray(five, np.float64)
    iod = max(float(np.hypot(*(five[1] - five[0]))), 1.0)
    return float(np.linalg.norm(same - five, axis=1).mean() / iod)


def face_boxes_in_crops(crops: pd.DataFrame, faces: pd.DataFrame) -> np.ndarray:
    """``(N, 4)`` detector box of each crop row in its crop's pixels (NaN where ``faces`` lacks it): a fake's
    crop is cut at its original's box, found by (original, frame, track)."""
    boxes = faces[["video", "frame", "track", "x1", "y1", "x2", "y2"]].rename(
        columns={"video": "original", "x1": "fx1", "y1": "fy1", "x2": "fx2", "y2": "fy2"})
    boxes = boxes.drop_duplicates(["original", "frame", "track"])
    m = crops[["original", "frame", "track", "x1", "y1"]].merge(boxes, on=["original", "frame", "track"], how="left")
    origin = m[["x1", "y1", "x1", "y1"]].to_numpy(np.float64)
    return m[["fx1", "fy1", "fx2", "fy2"]].to_numpy(np.float64) - origin


def attach_dense(table: pd.DataFrame, dense: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a crops table) with the dense columns of ``dense`` (the landmarks table) by key; NaN for a
    crop whose fit failed or that the landmarks table does not list."""
    ok = dense.loc[dense["dense_ok"].astype(bool), ["key", *DENSE_COLUMNS]]
    return table.drop(columns=[c for c in DENSE_COLUMNS if c in table.columns]).merge(ok, on="key", how="left")


def table_dense(table: pd.DataFrame) -> np.ndarray | None:
    """``(N, 68, 2)`` dense landmarks of a table (NaN rows where a crop has none), or None without the columns."""
    if not set(DENSE_COLUMNS) <= set(table.columns):
        return None
    return table[DENSE_COLUMNS].to_numpy(np.float64).reshape(-1, POINTS, 2)


def valid_dense(points: np.ndarray | None) -> bool:
    """Whether ``points`` is a finite ``(68, 2)`` array."""
    return points is not None and np.shape(points) == (POINTS, 2) and bool(np.isfinite(points).all())
