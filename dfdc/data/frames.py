"""Datasets over the crop shards: one face crop per item (frame models)."""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Dataset, get_worker_info

from dfdc.data.faceparts import valid_landmarks
from dfdc.data.sbi import pair_target, self_blend
from dfdc.faces.landmarks import POINTS, table_dense, valid_dense
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

    def read(self, shard: str, key: str, grey: bool = False) -> np.ndarray:
        """One stored image: RGB uint8, or as stored (a grey mask) with ``grey``."""
        pid = os.getpid()
        reader = self._readers.get(pid)
        if reader is None:
            reader = self._readers[pid] = ShardReader(self.dir)
        image = decode_png(reader.get(shard, key))
        return image if grey else rgb(image)

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


LANDMARKS = [f"l{a}{i}" for i in range(5) for a in ("x", "y")]  # crops-table columns, crop pixel coordinates


def table_landmarks(table: pd.DataFrame) -> np.ndarray | None:
    """The ``(N, 5, 2)`` landmarks of a crops table (NaN where a crop has none), or None without the columns."""
    if not set(LANDMARKS) <= set(table.columns):
        return None
    return table[LANDMARKS].to_numpy(dtype=np.float64).reshape(-1, 5, 2)


class FrameDataset(ShardDataset):
    """Row ``i`` of a crops table -> ``{"x": uint8 (H, W, 3), "y": label, "idx": i}``.

    ``transform`` is albumentations-style (``transform(image=...) -> {"image": ...}``)
    and must give every crop the same size (resize and pad) for batching. With
    ``aligned=True`` the table also needs ``orig_shard`` and ``orig_key`` (see
    :func:`dfdc.data.sampling.aligned_pairs`); the item then carries ``aligned``, the
    original's crop at the same place, augmented exactly like ``x`` (the transform
    must accept ``image2``).

    ``cutout`` (:class:`dfdc.data.faceparts.Cutout`) blacks out face parts after the
    transform, at the landmarks the transform moved (it must take ``keypoints`` and
    ``mask``); a fake's SSIM difference mask is read from the shard its row's ``mask``
    column names ('' when it has none). Rows whose ``self_blend`` column is true are real crops turned
    into self-blended pseudo-fakes (:func:`dfdc.data.sbi.self_blend`) before the
    transform; their label must be 1. In such a table every real row is a pseudo-fake's twin and trains as
    SBI's target (:func:`dfdc.data.sbi.pair_target`, drawn from the epoch and the crop's key, so both rows draw
    it alike). With the 68 dense landmarks in the table (the ``dx0`` ... ``dy67`` columns of the `landmarks`
    stage; NaN for a crop whose fit failed), the half-face blackout and the self-blend take the face region
    from them, and they follow the transform as keypoints too. Draws of both are seeded by the epoch's seed
    (:meth:`set_random_seed`) and the row, so a resumed run repeats them.
    """

    def __init__(self, table: pd.DataFrame, directory: str | Path, transform: Transform | None,
                 aligned: bool = False, cutout: Any = None, margin: float = 0.3) -> None:
        if aligned:
            self.REQUIRED_COLUMNS = (*self.REQUIRED_COLUMNS, "orig_shard", "orig_key")
        super().__init__(table, directory, transform)
        self.aligned = aligned
        if aligned:
            self.orig_shards = table["orig_shard"].astype(str).to_numpy()
            self.orig_keys = table["orig_key"].astype(str).to_numpy()
        self.cutout = cutout if cutout is not None and cutout.active else None
        self.blend = table["self_blend"].to_numpy(dtype=bool) if "self_blend" in table.columns else None
        if self.blend is not None and (self.labels[self.blend] != 1).any():
            raise ValueError("self-blended rows are pseudo-fakes: their label must be 1")
        self.landmarks = table_landmarks(table) if (self.cutout is not None or self.blend is not None) else None
        wants_dense = self.blend is not None or (self.cutout is not None and self.cutout.half_face > 0)
        self.dense = table_dense(table) if wants_dense else None
        if self.cutout is not None and self.cutout.needs_landmarks and self.landmarks is None:
            raise ValueError(f"cutout of face parts needs the landmark columns {LANDMARKS[0]}..{LANDMARKS[-1]}")
        if self.cutout is not None and self.cutout.diff > 0 and "mask" not in table.columns:
            raise ValueError("the diff-guided cutout needs the SSIM diff masks (the crops table's mask column)")
        self.masks = table["mask"].fillna("").astype(str).to_numpy() if "mask" in table.columns else None
        self.margin = float(margin)
        self._epoch_seed = 0

    def set_random_seed(self, seed: int) -> None:
        """Seed the coming epoch's augmentation, cutout and self-blend draws."""
        self._epoch_seed = int(seed)
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)

    def _diff(self, i: int) -> np.ndarray | None:
        shard = "" if self.masks is None else self.masks[i]
        return self.read(shard, self.keys[i], grey=True) if shard else None

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        image = self.read(self.shards[i], self.keys[i])
        item: dict[str, Any] = {"y": float(self.labels[i]), "idx": i}
        rng = np.random.default_rng([self._epoch_seed, i]) if (self.cutout or self.blend is not None) else None
        landmarks = None if self.landmarks is None else self.landmarks[i]
        dense = None if self.dense is None else self.dense[i]
        if self.blend is not None and (self.blend[i] or self.labels[i] == 0):
            # a real crop and its pseudo-fake twin share SBI's target draw (seeded by the crop, not the row)
            pair = pair_target(image, np.random.default_rng([self._epoch_seed, zlib.crc32(self.keys[i].encode())]))
            if self.blend[i]:
                image, _ = self_blend(image, landmarks, rng, self.margin, dense=dense, pair=pair)
            else:
                image = pair[0]
        targets: dict[str, Any] = {"image": image}
        if self.aligned:
            targets["image2"] = self.read(self.orig_shards[i], self.orig_keys[i])
        diff = None
        if self.cutout is not None:
            diff = self._diff(i) if self.cutout.diff > 0 and self.labels[i] == 1 else None
            has_lm, has_dense = valid_landmarks(landmarks), valid_dense(dense)
            points = [landmarks if has_lm else np.zeros((5, 2))]
            if self.dense is not None:
                points.append(dense if has_dense else np.zeros((POINTS, 2)))
            targets["keypoints"] = np.concatenate(points)
            targets["mask"] = diff if diff is not None and diff.shape == image.shape[:2] else \
                np.zeros(image.shape[:2], np.uint8)
        if self.transform is not None:
            self._reseed_in_worker()
            out = self.transform(**targets)
        else:
            out = targets
        image = out["image"]
        if self.cutout is not None:
            points = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
            moved = points[:5] if has_lm else None
            moved_dense = points[5:] if has_dense else None
            drop = self.cutout.drop_mask(image, moved, out["mask"] if diff is not None else None,
                                         self.labels[i] == 1, rng, dense=moved_dense)
            image = np.where(drop[..., None], 0, image).astype(image.dtype)
            if self.aligned:
                out["image2"] = np.where(drop[..., None], 0, out["image2"]).astype(image.dtype)
        if self.aligned:
            item["aligned"] = np.ascontiguousarray(out["image2"])
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
