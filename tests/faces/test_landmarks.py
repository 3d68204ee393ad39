"""68 dense landmarks: the predictor, its check against the 5 points, boxes in crops, joining the table."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from dfdc.faces import landmarks as lmk
from dfdc.faces.landmarks import (DENSE_COLUMNS, OUTLINE, DensePredictor, LandmarksUnavailable, attach_dense,
                                  face_boxes_in_crops, five_point_error, predictor_file, table_dense, valid_dense)
from face68 import LM5, face68


def test_the_model_ships_in_the_installed_package_and_runs():
    path = predictor_file()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90e6
    pred = DensePredictor()
    img = np.full((140, 112, 3), 128, np.uint8)
    pts = pred(img, np.array([20.0, 30.0, 92.0, 118.0]))
    assert pts.shape == (68, 2) and pts.dtype == np.float32 and valid_dense(pts)
    assert 0 < pts[:, 0].mean() < 112 and 0 < pts[:, 1].mean() < 140  # the mean face laid in the box
    with pytest.raises(ValueError, match="RGB uint8"):
        pred(img[..., 0], np.array([20, 30, 92, 118]))


def test_missing_model_or_dlib_is_one_sentence(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(lmk.importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(LandmarksUnavailable, match="face-recognition-models package"):
        predictor_file()
    monkeypatch.setitem(__import__("sys").modules, "dlib", None)
    with pytest.raises(LandmarksUnavailable, match="dlib-bin"):
        DensePredictor("x.dat")


def test_five_point_error_accepts_a_fit_and_refuses_a_profile():
    assert five_point_error(face68(), LM5) < 0.05
    squashed = face68()
    squashed[:, 0] = 20 + (squashed[:, 0] - 20) * 0.3  # a frontal face laid over one cheek
    assert five_point_error(squashed, LM5) > lmk.MAX_ERROR
    assert OUTLINE[:17] == list(range(17)) and OUTLINE[17:] == list(range(26, 16, -1))


def test_boxes_in_crops_and_the_dense_columns():
    faces = pd.DataFrame({"video": ["r.mp4"], "frame": [10], "track": [0], "x1": [110.0], "y1": [60.0],
                          "x2": [170.0], "y2": [140.0]})
    crops = pd.DataFrame({"key": ["r|10|0", "f|10|0", "f|20|0"], "original": ["r.mp4"] * 3, "frame": [10, 10, 20],
                          "track": [0, 0, 0], "x1": [92, 92, 92], "y1": [36, 36, 36]})
    boxes = face_boxes_in_crops(crops, faces)
    assert boxes[0].tolist() == boxes[1].tolist() == [18.0, 24.0, 78.0, 104.0]  # the fake at its original's box
    assert np.isnan(boxes[2]).all()
    dense = pd.DataFrame({"key": ["r|10|0", "f|10|0"], "dense_ok": [True, False],
                          **{c: [v, v] for c, v in zip(DENSE_COLUMNS, face68().reshape(-1))}})
    joined = attach_dense(crops, dense)
    pts = table_dense(joined)
    assert joined["key"].tolist() == crops["key"].tolist() and pts.shape == (3, 68, 2)
    assert np.allclose(pts[0], face68()) and np.isnan(pts[1]).all() and np.isnan(pts[2]).all()  # failed, absent
    assert table_dense(crops) is None and not valid_dense(pts[1]) and not valid_dense(None)
