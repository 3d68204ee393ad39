"""Training losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def split_bce(logits: Tensor, targets: Tensor, bounds: tuple[float, float] = (0.01, 0.99),
              totals: tuple[int, int] | None = None) -> Tensor:
    """DFDC 1st-place loss: class-balanced BCE with bounded (label-smoothed) targets.

    BCE-with-logits against targets bounded to ``bounds`` is averaged separately
    over real (target < 0.5) and fake (target >= 0.5) samples, and the two means
    are averaged, so each class weighs half whatever the batch balance. A batch
    holding one class returns that class's mean.

    ``totals`` (reals, fakes) are the class counts of a larger batch this one is a part of
    (the micro-batches of an accumulated step on every process): the result is then this
    part's share of that batch's split BCE (its per-class sums over the batch's counts), and
    the shares of all parts add up to the split BCE of the whole batch.
    """
    if logits.shape != targets.shape or logits.dim() != 1:
        raise ValueError(f"logits and targets must both be (B,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.numel() == 0:
        raise ValueError("split_bce needs a non-empty batch")
    targets = targets.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(*bounds), reduction="none")  # (B,)
    fake = targets >= 0.5
    if totals is None:
        means = [loss[mask].mean() for mask in (~fake, fake) if mask.any()]
        return torch.stack(means).mean()
    counts = (int((~fake).sum()), int(fake.sum()))
    if any(c > n for c, n in zip(counts, totals)):
        raise ValueError(f"totals {tuple(totals)} (reals, fakes) count fewer samples than this batch's {counts}")
    present = [(mask, n) for mask, n in zip((~fake, fake), totals) if n > 0]
    return torch.stack([loss[mask].sum() / n for mask, n in present]).sum() / len(present)
