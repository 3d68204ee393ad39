"""Grid search of the seed-002 threshold rule per model, cross-fitted on the holdout.

A rule set ``((t1, k1), (t2, k2), ...)`` with falling thresholds and rising
fractions says: if at least a fraction k1 of a face track's frames score above
t1, the track's score is the mean of those; else try (t2, k2); else the plain
mean (:func:`dfdc.inference.aggregate.threshold_strategy`). The most fake track
decides the video, as for every strategy.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dfdc.eval.crossfit import group_splits, video_groups
from dfdc.inference.aggregate import NO_FACE, Rule, min_frames

log = logging.getLogger("dfdc.eval")

T_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
K_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def candidates(levels: int, t_grid: Sequence[float] = T_GRID, k_grid: Sequence[float] = K_GRID) -> list[tuple[Rule, ...]]:
    """Every rule set of up to ``levels`` rules, thresholds falling and fractions rising; fewest rules first."""
    out: list[tuple[Rule, ...]] = [()]
    for n in range(1, levels + 1):
        for ts in itertools.combinations(sorted(t_grid, reverse=True), n):
            for ks in itertools.combinations(sorted(k_grid), n):
                out.append(tuple(zip(ts, ks)))
    return out


class TrackTable:
    """The kept face tracks of a list of videos, sorted and padded, to score many rule sets at once."""

    def __init__(self, frames: pd.DataFrame, videos: Sequence[str], min_len: int = 3) -> None:
        groups = dict(tuple(frames.groupby("video"))) if len(frames) else {}
        rows, owner = [], []
        for i, v in enumerate(videos):
            g = groups.get(v)
            if g is None:
                continue
            tracks = g["track"].to_numpy()
            ids, counts = np.unique(tracks, return_counts=True)
            for t in ids[counts >= min(min_len, counts.max())]:  # as aggregate_tracks keeps them
                rows.append(np.sort(g["prob"].to_numpy(np.float64)[tracks == t])[::-1])
                owner.append(i)
        self.n_videos = len(videos)
        self.owner = np.asarray(owner, dtype=int)
        self.length = np.array([len(r) for r in rows], dtype=int)
        width = int(self.length.max()) if rows else 1
        self.p = np.full((len(rows), width), -np.inf)
        for j, r in enumerate(rows):
            self.p[j, :len(r)] = r
        self.csum = np.cumsum(np.where(np.isfinite(self.p), self.p, 0.0), axis=1)
        self.mean = self.csum[np.arange(len(rows)), self.length - 1] / np.maximum(self.length, 1) if rows else np.zeros(0)

    def scores(self, rules: Sequence[Rule]) -> np.ndarray:
        """(n_videos,) video scores under ``rules``; a video without a track gets 0.5."""
        value = self.mean.copy()
        open_ = np.ones(len(value), bool)
        for t, k in rules:
            count = (self.p > t).sum(axis=1)
            hit = open_ & (count > 0) & (count >= min_frames(k, self.length))
            j = np.flatnonzero(hit)
            value[j] = self.csum[j, count[j] - 1] / count[j]
            open_ &= ~hit
        out = np.full(self.n_videos, -np.inf)
        np.maximum.at(out, self.owner, value)
        out[np.isneginf(out)] = NO_FACE
        return out


@dataclass
class ThresholdFit:
    """What cross-fitting found: the rules fitted on every video, per-split rules and the cross-fitted scores."""

    rules: tuple[Rule, ...]
    split_rules: list[tuple[Rule, ...]]
    split_videos: list[list[str]]
    prob: np.ndarray  # cross-fitted video scores, in the order of the videos given
    cross_fitted: bool = True
    views: np.ndarray | None = None  # (splits, videos): every video's score under each split's rules

    def columns(self, videos: Sequence[str]) -> dict[str, np.ndarray]:
        """``split`` (each video's split) and ``prob_fit{k}`` (every video under split k's rules), for the
        later cross-fitted steps (weights, temperature) to fit on the other splits' scores as split k saw them."""
        if not self.cross_fitted or self.views is None:
            return {}
        split_of = {v: k for k, vs in enumerate(self.split_videos) for v in vs}
        return {"split": np.array([split_of[str(v)] for v in videos]),
                **{f"prob_fit{k}": view for k, view in enumerate(self.views)}}

    def rules_by_video(self) -> dict[str, tuple[Rule, ...]]:
        """Each video's rules: those of the split it was scored in, fitted without it (scores its degraded
        twin without its label either)."""
        return {str(v): rules for rules, videos in zip(self.split_rules, self.split_videos) for v in videos}

    def to_dict(self) -> dict:
        """Plain types for the artifact (rules as [t, k] pairs)."""
        return {"rules": [list(r) for r in self.rules], "split_rules": [[list(r) for r in s] for s in self.split_rules],
                "split_videos": self.split_videos, "cross_fitted": self.cross_fitted}


def _log_losses(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    q = np.clip(scores, 1e-15, 1 - 1e-15)
    return -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q), axis=1)


def fit_thresholds(videos: pd.DataFrame, frames: pd.DataFrame, *, levels: int = 3, n_splits: int = 2,
                   seed: int = 0) -> ThresholdFit:
    """Grid-search rule sets of up to ``levels`` rules by log loss, cross-fitted over ``n_splits`` splits.

    ``videos`` has video, label and optionally original (a fake and its original
    share a split); ``frames`` has video, track, prob. Each split's videos are
    scored with the rule set that is best on the other splits; ``rules`` is the
    best on every video (what ships). Ties go to the simpler rule set. With fewer
    originals than splits nothing can be cross-fitted: the videos keep the plain
    mean (no rule), ``cross_fitted`` is False, and a warning says so.
    """
    if not 1 <= levels <= 4:
        raise ValueError(f"levels must be in 1..4, got {levels}")
    names = videos["video"].astype(str).tolist()
    y = videos["label"].to_numpy(dtype=float)
    table = TrackTable(frames, names)
    cands = candidates(levels)
    scores = np.stack([table.scores(r) for r in cands])  # (C, V)
    groups = video_groups(names, videos["original"] if "original" in videos else None)
    shipped = int(np.argmin(_log_losses(scores, y)))  # best on every video: what ships
    if len(set(groups)) < n_splits:
        log.warning("thresholds: %d original(s) in the holdout cannot be cross-fitted over %d splits; "
                    "the holdout is scored with the plain mean", len(set(groups)), n_splits)
        return ThresholdFit(cands[shipped], [()], [names], scores[0], cross_fitted=False)
    prob = np.empty(len(names))
    split_rules, split_videos, views = [], [], []
    for part in group_splits(groups, n_splits, seed):
        rest = np.setdiff1d(np.arange(len(names)), part)
        best = int(np.argmin(_log_losses(scores[:, rest], y[rest])))
        prob[part] = scores[best, part]
        split_rules.append(cands[best])
        split_videos.append([names[i] for i in part])
        views.append(scores[best])
    return ThresholdFit(cands[shipped], split_rules, split_videos, prob, views=np.stack(views))
