"""Temperature scaling, the expected calibration error and reliability tables.

A temperature ``T`` maps a probability to ``sigmoid(logit(p) / T)``: ``T > 1``
softens over-confident scores, ``T < 1`` sharpens timid ones, ranking is
unchanged.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from dfdc.eval.metrics import check_arrays
from dfdc.inference.combine import logit

T_RANGE = (0.05, 20.0)


def fit_temperature(y: ArrayLike, p: ArrayLike) -> float:
    """The temperature in [0.05, 20] minimising the log loss of ``p`` (1.0 without both classes)."""
    y, p = check_arrays(y, p)
    if np.unique(y).size < 2:
        return 1.0
    z = logit(p)

    def loss(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-15, 1 - 1e-15)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))

    res = minimize_scalar(loss, bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(int), n_bins - 1)  # [0, 1/n), ..., [(n-1)/n, 1]


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """ECE: sum over equal-width bins of (share of videos) x |fraction of fakes - mean prediction|."""
    y, p = check_arrays(y, p)
    if y.size == 0:
        return float("nan")
    b = _bins(p, n_bins)
    ece = 0.0
    for k in np.unique(b):
        m = b == k
        ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def reliability(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Non-empty equal-width bins: lo, hi, n, mean_predicted, fraction_positive."""
    y, p = check_arrays(y, p)
    b = _bins(p, n_bins)
    rows = [{"lo": k / n_bins, "hi": (k + 1) / n_bins, "n": int((b == k).sum()),
             "mean_predicted": float(p[b == k].mean()), "fraction_positive": float(y[b == k].mean())}
            for k in np.unique(b)]
    return pd.DataFrame(rows, columns=["lo", "hi", "n", "mean_predicted", "fraction_positive"])
