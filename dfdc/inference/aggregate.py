"""Video-level aggregation of per-frame fake probabilities."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

NO_FACE = 0.5


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


AGGREGATORS: dict[str, Callable[[ArrayLike], float]] = {
    "mean": mean_strategy,
    "confident": confident_strategy,
    "weighted": confidence_weighted,
}


def aggregate(p: ArrayLike, strategy: str, fallback: float = 0.5) -> float:
    """One video probability from frame probabilities ``p`` (NaNs ignored; ``fallback`` if none)."""
    if strategy not in AGGREGATORS:
        raise ValueError(f"unknown aggregation strategy {strategy!r}; valid names: {', '.join(sorted(AGGREGATORS))}")
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return float(fallback)
    return AGGREGATORS[strategy](a)


def aggregate_tracks(p: ArrayLike, tracks: ArrayLike, strategy: str, min_len: int = 3,
                     fallback: float = 0.5) -> float:
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
    return max(aggregate(p[tracks == t], strategy, fallback) for t in keep)


def video_scores(videos: pd.DataFrame, frames: pd.DataFrame, strategy: str, fallback: float = NO_FACE) -> pd.DataFrame:
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
            rows.append({"prob": aggregate_tracks(g["prob"], g["track"], strategy, fallback=fallback),
                         "n_frames": len(g), "reason": ""})
    return videos.reset_index(drop=True).assign(**pd.DataFrame(rows, index=range(len(rows))))
