"""Video-level aggregation of per-frame fake probabilities."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

NO_FACE = 0.5
Rule = tuple[float, float]  # (t, k): at least a fraction k of the frames above t


def _frames(p: ArrayLike) -> np.ndarray:
    """Frame probabilities as a flat float64 array without NaNs; raise if none are left."""
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    a = a[~np.isnan(a)]
    if a.size == 0:
        raise ValueError("no frame probabilities to aggregate")
    return a


def mean_strategy(p: ArrayLike) -> float:
    """Plain mean of the frame probabilities."""
    return float(np.mean(_frames(p)))


def confident_strategy(p: ArrayLike, t: float = 0.8) -> float:
    """DFDC 1st-place heuristic: trust confident frames when enough of them agree.

    With more than ``len // 2.5`` (and more than 11) frames above ``t``, the mean
    of those; else with more than 90% of frames below 0.2, the mean of those;
    else the plain mean.
    """
    pred = _frames(p)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    if fakes > sz // 2.5 and fakes > 11:
        return float(np.mean(pred[pred > t]))
    if np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return float(np.mean(pred[pred < 0.2]))
    return float(np.mean(pred))


def confidence_weighted(p: ArrayLike, power: float = 0.65) -> float:
    """Mean of sharpened probabilities weighted by each frame's distance from 0.5.

    Each frame becomes ``clip(0.5 + sign(d) |d| ** power, 0.01, 0.99)`` with
    ``d = p - 0.5`` and weighs ``|d| + 1e-4``.
    """
    pred = _frames(p)
    d = pred - 0.5
    sharp = np.clip(0.5 + np.sign(d) * np.abs(d) ** power, 0.01, 0.99)
    w = np.abs(d) + 1e-4
    return float(np.sum(sharp * w) / np.sum(w))


def min_frames(k: float | np.ndarray, n: int | np.ndarray) -> np.ndarray | int:
    """Frames a rule with fraction ``k`` needs among ``n``: ceil(k n), at least 1."""
    return np.maximum(1, np.ceil(np.asarray(k) * np.asarray(n) - 1e-9).astype(int))


def threshold_strategy(p: ArrayLike, rules: Sequence[Rule] = ()) -> float:
    """The 15th place's post-processing: for each (t, k) in turn, if at least a fraction k of the frames
    (and at least one) score above t, the mean of those frames; else the plain mean.

    The rules (falling t, rising k) are fitted per model on the holdout
    (:func:`dfdc.eval.thresholds.fit_thresholds`); k is a fraction, not a count, so
    values fitted on the holdout's crops hold for `dfdc predict`'s frame count too.
    """
    pred = _frames(p)
    for t, k in rules:
        above = pred[pred > t]
        if above.size and above.size >= min_frames(k, pred.size):
            return float(np.mean(above))
    return float(np.mean(pred))


AGGREGATORS: dict[str, Callable[..., float]] = {
    "mean": mean_strategy,
    "confident": confident_strategy,
    "weighted": confidence_weighted,
    "thresholds": threshold_strategy,
}


def check_rules(rules: Sequence[Sequence[float]], source: str = "rules") -> tuple[Rule, ...]:
    """Rules as a tuple of (t, k) floats with t in [0, 1) and k in (0, 1]; ValueError naming ``source``."""
    out = []
    for r in rules:
        if len(r) != 2:
            raise ValueError(f"{source}: each rule is a pair [t, k], got {list(r)!r}")
        t, k = float(r[0]), float(r[1])
        if not (0 <= t < 1 and 0 < k <= 1 and math.isfinite(t) and math.isfinite(k)):
            raise ValueError(f"{source}: rule [t, k] needs 0 <= t < 1 and 0 < k <= 1, got [{t}, {k}]")
        out.append((t, k))
    return tuple(out)


def aggregate(p: ArrayLike, strategy: str, fallback: float = 0.5, rules: Sequence[Rule] = ()) -> float:
    """One video probability from frame probabilities ``p`` (NaNs ignored; ``fallback`` if none).

    ``rules`` are the fitted (t, k) pairs of the "thresholds" strategy.
    """
    if strategy not in AGGREGATORS:
        raise ValueError(f"unknown aggregation strategy {strategy!r}; valid names: {', '.join(sorted(AGGREGATORS))}")
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return float(fallback)
    if strategy == "thresholds":
        return threshold_strategy(a, rules)
    return AGGREGATORS[strategy](a)


def aggregate_tracks(p: ArrayLike, tracks: ArrayLike, strategy: str, min_len: int = 3,
                     fallback: float = 0.5, rules: Sequence[Rule] = ()) -> float:
    """Aggregate each face track with ``strategy``, then take the most fake track.

    A DFDC fake usually swaps one person, so a two-person video is as fake as its
    faker track. Tracks shorter than ``min_len`` frames are ignored unless no
    track is that long.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    tracks = np.asarray(tracks).reshape(-1)
    if p.size == 0:
        return float(fallback)
    ids, counts = np.unique(tracks, return_counts=True)
    keep = ids[counts >= min(min_len, counts.max())]
    return max(aggregate(p[tracks == t], strategy, fallback, rules) for t in keep)


def for_input(kind: str, strategy: str) -> tuple[str, int]:
    """(strategy, shortest track kept) for a model eating ``kind`` ("frame" or "clip").

    Frame models use ``strategy`` on tracks of at least 3 frames. Clip models score a few
    windows per track, where the frame rules do not hold (``confident`` needs more than 11
    frames above 0.8; the "thresholds" rules were fitted on frames): each track is the
    mean of its windows, every track counts, and the most fake track decides.
    """
    return ("mean", 1) if kind == "clip" else (strategy, 3)


def video_scores(videos: pd.DataFrame, frames: pd.DataFrame, strategy: str, fallback: float = NO_FACE,
                 rules: Sequence[Rule] = (), min_len: int = 3) -> pd.DataFrame:
    """One row per video of ``videos``: prob from ``frames`` (video, track, prob), n_frames, reason.

    Each face track is aggregated with ``strategy`` and the most fake track
    decides. A video with no scored frame gets ``fallback`` and the reason "no face".
    """
    groups = dict(tuple(frames.groupby("video"))) if len(frames) else {}
    rows = []
    for v in videos.itertuples():
        g = groups.get(v.video)
        if g is None:
            rows.append({"prob": float(fallback), "n_frames": 0, "reason": "no face"})
        else:
            rows.append({"prob": aggregate_tracks(g["prob"], g["track"], strategy, min_len, fallback, rules),
                         "n_frames": len(g), "reason": ""})
    return videos.reset_index(drop=True).assign(**pd.DataFrame(rows, index=range(len(rows))))
