"""Batch-level mixes: ``(batch, rng) -> batch`` on [0, 1] inputs, after ``.to(device)``.

Randomness comes from the numpy Generator passed in (the training loop's, saved
with every checkpoint), so a resumed run draws what the uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from dfdc.data.batch import Batch


class AlignedMixup:
    """NTech's aligned mixup: each fake mixed with its original's crop at the same place.

    ``x = (1 - t) * original + t * fake`` with ``t ~ Beta(alpha, alpha)`` per item
    and target ``t * y`` (a real item, y = 0, keeps target 0). The two crops had the
    same augmentation, so only the manipulation differs and the model must look at it.
    Needs ``batch.aligned``.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        if batch.aligned is None:
            raise ValueError("aligned mixup needs each fake's original crop in the batch (batch.aligned)")
        n = len(batch)
        t = torch.as_tensor(rng.beta(self.alpha, self.alpha, n), dtype=torch.float32, device=batch.x.device)
        shape = (n,) + (1,) * (batch.x.dim() - 1)
        x = (1 - t.view(shape)) * batch.aligned + t.view(shape) * batch.x
        return replace(batch, x=x, y=t * batch.y, aligned=None)


class CutMix:
    """CutMix (Yun et al. 2019) on frame batches and, as a spatio-temporal cuboid, on clip batches (the Medics).

    With probability ``p`` the batch is mixed: item ``i`` gets a box of item ``perm[i]``
    pasted in, ``perm`` a random permutation of the batch. The kept share is drawn per
    item from ``Beta(alpha, alpha)``; the box has that share's complement as its volume
    (sides scaled by ``(1 - share) ** (1 / d)`` over the ``d`` = 2 axes H, W of a
    ``(B, 3, H, W)`` batch or the 3 axes T, H, W of a ``(B, 3, T, H, W)`` one) around a
    uniform centre, and is clipped to the input. The target becomes
    ``y_i * (1 - s_i) + y_perm[i] * s_i`` with ``s_i`` the exact fraction of pixels (voxels)
    pasted after clipping.

    Other fields: ``aligned``, when present, gets the same box from the same partner,
    so an :class:`AlignedMixup` that follows mixes the pasted region with its own
    original and the target stays right; ``idx`` keeps the receiving item's row.
    """

    def __init__(self, alpha: float = 1.0, p: float = 0.5) -> None:
        if not alpha > 0:
            raise ValueError(f"CutMix alpha must be > 0, got {alpha}")
        if not 0 <= p <= 1:
            raise ValueError(f"CutMix p is a probability in [0, 1], got {p}")
        self.alpha = float(alpha)
        self.p = float(p)

    def _boxes(self, n: int, dims: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` boxes in an input of size ``dims``: start and end index per axis, each (n, len(dims)), clipped."""
        size = np.asarray(dims, dtype=np.int64)
        keep = rng.beta(self.alpha, self.alpha, n)
        side = np.rint((1.0 - keep)[:, None] ** (1.0 / len(dims)) * size).astype(np.int64)
        centre = rng.integers(0, size, (n, len(dims)))
        start = centre - side // 2
        return np.clip(start, 0, size), np.clip(start + side, 0, size)

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        x = batch.x
        if x.dim() not in (4, 5):
            raise ValueError(f"CutMix needs a (B, 3, H, W) or (B, 3, T, H, W) batch, got shape {tuple(x.shape)}")
        if rng.random() >= self.p:
            return batch
        n, dims = x.shape[0], tuple(x.shape[2:])
        lo, hi = self._boxes(n, dims, rng)
        perm = rng.permutation(n)
        mask = torch.ones((n, 1) + dims, dtype=torch.bool, device=x.device)  # (B, 1, [T,] H, W)
        for axis, length in enumerate(dims):
            pos = torch.arange(length, device=x.device)
            inside = (pos >= torch.as_tensor(lo[:, axis, None], device=x.device)) & \
                     (pos < torch.as_tensor(hi[:, axis, None], device=x.device))  # (B, length)
            shape = [n, 1] + [1] * len(dims)
            shape[2 + axis] = length
            mask = mask & inside.view(shape)
        share = np.prod(hi - lo, axis=1) / float(np.prod(dims))
        s = torch.as_tensor(share, dtype=batch.y.dtype, device=batch.y.device)
        order = torch.as_tensor(perm, device=x.device)
        y = (batch.y * (1 - s) + batch.y[order.to(batch.y.device)] * s).clamp(0, 1)
        aligned = None if batch.aligned is None else torch.where(mask, batch.aligned[order], batch.aligned)
        return replace(batch, x=torch.where(mask, x[order], x), y=y, aligned=aligned)
