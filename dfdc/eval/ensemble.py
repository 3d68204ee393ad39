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

from dfdc.eval.metrics import BOUNDS, check_arrays
from dfdc.inference.combine import combine

NO_SCORE = 0.5  # a video no model scored (as `dfdc predict` scores it)

ENSEMBLE = "ensemble"
METHODS = ("equal", "given")
REQUIRED = ("video", "label", "prob", "fold")


def fit_weights(y: ArrayLike, probs: ArrayLike) -> np.ndarray:
    """Simplex weights (non-negative, summing to 1) minimising the log loss of the ensemble's scores
    :func:`~dfdc.inference.combine.combine` makes of ``probs`` (one column per model; NaN where a model did
    not score a video, which the others then score alone)."""
    y = np.asarray(y, dtype=float).ravel()
    probs = np.asarray(probs, dtype=float)
    m = probs.shape[1]
    if m == 1:
        return np.ones(1)
    scored = ~np.isnan(probs)
    p = np.where(scored, np.clip(np.nan_to_num(probs, nan=0.5), *BOUNDS), 0.0)

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        mass = scored @ w
        live = mass > 0
        q = np.full(len(y), NO_SCORE)
        q[live] = p[live] @ w / mass[live]
        q = np.clip(q, *BOUNDS)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
        dq = -(y / q - (1 - y) / (1 - q)) / y.size
        grad = np.zeros(m)
        if live.any():  # dq_i/dw_j = scored_ij (p_ij - q_i) / mass_i
            grad = ((scored[live] * (p[live] - q[live, None])) / mass[live, None]).T @ dq[live]
        return float(loss), grad

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
        prob[part] = scores(view[part], w)
        split_weights.append(w)
    return prob, split_weights


def scores(probs: np.ndarray, weights: ArrayLike, temperature: float | None = None) -> np.ndarray:
    """:func:`~dfdc.inference.combine.combine`, with 0.5 where no model scored a video."""
    return np.nan_to_num(combine(probs, weights, temperature), nan=NO_SCORE)


def check_table(name: str, df: pd.DataFrame) -> None:
    """ValueError naming model ``name`` unless ``df`` is a valid prediction table."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"predictions of {name!r} lack columns {missing}")
    if df["video"].duplicated().any():
        raise ValueError(f"predictions of {name!r} repeat videos")
    check_arrays(df["label"], df["prob"])


def _join(preds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every video any model predicts: video, label, fold, prob_<model> (a model's own score, 0.5 where it
    has no row) and scored_<model> (it has a row, and no ``reason`` says it could not score the video)."""
    if not preds:
        raise ValueError("no predictions to ensemble")
    if ENSEMBLE in preds:
        raise ValueError(f"{ENSEMBLE!r} is reserved and cannot name a model")
    names = list(preds)
    for name in names:
        check_table(name, preds[name])
    out = None
    for name, df in preds.items():
        scored = df["reason"].fillna("").eq("") if "reason" in df.columns else pd.Series(True, index=df.index)
        part = pd.DataFrame({"video": df["video"], f"label_{name}": df["label"], f"fold_{name}": df["fold"],
                             f"prob_{name}": df["prob"], f"scored_{name}": scored})
        out = part if out is None else out.merge(part, on="video", how="outer")
    labels = out[[f"label_{n}" for n in names]]
    if (labels.nunique(axis=1) > 1).any():
        first, bad = names[0], labels.nunique(axis=1) > 1
        other = next(n for n in names[1:] if (out.loc[bad, f"label_{n}"] != out.loc[bad, f"label_{first}"]).any())
        raise ValueError(f"labels of {other!r} disagree with {first!r} on {int(bad.sum())} videos")
    out["label"] = labels.bfill(axis=1).iloc[:, 0].astype(int)
    out["fold"] = out[[f"fold_{n}" for n in names]].bfill(axis=1).iloc[:, 0].astype(int)
    for n in names:
        out[f"scored_{n}"] = out[f"scored_{n}"].eq(True)
        out[f"prob_{n}"] = out[f"prob_{n}"].astype(float).fillna(NO_SCORE)
    keep = ["video", "label", "fold", *(f"prob_{n}" for n in names), *(f"scored_{n}" for n in names)]
    return out[keep].sort_values("video", kind="stable").reset_index(drop=True)


def model_scores(table: pd.DataFrame, names: list[str]) -> np.ndarray:
    """(videos, models) scores of an ensemble table, NaN where a model did not score a video."""
    probs = table[[f"prob_{n}" for n in names]].to_numpy(dtype=float)
    return np.where(table[[f"scored_{n}" for n in names]].to_numpy(dtype=bool), probs, np.nan)


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
    """The models' probabilities combined by :func:`~dfdc.inference.combine.combine` over every video any model
    predicts: a model without a row for a video, or whose row gives a ``reason`` (no face, too short for its
    clip), is left out of that video's score and the others' weights renormalised; 0.5 when none scored it.

    ``method`` is "equal" or "given" (``weights``, normalised); fitted weights are
    :func:`dfdc.eval.report.evaluate`'s. Returns columns video, label, fold, prob,
    prob_<model>, scored_<model>; ``attrs`` holds ``weights``, ``method`` and ``partial``
    (videos some model did not score).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if weights is not None and method != "given":
        raise ValueError("weights are only used with method='given'")
    out = _join(preds)
    names = list(preds)
    w = np.full(len(names), 1.0 / len(names)) if method == "equal" else _given_weights(names, weights)
    probs = model_scores(out, names)
    out.insert(3, "prob", np.clip(scores(probs, w), 0.0, 1.0))
    partial = int(np.isnan(probs).any(axis=1).sum())
    out.attrs.update(method=method, partial=partial, weights=dict(zip(names, map(float, w))))
    return out
