"""How an ensemble turns its models' scores into one: the single rule `dfdc predict` and `evaluate` share.

A model that could not score an input (no face for it, a face track too short for a clip model's window)
is left out, and the others' weights are renormalised among themselves; an input no model scored gets
0.5 from the caller. A calibrated ensemble then applies its temperature.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EPS = 1e-6


def logit(p: ArrayLike) -> np.ndarray:
    """log(p / (1 - p)) on probabilities bounded to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: ArrayLike, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / temperature)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return 1 / (1 + np.exp(-logit(p) / temperature))


def combine(probs: ArrayLike, weights: ArrayLike, temperature: float | None = None) -> np.ndarray:
    """Ensemble scores of ``probs`` (inputs, models), NaN where a model did not score an input: the weighted
    mean over the models that did (``weights`` renormalised among them), then ``temperature``; NaN where no
    model with a positive weight scored the input."""
    p = np.atleast_2d(np.asarray(probs, dtype=float))
    w = np.asarray(weights, dtype=float).ravel()
    if p.shape[1] != w.size:
        raise ValueError(f"{w.size} weights for {p.shape[1]} models")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    scored = ~np.isnan(p)
    mass = scored @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(scored, p, 0.0) @ w / mass
    out[mass <= 0] = np.nan
    if temperature is not None:
        out = np.where(np.isnan(out), np.nan, apply_temperature(np.nan_to_num(out, nan=0.5), temperature))
    return out
