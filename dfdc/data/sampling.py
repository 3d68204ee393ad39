"""Which rows an epoch visits: class-balanced crops, or fakes paired with their originals."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dfdc.faces.crops import crop_key

_CLASS_NAMES = {0: "real (label 0)", 1: "fake (label 1)"}


def balanced_indices(
    labels: np.ndarray,
    rng: np.random.Generator,
    per_class: int | None = None,
) -> np.ndarray:
    """Shuffled indices of one class-balanced epoch: ``per_class`` reals and ``per_class`` fakes.

    ``per_class`` defaults to the size of the larger class. A class with at least ``per_class``
    items is sampled without replacement; a smaller one is repeated whole as many times as fits
    and topped up without replacement, so every one of its items appears (at least
    ``per_class // n`` times). Raises ValueError when a class is absent or a label is not 0/1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0 (real) or 1 (fake); found {np.unique(labels[bad])[:5].tolist()}")
    by_class = {c: np.flatnonzero(labels == c) for c in (0, 1)}
    for c, idx in by_class.items():
        if len(idx) == 0:
            raise ValueError(f"cannot balance classes: no {_CLASS_NAMES[c]} items among {len(labels)} labels")
    if per_class is None:
        per_class = max(len(idx) for idx in by_class.values())
    elif isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class <= 0:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    parts = []
    for idx in by_class.values():
        whole, rest = divmod(int(per_class), len(idx))
        parts.extend([idx] * whole)
        parts.append(rng.choice(idx, size=rest, replace=False))
    return rng.permutation(np.concatenate(parts)).astype(np.int64)


def aligned_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Fake crops whose original's crop (same frame and track) is in ``table``, with ``orig_shard``/``orig_key``."""
    shard_of = dict(zip(table["key"], table["shard"]))
    fakes = table[table["label"] == 1]
    okeys = [crop_key(o, f, t) for o, f, t in zip(fakes["original"], fakes["frame"], fakes["track"])]
    pairs = fakes.assign(orig_key=okeys, orig_shard=[shard_of.get(k) for k in okeys])
    return pairs[pairs["orig_shard"].notna()].reset_index(drop=True)
