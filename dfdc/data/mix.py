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
    """Seed 001's aligned mixup: each fake mixed with its original's crop at the same place.

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
