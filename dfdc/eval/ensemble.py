"""Ensembles of per-model video scores: the join, equal or given weights, and simplex weights fitted
(cross-fitted by :func:`dfdc.eval.report.evaluate`, which chains them with the other fitted steps).

Prediction tables have one row per video with columns ``video``, ``label``
(0 real, 1 fake), ``prob`` (P(fake)) and ``fold``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from dfdc.eval.metrics import DEFAULT_CLIP, check_arrays

ENSEMBLE = "ensemble"
METHODS = ("equal", "given")
REQUIRED = ("video", "label", "prob", "fold")


def fit_weights(y: ArrayLike, probs: ArrayLike) -> np.ndarray:
    """Simplex weights (non-negative, summing to 1) minimising the log loss of ``probs @ w``.

    ``probs`` has one column per model.
    """
    y = np.asarray(y, dtype=float).ravel()
    probs = np.clip(np.asarray(probs, dtype=float), *DEFAULT_CLIP)
    m = probs.shape[1]
    if m == 1:
        return np.ones(1)

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(probs @ w, *DEFAULT_CLIP)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
        dq = -(y / q - (1 - y) / (1 - q)) / y.size
        return float(loss), probs.T @ dq

    res = minimize(
        loss_and_grad, np.full(m, 1.0 / m), jac=True, method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"maxiter": 200, "ftol": 1e-10},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)


def cross_fit_weights(y: np.ndarray, views: list[np.ndarray], parts: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """Cross-fitted ensemble scores: split k gets the weights fitted on the other splits of ``views[k]``.

    ``views[k]`` (videos, models) holds every video's scores as the values fitted
    without split k made them (the plain scores when nothing was fitted before), so
    a chain of fitted steps never lets a video's label reach its own score.
    Returns (scores, weights of each split).
    """
    prob = np.empty(len(y))
    split_weights = []
    for view, part in zip(views, parts):
        rest = np.setdiff1d(np.arange(len(y)), part)
        w = fit_weights(y[rest], view[rest])
        prob[part] = view[part] @ w
        split_weights.append(w)
    return prob, split_weights


def check_table(name: str, df: pd.DataFrame) -> None:
    """ValueError naming model ``name`` unless ``df`` is a valid prediction table."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"predictions of {name!r} lack columns {missing}")
    if df["video"].duplicated().any():
        raise ValueError(f"predictions of {name!r} repeat videos")
    check_arrays(df["label"], df["prob"])


def _join(preds: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    if not preds:
        raise ValueError("no predictions to ensemble")
    if ENSEMBLE in preds:
        raise ValueError(f"{ENSEMBLE!r} is reserved and cannot name a model")
    names = list(preds)
    for name in names:
        check_table(name, preds[name])
    first = names[0]
    out = preds[first][["video", "label", "fold", "prob"]].rename(columns={"prob": f"prob_{first}"})
    for name in names[1:]:
        other = preds[name][["video", "label", "prob"]].rename(
            columns={"prob": f"prob_{name}", "label": f"label_{name}"})
        out = out.merge(other, on="video", how="inner")
        bad = int((out["label"] != out[f"label_{name}"]).sum())
        if bad:
            raise ValueError(f"labels of {name!r} disagree with {first!r} on {bad} videos")
        out = out.drop(columns=f"label_{name}")
    if out.empty:
        raise ValueError("no video is predicted by every model")
    union = set().union(*(set(df["video"]) for df in preds.values()))
    out = out.sort_values("video", kind="stable").reset_index(drop=True)
    out["label"] = out["label"].astype(int)
    out["fold"] = out["fold"].astype(int)
    return out, len(union) - len(out)


def _given_weights(names: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        raise ValueError("method='given' needs weights")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights name unknown models {unknown}")
    w = []
    for name in names:
        if name not in weights:
            raise ValueError(f"no weight for model {name!r}")
        v = float(weights[name])
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"weight of model {name!r} must be finite and non-negative, got {v}")
        w.append(v)
    w = np.asarray(w)
    if w.sum() <= 0:
        raise ValueError("weights sum to zero")
    return w / w.sum()


def ensemble(
    preds: Mapping[str, pd.DataFrame],
    weights: Mapping[str, float] | None = None,
    method: str = "equal",
) -> pd.DataFrame:
    """Weighted mean of the models' probabilities over the videos every model predicts.

    ``method`` is "equal" or "given" (``weights``, normalised); fitted weights are
    :func:`dfdc.eval.report.evaluate`'s. Returns columns video, label, fold, prob,
    prob_<model>; ``attrs`` holds ``weights``, ``method`` and ``dropped`` (videos
    missing from some model).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if weights is not None and method != "given":
        raise ValueError("weights are only used with method='given'")
    joined, dropped = _join(preds)
    names = list(preds)
    cols = [f"prob_{n}" for n in names]
    probs = joined[cols].to_numpy(dtype=float)
    w = np.full(len(names), 1.0 / len(names)) if method == "equal" else _given_weights(names, weights)
    out = joined[["video", "label", "fold"]].copy()
    out["prob"] = np.clip(probs @ w, 0.0, 1.0)
    out[cols] = probs
    out.attrs.update(method=method, dropped=int(dropped), weights=dict(zip(names, map(float, w))))
    return out
