"""Torch dataset over the face-crop shards, and class-balanced epoch sampling."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from dfdc.store import ShardReader, decode_png

__all__ = ["AlignedMixupDataset", "CropDataset", "aligned_pairs", "balanced_indices"]

_CLASS_NAMES = {0: "real (label 0)", 1: "fake (label 1)"}


class CropDataset(Dataset):
    """Item ``i`` of ``table`` -> ``(image, label, i)``.

    ``image`` is a float32 tensor (3, H, W): the RGB crop read from ``crops_dir`` (shard and key
    columns), passed through ``transform`` (an albumentations-style callable
    ``transform(image=uint8 HWC) -> {"image": ...}``, or None), scaled to 0-1 and normalised with
    ``mean``/``std`` given in 0-1 units (timm's convention, e.g. ImageNet's
    ``(0.485, 0.456, 0.406)``). ``label`` is a float32 scalar tensor (0 real, 1 fake).

    Each process opens its own :class:`ShardReader` lazily (keyed by ``os.getpid()``), so the
    dataset can go to DataLoader workers. Inside a worker, a transform with ``set_random_seed``
    (an albumentations Compose) is reseeded once from the worker's torch seed, so that workers do
    not all replay the same augmentations; the sequence then follows ``torch.manual_seed``.
    """

    REQUIRED_COLUMNS = ("shard", "key", "label")

    def __init__(
        self,
        table: pd.DataFrame,
        crops_dir: str | Path,
        transform: Callable[..., dict[str, Any]] | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        missing = [c for c in self.REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"crops table lacks column(s) {missing}")
        mean_a = np.asarray(mean, dtype=np.float32).reshape(-1)
        std_a = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean_a.shape != (3,) or std_a.shape != (3,):
            raise ValueError(f"mean and std must have 3 values each, got {list(mean_a)} and {list(std_a)}")
        if not np.all(std_a > 0):
            raise ValueError(f"std must be positive, got {list(std_a)}")
        self.crops_dir = Path(crops_dir)
        self.transform = transform
        self.mean = mean_a
        self.std = std_a
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

    def _reader(self) -> ShardReader:
        pid = os.getpid()
        reader = self._readers.get(pid)
        if reader is None:
            reader = self._readers[pid] = ShardReader(self.crops_dir)
        return reader

    def _reseed_in_worker(self) -> None:
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        self._seeded_pid = pid
        info = get_worker_info()
        if info is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(info.seed) % 2**32)

    def load(self, i: int) -> np.ndarray:
        """The raw RGB uint8 crop of row ``i``."""
        image = decode_png(self._reader().get(self.shards[i], self.keys[i]))
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i %= len(self)
        image = self.load(i)
        if self.transform is not None:
            self._reseed_in_worker()
            image = self.transform(image=image)["image"]
        x = (np.asarray(image, dtype=np.float32) / 255.0 - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return tensor, torch.tensor(self.labels[i], dtype=torch.float32), i

    def close(self) -> None:
        reader = self._readers.pop(os.getpid(), None)
        if reader is not None:
            reader.close()


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
    from dfdc.preprocess import crop_key

    shard_of = dict(zip(table["key"], table["shard"]))
    fakes = table[table["label"] == 1]
    okeys = [crop_key(o, f, t) for o, f, t in zip(fakes["original"], fakes["frame"], fakes["track"])]
    pairs = fakes.assign(orig_key=okeys, orig_shard=[shard_of.get(k) for k in okeys])
    return pairs[pairs["orig_shard"].notna()].reset_index(drop=True)


class AlignedMixupDataset(CropDataset):
    """Seed 001's aligned mixup: item ``i`` mixes fake crop ``i`` with its original's crop.

    ``x = (1 - t) * original + t * fake`` with ``t ~ Beta(alpha, alpha)`` drawn from torch's RNG;
    both crops go through the same augmentation (``transform`` must accept ``image2``, e.g.
    ``train_transforms(..., paired=True)``) and the target is ``t``. Only the manipulation
    differs between the two, so the model has to look at it.
    """

    REQUIRED_COLUMNS = ("shard", "key", "label", "orig_shard", "orig_key")

    def __init__(self, table: pd.DataFrame, crops_dir: str | Path, transform, mean: Sequence[float],
                 std: Sequence[float], alpha: float = 0.5) -> None:
        super().__init__(table, crops_dir, transform, mean, std)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.orig_shards = table["orig_shard"].astype(str).to_numpy()
        self.orig_keys = table["orig_key"].astype(str).to_numpy()
        self.beta = torch.distributions.Beta(alpha, alpha)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = int(i) % len(self)
        fake = self.load(i)
        real = decode_png(self._reader().get(self.orig_shards[i], self.orig_keys[i]))
        if real.ndim == 2:
            real = np.repeat(real[..., None], 3, axis=2)
        if self.transform is not None:
            self._reseed_in_worker()
            out = self.transform(image=fake, image2=real)
            fake, real = out["image"], out["image2"]
        t = float(self.beta.sample())
        mixed = (1 - t) * np.asarray(real, np.float32) + t * np.asarray(fake, np.float32)  # (H, W, 3)
        x = (mixed / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.tensor(t, dtype=torch.float32), i
