"""Datasets over the crop shards: one face crop per item (frame models)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Dataset, get_worker_info

from dfdc.store import ShardReader, decode_png

Transform = Callable[..., dict[str, Any]]


def rgb(image: np.ndarray) -> np.ndarray:
    """A grey crop as 3 channels; RGB unchanged."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


class ShardDataset(Dataset):
    """Common part of the shard datasets: a per-process :class:`ShardReader` and per-worker reseeding.

    Each process opens its own reader lazily (keyed by ``os.getpid()``), so the dataset
    can go to DataLoader workers. Inside a worker a transform with ``set_random_seed``
    (an albumentations Compose) is reseeded once from the worker's torch seed, so that
    workers do not replay each other's augmentations.
    """

    REQUIRED_COLUMNS: tuple[str, ...] = ("shard", "key", "label")

    def __init__(self, table: pd.DataFrame, directory: str | Path, transform: Transform | None) -> None:
        missing = [c for c in self.REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"table lacks column(s) {missing}")
        self.dir = Path(directory)
        self.transform = transform
        self.shards = table["shard"].astype(str).to_numpy()
        self.keys = table["key"].astype(str).to_numpy()
        self.labels = table["label"].to_numpy(dtype=np.float32)
        self._readers: dict[int, ShardReader] = {}
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}  # open npz files never travel to another process
        return state

    def read(self, shard: str, key: str) -> np.ndarray:
        """One stored image (RGB uint8)."""
        pid = os.getpid()
        reader = self._readers.get(pid)
        if reader is None:
            reader = self._readers[pid] = ShardReader(self.dir)
        return rgb(decode_png(reader.get(shard, key)))

    def _index(self, i: int) -> int:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        return i % len(self)

    def _reseed_in_worker(self) -> None:
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        self._seeded_pid = pid
        info = get_worker_info()
        if info is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(info.seed) % 2**32)


class FrameDataset(ShardDataset):
    """Row ``i`` of a crops table -> ``{"x": uint8 (H, W, 3), "y": label, "idx": i}``.

    ``transform`` is albumentations-style (``transform(image=...) -> {"image": ...}``)
    and must give every crop the same size (resize and pad) for batching. With
    ``aligned=True`` the table also needs ``orig_shard`` and ``orig_key`` (see
    :func:`dfdc.data.sampling.aligned_pairs`); the item then carries ``aligned``, the
    original's crop at the same place, augmented exactly like ``x`` (the transform
    must accept ``image2``).
    """

    def __init__(self, table: pd.DataFrame, directory: str | Path, transform: Transform | None,
                 aligned: bool = False) -> None:
        if aligned:
            self.REQUIRED_COLUMNS = (*self.REQUIRED_COLUMNS, "orig_shard", "orig_key")
        super().__init__(table, directory, transform)
        self.aligned = aligned
        if aligned:
            self.orig_shards = table["orig_shard"].astype(str).to_numpy()
            self.orig_keys = table["orig_key"].astype(str).to_numpy()

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        image = self.read(self.shards[i], self.keys[i])
        item: dict[str, Any] = {"y": float(self.labels[i]), "idx": i}
        if self.aligned:
            original = self.read(self.orig_shards[i], self.orig_keys[i])
            if self.transform is not None:
                self._reseed_in_worker()
                out = self.transform(image=image, image2=original)
                image, original = out["image"], out["image2"]
            item["aligned"] = np.ascontiguousarray(original)
        elif self.transform is not None:
            self._reseed_in_worker()
            image = self.transform(image=image)["image"]
        item["x"] = np.ascontiguousarray(image)
        return item


def read_crops(table: pd.DataFrame, directory: str | Path, chunk: int = 512) -> Iterator[list[np.ndarray]]:
    """The RGB crops of ``table`` (shard, key) in order, ``chunk`` at a time."""
    reader = ShardReader(directory)
    try:
        shards, keys = table["shard"].astype(str).tolist(), table["key"].astype(str).tolist()
        for start in range(0, len(keys), chunk):
            yield [rgb(decode_png(reader.get(s, k))) for s, k in zip(shards[start:start + chunk],
                                                                     keys[start:start + chunk])]
    finally:
        reader.close()
