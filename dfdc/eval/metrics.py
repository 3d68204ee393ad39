"""Binary metrics users compare detectors by (DFDC log loss, AUC, AP, EER, accuracy), bootstrap intervals, breakdowns.

Label 1 is fake; probabilities are P(fake). Ranking metrics are NaN where one
class is missing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

BOUNDS = (1e-15, 1 - 1e-15)


def check_arrays(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1 ints) and probabilities (floats in [0, 1]) as flat arrays; ValueError otherwise."""
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and in [0, 1]")
    return y.astype(int), p


def log_loss(y: ArrayLike, p: ArrayLike, bounds: tuple[float, float] = BOUNDS) -> float:
    """DFDC log loss ``-mean(y log p + (1 - y) log(1 - p))`` on probabilities bounded to ``bounds``; NaN if empty."""
    y, p = check_arrays(y, p)
    if y.size == 0:
        return math.nan
    p = np.clip(p, bounds[0], bounds[1])
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) at every distinct score, highest first, from
    (0, 0) at a threshold above every score (scikit-learn's ``roc_curve`` without dropping points)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]  # the last index of each distinct score
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    return (np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)], np.r_[np.inf, ps[last]])


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Sum over the distinct scores, highest first, of the recall gained times the precision there
    (scikit-learn's ``average_precision_score``)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tps = np.cumsum(ys)[last]
    recall = tps / tps[-1]
    precision = tps / (last + 1)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(y: ArrayLike, p: ArrayLike) -> float:
    """Error rate where FPR equals FNR (1 - TPR), linearly interpolated on the ROC; NaN for one class."""
    y, p = check_arrays(y, p)
    if np.unique(y).size < 2:
        return math.nan
    fpr, tpr, _ = roc(y, p)
    gap = (1 - tpr) - fpr
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float | int]:
    """Log loss, AUC, AP, EER, accuracy at 0.5 (fake if p >= 0.5), per-class log loss and counts."""
    y, p = check_arrays(y, p)
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    both = n_real > 0 and n_fake > 0
    return {
        "log_loss": log_loss(y, p),
        "auc": weighted_auc(y, p, np.ones(y.size)) if both else math.nan,
        "ap": average_precision(y, p) if both else math.nan,
        "eer": equal_error_rate(y, p),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))) if y.size else math.nan,
        "log_loss_real": log_loss(y[y == 0], p[y == 0]),
        "log_loss_fake": log_loss(y[y == 1], p[y == 1]),
        "n": int(y.size),
        "n_real": n_real,
        "n_fake": n_fake,
    }


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """AUC with a weight per video (ties count half); NaN without weight on both classes."""
    _, inv = np.unique(p, return_inverse=True)
    wn = np.bincount(inv, weights=w * (y == 0))
    wp = np.bincount(inv, weights=w * (y == 1))
    den = wp.sum() * wn.sum()
    return float((wp * (np.cumsum(wn) - wn + 0.5 * wn)).sum() / den) if den > 0 else math.nan


def bootstrap_ci(y: ArrayLike, p: ArrayLike, groups: Sequence | None = None, *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap interval of the AUC and the log loss: ``auc_lo``, ``auc_hi``, ``log_loss_lo``, ...

    Whole ``groups`` are resampled with replacement (a fake with its original:
    their scores are not independent), each video weighted by how often its group
    was drawn; without groups each video is its own. NaN where a class is missing.
    """
    y, p = check_arrays(y, p)
    nan = {f"{m}_{e}": math.nan for m in ("auc", "log_loss") for e in ("lo", "hi")}
    if np.unique(y).size < 2 or n_boot < 1:
        return nan
    _, gidx = np.unique(np.asarray([str(g) for g in groups]) if groups is not None else np.arange(y.size),
                        return_inverse=True)
    n_groups = int(gidx.max()) + 1
    gen = np.random.default_rng(seed)
    q = np.clip(p, *BOUNDS)
    loss = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    auc, ll = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        w = np.bincount(gen.integers(0, n_groups, n_groups), minlength=n_groups)[gidx].astype(float)
        auc[b] = weighted_auc(y, p, w)
        ll[b] = float((w * loss).sum() / w.sum())
    a = (1 - level) / 2 * 100
    return {"auc_lo": float(np.nanpercentile(auc, a)), "auc_hi": float(np.nanpercentile(auc, 100 - a)),
            "log_loss_lo": float(np.percentile(ll, a)), "log_loss_hi": float(np.percentile(ll, 100 - a))}


def with_ci(y: ArrayLike, p: ArrayLike, groups: Sequence | None = None, *, n_boot: int = 1000,
            seed: int = 0) -> dict[str, float | int]:
    """:func:`binary_metrics` plus the bootstrap intervals of the AUC and the log loss."""
    return {**binary_metrics(y, p), **bootstrap_ci(y, p, groups, n_boot=n_boot, seed=seed)}


def per_method(table: pd.DataFrame, columns: Mapping[str, str], *, n_boot: int = 0,
               groups: str | None = None, seed: int = 0) -> dict[str, dict[str, dict]]:
    """Metrics of each manipulation method: its fakes against every real, per scored column.

    ``table`` has ``label``, ``method`` (empty or NaN for reals) and the columns
    of ``columns`` (name -> probability column). With ``n_boot`` > 0 each entry also
    has the bootstrap intervals (:func:`with_ci`), resampling the values of column
    ``groups`` (e.g. each video's original) whole. Returns {method: {name: metrics}}.
    """
    reals = table[table["label"] == 0]
    methods = table.loc[table["label"] == 1, "method"].fillna("").replace("", "unknown")
    out = {}
    for method in sorted(methods.unique()):
        fakes = table.loc[methods.index[methods == method]]
        part = pd.concat([reals, fakes])
        if n_boot > 0:
            keys = part[groups].tolist() if groups else None
            out[method] = {name: with_ci(part["label"], part[col], keys, n_boot=n_boot, seed=seed)
                           for name, col in columns.items()}
        else:
            out[method] = {name: binary_metrics(part["label"], part[col]) for name, col in columns.items()}
    return out


def per_group(table: pd.DataFrame, by: str, columns: Mapping[str, str]) -> dict[str, dict[str, dict]]:
    """Metrics of each value of column ``by`` (e.g. the source dataset), per scored column."""
    out = {}
    for value, part in table.groupby(table[by].fillna("unknown").astype(str), sort=True):
        out[str(value)] = {name: binary_metrics(part["label"], part[col]) for name, col in columns.items()}
    return out
