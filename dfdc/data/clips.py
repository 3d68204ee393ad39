"""Dataset over clip shards: ``clip_len`` crops of one face track per item (clip models).

A clip table has one row per clip: ``key``, ``video``, ``label``, ``frame``
(its first frame), ``track``, ``shard`` and ``frames`` (its length); frame
``t`` of clip ``key`` is stored as a PNG, like a crop, under ``f"{key}#{t}"``
in that one shard (:meth:`dfdc.store.ShardWriter.add_group`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from dfdc.data.frames import ShardDataset, Transform, rgb
from dfdc.store import ShardReader, decode_png


def frame_key(key: str, t: int) -> str:
    """Storage key of frame ``t`` of clip ``key``."""
    return f"{key}#{t}"


class ClipDataset(ShardDataset):
    """Row ``i`` of a clip table -> ``{"x": uint8 (T, H, W, 3), "y": label, "idx": i}``.

    Every frame of a clip gets the same augmentation: ``transform`` is called once
    with ``images=`` (albumentations' multi-image target, (T, H, W, 3)).
    """

    REQUIRED_COLUMNS = ("shard", "key", "label", "frames")

    def __init__(self, table: pd.DataFrame, directory: str | Path, transform: Transform | None) -> None:
        super().__init__(table, directory, transform)
        self.lengths = table["frames"].to_numpy(dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        frames = np.stack([self.read(self.shards[i], frame_key(self.keys[i], t)) for t in range(self.lengths[i])])
        if self.transform is not None:
            self._reseed_in_worker()
            frames = np.asarray(self.transform(images=frames)["images"])
        return {"x": np.ascontiguousarray(frames), "y": float(self.labels[i]), "idx": i}


def read_clips(table: pd.DataFrame, directory: str | Path, chunk: int = 64) -> Iterator[list[np.ndarray]]:
    """The clips of ``table`` (shard, key, frames) as (T, H, W, 3) arrays in order, ``chunk`` at a time."""
    reader = ShardReader(directory)
    try:
        rows = list(zip(table["shard"].astype(str), table["key"].astype(str), table["frames"].astype(int)))
        for start in range(0, len(rows), chunk):
            yield [np.stack([rgb(decode_png(reader.get(s, frame_key(k, t)))) for t in range(n)])
                   for s, k, n in rows[start:start + chunk]]
    finally:
        reader.close()
