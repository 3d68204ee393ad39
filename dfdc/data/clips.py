"""Dataset over clip shards: ``frames`` crops of one face track per item (clip models).

A clip table has one row per clip: ``key``, ``video``, ``label``, ``frame``
(its first frame), ``track``, ``shard``, ``frames`` (its length) and ``codec``.
An ``mp4`` clip is one stored item, its encoded bytes, under ``key``; a ``png``
clip (the default when the table has no ``codec`` column) stores frame ``t``
under ``f"{key}#{t}"``, all in one shard (:meth:`dfdc.store.ShardWriter.add_group`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from dfdc.data.frames import ShardDataset, Transform, rgb
from dfdc.store import ShardReader, decode_png

CODECS = ("mp4", "png")


def frame_key(key: str, t: int) -> str:
    """Storage key of frame ``t`` of a PNG clip ``key``."""
    return f"{key}#{t}"


def load_clip(get: Callable[[str, str], np.ndarray], shard: str, key: str, frames: int, codec: str) -> np.ndarray:
    """One stored clip as uint8 (T, H, W, 3); ``get(shard, key)`` reads a stored item."""
    if codec == "mp4":
        from dfdc.data.codec import decode_clip_mp4

        clip = decode_clip_mp4(get(shard, key).tobytes())
        if len(clip) != frames:
            raise ValueError(f"clip {key} in {shard}: {len(clip)} frames decoded, the table says {frames}")
        return clip
    if codec == "png":
        return np.stack([rgb(decode_png(get(shard, frame_key(key, t)))) for t in range(frames)])
    raise ValueError(f"clip {key}: unknown codec {codec!r} (known: {', '.join(CODECS)})")


def _codecs(table: pd.DataFrame) -> np.ndarray:
    if "codec" not in table.columns:
        return np.full(len(table), "png", dtype=object)
    return table["codec"].astype(str).to_numpy()


class ClipDataset(ShardDataset):
    """Row ``i`` of a clip table -> ``{"x": uint8 (T, H, W, 3), "y": label, "idx": i}``.

    Every frame of a clip gets the same augmentation: ``transform`` is called once
    with ``images=`` (albumentations' multi-image target, (T, H, W, 3)). With
    ``codec_p`` > 0, that share of the clips is first re-encoded with random
    settings (NTech, :func:`dfdc.data.codec.reencode_clip`), each draw seeded by
    the epoch's seed and the row, so a resumed run repeats it.
    """

    REQUIRED_COLUMNS = ("shard", "key", "label", "frames")

    def __init__(self, table: pd.DataFrame, directory: str | Path, transform: Transform | None,
                 codec_p: float = 0.0) -> None:
        super().__init__(table, directory, transform)
        self.lengths = table["frames"].to_numpy(dtype=np.int64)
        self.codecs = _codecs(table)
        self.codec_p = float(codec_p)
        self._epoch_seed = 0

    def set_random_seed(self, seed: int) -> None:
        """Seed the coming epoch's augmentation and codec draws."""
        self._epoch_seed = int(seed)
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)

    def _get(self, shard: str, key: str) -> np.ndarray:
        pid = os.getpid()
        reader = self._readers.get(pid)
        if reader is None:
            reader = self._readers[pid] = ShardReader(self.dir)
        return reader.get(shard, key)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        frames = load_clip(self._get, self.shards[i], self.keys[i], int(self.lengths[i]), self.codecs[i])
        if self.codec_p > 0:
            rng = np.random.default_rng([self._epoch_seed, i])
            if rng.random() < self.codec_p:
                from dfdc.data.codec import reencode_clip

                frames = reencode_clip(frames, rng)
        if self.transform is not None:
            self._reseed_in_worker()
            frames = np.asarray(self.transform(images=frames)["images"])
        return {"x": np.ascontiguousarray(frames), "y": float(self.labels[i]), "idx": i}


def read_clips(table: pd.DataFrame, directory: str | Path, chunk: int = 64) -> Iterator[list[np.ndarray]]:
    """The clips of ``table`` (shard, key, frames, codec) as (T, H, W, 3) arrays in order, ``chunk`` at a time."""
    reader = ShardReader(directory)
    try:
        rows = list(zip(table["shard"].astype(str), table["key"].astype(str), table["frames"].astype(int),
                        _codecs(table)))
        for start in range(0, len(rows), chunk):
            yield [load_clip(reader.get, s, k, n, c) for s, k, n, c in rows[start:start + chunk]]
    finally:
        reader.close()
