"""Leak-free fold assignment: a fake always shares its original's fold."""
from __future__ import annotations

import numpy as np
import pandas as pd


class FoldLeak(AssertionError):
    """An original and one of its fakes landed in different folds."""


def _groups(index: pd.DataFrame, by: str) -> pd.Series:
    """Group label per video: DFDC part or original, merged so no original spans two groups."""
    source = index["original"].where(index["label"] == 1, index["video"]).fillna(index["video"])
    use_part = by == "part" or (by == "auto" and index["part"].notna().any())
    base = index["part"].fillna(source) if use_part else source
    parent = {g: g for g in base.unique().tolist()}

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    group_of_video = dict(zip(index["video"], base))
    for g, s in zip(base, source):  # a fake's group joins its original's group
        other = group_of_video.get(s)
        if other is not None:
            a, b = find(g), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return base.map(find)


def assign_folds(index: pd.DataFrame, k: int = 4, by: str = "auto", seed: int = 0) -> pd.DataFrame:
    """One row per video: video, original, group, fold in [0, k). Groups are balanced by video count."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    groups = _groups(index, by)
    sizes = groups.value_counts()
    rng = np.random.default_rng(seed)
    order = sorted(sizes.index, key=lambda g: (-sizes[g], rng.random()))
    load = np.zeros(k, int)
    fold_of: dict[str, int] = {}
    for g in order:
        f = int(np.argmin(load + rng.random(k) * 1e-3))
        fold_of[g] = f
        load[f] += sizes[g]
    out = pd.DataFrame({
        "video": index["video"].values,
        "original": index["original"].values,
        "label": index["label"].values,
        "group": groups.values,
        "fold": groups.map(fold_of).astype("int16").values,
    })
    check_no_leak(out)
    return out


def check_no_leak(folds: pd.DataFrame) -> None:
    """Raise :class:`FoldLeak` if a fake's fold differs from its original's."""
    fold_of = dict(zip(folds["video"], folds["fold"]))
    fakes = folds[folds["original"].notna()]
    for video, original, fold in zip(fakes["video"], fakes["original"], fakes["fold"]):
        if original in fold_of and fold_of[original] != fold:
            raise FoldLeak(f"{video} is in fold {fold} but its original {original} is in fold {fold_of[original]}")


def with_methods(folds: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """``folds`` with each fake's manipulation ``method`` from the index (None for reals and unknown)."""
    methods = index.set_index("video")["method"] if "method" in index.columns else pd.Series(dtype=object)
    return folds.assign(method=folds["video"].map(methods).where(folds["label"] == 1).astype(object))


def unseen_videos(folds: pd.DataFrame, leave_out: str | None) -> set[str]:
    """The fakes of manipulation ``leave_out`` (None: none): kept out of training and model selection.

    They stay in their folds, so the holdout scores them. Raises ValueError when no fake of
    ``folds`` (its ``method`` column, :func:`with_methods`) has that method.
    """
    if leave_out is None:
        return set()
    methods = folds["method"] if "method" in folds.columns else pd.Series(index=folds.index, dtype=object)
    fakes = folds["label"] == 1
    known = sorted(methods[fakes].dropna().unique().tolist())
    if leave_out not in known:
        raise ValueError(f"no fake has method {leave_out!r}; the folds' methods are {known or 'none'}")
    return set(folds.loc[fakes & (methods == leave_out), "video"])
