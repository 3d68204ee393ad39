"""Cross-fitting: every video is scored with values fitted on the other videos only.

Splits keep whole groups together (a fake with its original) and never look at
the labels, so changing one video's label cannot move that video to another
split or change the values it is scored with.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SPLITS, MAX_SPLITS = 2, 10


def group_splits(groups: Sequence[str], n_splits: int, seed: int = 0) -> list[np.ndarray]:
    """Index arrays of ``n_splits`` disjoint splits covering every item, whole groups each.

    Groups are shuffled with ``seed`` and dealt out in turn, so splits differ in size
    by at most one group.
    """
    if not MIN_SPLITS <= n_splits <= MAX_SPLITS:
        raise ValueError(f"n_splits must be in {MIN_SPLITS}..{MAX_SPLITS}, got {n_splits}")
    groups = np.asarray([str(g) for g in groups])
    names = np.unique(groups)
    if names.size < n_splits:
        raise ValueError(f"cannot cross-fit {names.size} groups of videos over {n_splits} splits")
    order = np.random.default_rng(seed).permutation(names.size)
    split_of = dict(zip(names[order], np.arange(names.size) % n_splits))
    which = np.array([split_of[g] for g in groups])
    return [np.flatnonzero(which == k) for k in range(n_splits)]


def video_groups(videos: Sequence[str], originals: Sequence | None = None) -> list[str]:
    """Group key per video: its original when it has one, else the video itself."""
    if originals is None:
        return [str(v) for v in videos]
    out = []
    for v, o in zip(videos, originals):
        out.append(str(o) if isinstance(o, str) and o else str(v))
    return out
