"""Training losses."""
from __future__ import annotations

import math

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


def gather_batch(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``z`` and ``y`` of every rank of the default process group, concatenated in rank order (``z`` keeps
    its gradient: each rank's share flows back to that rank); unchanged outside a process group."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return z, y
    from torch.distributed.nn.functional import all_gather

    ys = [torch.empty_like(y) for _ in range(tdist.get_world_size())]
    tdist.all_gather(ys, y.contiguous())
    return torch.cat(all_gather(z.contiguous())), torch.cat(ys)


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang and Isola's uniformity of L2-normalised features ``z (N, D)``: log of the mean of
    ``exp(-t ‖zᵢ - zⱼ‖²)`` over the pairs i < j (0 for fewer than two)."""
    if len(z) < 2:
        return z.sum() * 0
    d2 = _pair_distances(z)
    return torch.logsumexp(-t * d2, dim=0) - math.log(d2.numel())


def alignment(z: Tensor, y: Tensor) -> Tensor:
    """Label-aware alignment: the mean ``‖zᵢ - zⱼ‖²`` over the pairs i < j of the same class (``y >= 0.5``:
    fake) of L2-normalised features ``z`` (0 when no two samples share a class)."""
    fake = y >= 0.5
    d2 = [_pair_distances(z[mask]) for mask in (~fake, fake) if int(mask.sum()) > 1]
    if not d2:
        return z.sum() * 0
    return torch.cat(d2).mean()


def _pair_distances(z: Tensor) -> Tensor:
    """``‖zᵢ - zⱼ‖²`` for i < j, from the Gram matrix (finite gradients where two features coincide)."""
    z = z.float()
    sq = (z * z).sum(dim=1)
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    return (sq[i] + sq[j] - 2 * (z[i] * z[j]).sum(dim=1)).clamp(min=0)
