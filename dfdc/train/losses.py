"""Training losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def split_bce(logits: Tensor, targets: Tensor, clip: tuple[float, float] = (0.01, 0.99)) -> Tensor:
    """DFDC 1st-place loss: class-balanced BCE with clipped (label-smoothed) targets.

    BCE-with-logits against targets clipped to ``clip`` is averaged separately
    over real (target < 0.5) and fake (target >= 0.5) samples, and the two means
    are averaged, so each class weighs half whatever the batch balance. A batch
    holding one class returns that class's mean.
    """
    if logits.shape != targets.shape or logits.dim() != 1:
        raise ValueError(f"logits and targets must both be (B,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.numel() == 0:
        raise ValueError("split_bce needs a non-empty batch")
    targets = targets.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(*clip), reduction="none")  # (B,)
    fake = targets >= 0.5
    means = [loss[mask].mean() for mask in (~fake, fake) if mask.any()]
    return torch.stack(means).mean()
